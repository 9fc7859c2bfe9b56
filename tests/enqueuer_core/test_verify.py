"""verify_request on real tokens: minted by the emulator for real Cloud Tasks dispatches,
or signed with a key of our own whose certificate a real HTTP endpoint serves."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from google.auth.exceptions import TransportError
from google.protobuf import duration_pb2
from starlette.datastructures import Headers

from enqueuer_core.errors import EnqueuerError
from enqueuer_core.verify import (
    CLOCK_SKEW_S,
    CallerNotAllowed,
    CertsCachingRequest,
    CertsUnavailable,
    RequestNotVerified,
    verify_request,
)
from tests.emulator.harness import fast_retry, http_task, wait_until

CALLER = "caller@test-project.iam.gserviceaccount.com"
OTHER = "intruder@test-project.iam.gserviceaccount.com"

# The worker of the README's "Verifying Cloud Tasks' requests in a worker", read from the
# README itself so that the two cannot drift apart.
README_WORKER = (Path(__file__).resolve().parents[2] / "README.md").read_text().split(
    "## Verifying Cloud Tasks' requests in a worker", 1)[1].split("```python\n", 1)[1].split(
    "```", 1)[0]


@pytest.fixture
def certs(emulator) -> str:
    return f"{emulator.http_url}/oauth2/v1/certs"


def dispatched_headers(client, queue: str, receiver, path: str, email: str = CALLER,
                       audience: str | None = None) -> list[tuple[str, str]]:
    """The headers Cloud Tasks (the emulator) sent to the receiver for an OIDC task."""
    client.create_task(parent=queue, task=http_task(receiver.url + path, oidc={
        "service_account_email": email, "audience": audience or receiver.url}))
    (got,) = receiver.at(path)
    return got.headers


def bearer(headers: list[tuple[str, str]]) -> str:
    return next(v for k, v in headers if k.lower() == "authorization").split(" ", 1)[1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---- tokens from the emulator ------------------------------------------------------------


def test_a_dispatched_request_verifies(client, make_queue, receiver, certs):
    headers = dispatched_headers(client, make_queue(), receiver, "/ok")
    claims = verify_request(headers, receiver.url, [CALLER], certs_url=certs)
    assert claims["email"] == CALLER and claims["email_verified"] is True
    assert claims["aud"] == receiver.url and claims["iss"] == "https://accounts.google.com"
    token = bearer(headers)
    # Whatever shape the headers come in, the name in any case.
    for shaped in (
        {"AUTHORIZATION": f"Bearer {token}"},
        Headers({"authorization": f"Bearer {token}"}),
        [(b"Authorization", f"bearer {token}".encode())],
    ):
        assert verify_request(shaped, receiver.url, CALLER, certs_url=certs) == claims
    # Several accepted audiences and callers.
    assert verify_request(headers, ["https://new.example", receiver.url], {OTHER, CALLER},
                          certs_url=certs)["sub"] == claims["sub"]


def test_wrong_audience_names_both(client, make_queue, receiver, certs):
    headers = dispatched_headers(client, make_queue(), receiver, "/aud")
    expected = "https://brain-xyz.a.run.app"
    with pytest.raises(RequestNotVerified) as info:
        verify_request(headers, expected, [CALLER], certs_url=certs)
    err = info.value
    assert f"audience is '{receiver.url}'" in err.message
    assert f"expects {expected}" in err.message and f"to {expected} on the enqueuer" in err.message
    assert (err.http_status, err.code) == (401, "request_not_verified")
    assert isinstance(err, EnqueuerError)


def test_another_caller_is_refused_by_name(client, make_queue, receiver, certs):
    headers = dispatched_headers(client, make_queue(), receiver, "/other", email=OTHER)
    with pytest.raises(CallerNotAllowed) as info:
        verify_request(headers, receiver.url, [CALLER], certs_url=certs)
    assert f"The token is for {OTHER}" in info.value.message
    assert CALLER in info.value.message and "CALLER_SA" in info.value.message
    assert info.value.http_status == 403


def test_requests_without_a_good_token_are_refused(client, make_queue, receiver, certs):
    token = bearer(dispatched_headers(client, make_queue(), receiver, "/t"))
    head, payload, sig = token.split(".")
    i = len(sig) // 2
    flipped = f"{head}.{payload}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = f"{head}.{_b64(json.dumps({**claims, 'email': OTHER}).encode())}.{sig}"
    cases = {
        "no header": ([("Content-Type", "application/json")], "no Authorization header"),
        "basic": ({"Authorization": "Basic x"}, "'Basic', not 'Bearer <ID token>'"),
        "empty bearer": ({"Authorization": "Bearer "}, "not 'Bearer <ID token>'"),
        "garbage": ({"Authorization": "Bearer garbage"}, "not a valid Google ID token"),
        "three garbage parts": ({"Authorization": "Bearer a.b.c"}, "not a valid Google ID"),
        "flipped signature byte": ({"Authorization": f"Bearer {flipped}"},
                                   "signature does not verify"),
        "edited claims": ({"Authorization": f"Bearer {forged}"}, "signature does not verify"),
        "two tokens": ([("Authorization", f"Bearer {token}"), ("authorization", "Bearer x")],
                       "2 different Authorization headers"),
    }
    for what, (headers, says) in cases.items():
        with pytest.raises(RequestNotVerified) as info:
            verify_request(headers, receiver.url, [CALLER], certs_url=certs)
        assert says in info.value.message, what
        assert "garbage" not in info.value.message, "the token is never echoed back"


def test_nobody_allowed_is_a_programming_error(certs):
    headers = {"Authorization": "Bearer x"}
    with pytest.raises(ValueError, match="should not call verify_request"):
        verify_request(headers, "https://w.example", [], certs_url=certs)
    with pytest.raises(ValueError, match="allowed_callers"):
        verify_request(headers, "https://w.example", "", certs_url=certs)
    with pytest.raises(ValueError, match="audience"):
        verify_request(headers, [], [CALLER], certs_url=certs)


def test_certificates_out_of_reach(emulator):
    headers = {"Authorization": "Bearer a.b.c"}
    for url in (f"{emulator.http_url}/no/certs/here", f"http://127.0.0.1:{_free_port()}/c"):
        with pytest.raises(CertsUnavailable) as info:
            verify_request(headers, "https://w.example", [CALLER], certs_url=url)
        assert url in info.value.message and info.value.http_status == 503


# ---- tokens signed with our own key, its certificate on a real HTTP endpoint ---------------


class Issuer:
    """An RSA key whose certificate a local HTTP server publishes, Google-style."""

    def __init__(self) -> None:
        self.fetches = 0
        self.certs: dict[str, str] = {}
        self.signer = self.rotate()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.certs).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=600, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"
        # A short poll interval: shutdown() waits for the loop to look.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def rotate(self) -> crypt.RSASigner:
        """A new key, published instead of the old one (as Google rotates its keys)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-issuer")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
        kid = cert.fingerprint(hashes.SHA1()).hex()
        self.certs = {kid: cert.public_bytes(serialization.Encoding.PEM).decode()}
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self.signer = crypt.RSASigner.from_string(pem, key_id=kid)
        return self.signer

    def headers(self, **overrides: Any) -> dict[str, str]:
        now = int(time.time())
        claims = {"iss": "https://accounts.google.com", "aud": "https://w.example",
                  "email": CALLER, "email_verified": True, "sub": "1234", "azp": "1234",
                  "iat": now, "exp": now + 3600, **overrides}
        claims = {k: v for k, v in claims.items() if v is not None}
        return {"Authorization": f"Bearer {jwt.encode(self.signer, claims).decode()}"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    i = Issuer()
    yield i
    i.close()


def check(issuer: Issuer, **claims: Any) -> dict[str, Any]:
    return verify_request(issuer.headers(**claims), "https://w.example", [CALLER],
                          certs_url=issuer.url)


def test_expired_and_future_tokens(issuer):
    now = int(time.time())
    with pytest.raises(RequestNotVerified, match=r"expired at .*replayed or this worker's clock"):
        check(issuer, iat=now - 7200, exp=now - 3600)
    with pytest.raises(RequestNotVerified, match="issued in the future"):
        check(issuer, iat=now + 600, exp=now + 4200)
    assert check(issuer, iat=now + 5)["email"] == CALLER  # within the clock skew


def test_issuer_must_be_google(issuer):
    assert check(issuer, iss="accounts.google.com")["email"] == CALLER
    with pytest.raises(RequestNotVerified, match=r"issued by 'https://evil\.example', not by"):
        check(issuer, iss="https://evil.example")


def test_unverified_or_missing_email_is_refused(issuer):
    with pytest.raises(CallerNotAllowed, match=r"not verified \(email_verified is False"):
        check(issuer, email_verified=False)
    with pytest.raises(CallerNotAllowed, match=r"not verified \(email_verified is None"):
        check(issuer, email_verified=None)
    with pytest.raises(CallerNotAllowed, match="no email claim"):
        check(issuer, email=None)


def test_a_key_google_does_not_publish(issuer, certs):
    with pytest.raises(RequestNotVerified, match=r"signed with a key .* does not publish"):
        verify_request(issuer.headers(), "https://w.example", [CALLER], certs_url=certs)


def test_certificates_are_cached_and_refetched_after_rotation(issuer):
    for _ in range(3):
        check(issuer)
    assert issuer.fetches == 1
    issuer.rotate()
    assert check(issuer)["email"] == CALLER  # a new key id: fetched again, once
    assert issuer.fetches == 2
    # A key that is still unknown after the refetch does not make every request fetch.
    stranger = Issuer()
    try:
        for _ in range(3):
            with pytest.raises(RequestNotVerified, match="does not publish"):
                verify_request(stranger.headers(), "https://w.example", [CALLER],
                               certs_url=issuer.url)
    finally:
        stranger.close()
    assert issuer.fetches == 2  # the last refetch was less than 30 s ago


def test_a_verified_token_is_remembered_until_it_expires(issuer):
    now = int(time.time())
    headers = issuer.headers(iat=now - 3600, exp=now - CLOCK_SKEW_S + 2)  # 2 s left
    assert check_headers(issuer, headers)["email"] == CALLER
    issuer.rotate()  # its key is gone: only the memory of the first check can accept it now
    fetches = issuer.fetches
    assert check_headers(issuer, headers)["email"] == CALLER
    assert issuer.fetches == fetches

    def refused() -> bool:
        try:
            check_headers(issuer, headers)
        except RequestNotVerified as e:
            assert "expired at" in e.message
            return True
        return False

    wait_until(refused, timeout=10, what="the remembered token expired")


def check_headers(issuer: Issuer, headers: dict[str, str]) -> dict[str, Any]:
    return verify_request(headers, "https://w.example", [CALLER], certs_url=issuer.url)


# ---- the certificates cache on its own: concurrent misses --------------------------------

CERTS_URL = "https://certs.example/oauth2/v1/certs"
CERTS = b'{"key-1": "-----BEGIN CERTIFICATE-----..."}'


class CertsEndpoint:
    """The certificates endpoint as google-auth's transport reaches it: a callable that counts
    its fetches and holds each one until ``callers`` fetches are under way, or half a second.
    A cache that lets every miss through is released at once with ``callers`` fetches; one
    that makes concurrent misses wait for one fetch keeps them waiting that half second."""

    def __init__(self, callers: int, *, fail: bool = False) -> None:
        self.calls = 0
        self._callers, self._fail = callers, fail
        self._lock = threading.Lock()
        self._all_fetching = threading.Event()

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> SimpleNamespace:
        with self._lock:
            self.calls += 1
            if self.calls == self._callers:
                self._all_fetching.set()
        self._all_fetching.wait(0.5)
        if self._fail:
            raise TransportError(f"{url}: connection refused")
        return SimpleNamespace(status=200, headers={"Cache-Control": "max-age=60"}, data=CERTS)


def at_once(threads: int, call: Callable[[], Any]) -> list[Future[Any]]:
    """``call`` from ``threads`` threads released together; their outcomes."""
    start = threading.Barrier(threads)

    def one() -> Any:
        start.wait(5)
        return call()

    with ThreadPoolExecutor(threads) as pool:
        return [pool.submit(one) for _ in range(threads)]


def test_concurrent_misses_of_a_url_share_one_fetch():
    endpoint = CertsEndpoint(callers=8)
    cache = CertsCachingRequest(endpoint)
    answers = [f.result() for f in at_once(8, lambda: cache(CERTS_URL))]
    assert endpoint.calls == 1
    assert [a.data for a in answers] == [CERTS] * 8
    assert cache(CERTS_URL).data == CERTS  # and then it is cached
    assert endpoint.calls == 1


def test_a_failed_fetch_fails_its_waiters_and_the_next_miss_fetches_again():
    endpoint = CertsEndpoint(callers=8, fail=True)
    cache = CertsCachingRequest(endpoint)
    for outcome in at_once(8, lambda: cache(CERTS_URL)):
        with pytest.raises(TransportError, match="connection refused"):
            outcome.result()
    assert endpoint.calls == 1
    with pytest.raises(TransportError):  # nothing was cached: a later request retries
        cache(CERTS_URL)
    assert endpoint.calls == 2


# ---- the README's worker, served for real --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: Any, sock: socket.socket) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn started")
        assert server.started, "uvicorn did not start"
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_readme_worker_accepts_cloud_tasks_and_refuses_others(
        client, make_queue, certs, monkeypatch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("WORKER_AUDIENCE", url)
    monkeypatch.setenv("ALLOWED_CALLERS", CALLER)
    monkeypatch.setenv("OIDC_CERTS_URL", certs)
    namespace: dict[str, Any] = {}
    exec(compile(README_WORKER, "README.md", "exec"), namespace)
    # One attempt each: the next retry is a minute away.
    minute = duration_pb2.Duration(seconds=60)
    q = make_queue(retry_config=fast_retry(min_backoff=minute, max_backoff=minute))
    with serving(namespace["app"], sock):
        def task(email: str, audience: str) -> str:
            return client.create_task(parent=q, task=http_task(url + "/process", oidc={
                "service_account_email": email, "audience": audience})).name

        good = task(CALLER, url)
        wrong_audience = task(CALLER, "https://elsewhere.example")
        stranger = task(OTHER, url)

        def attempted() -> dict[str, Any] | None:
            left = {t.name: t for t in client.list_tasks(parent=q)}
            if good in left or any(not left[n].last_attempt.response_time
                                   for n in (wrong_audience, stranger)):
                return None
            return left

        left = wait_until(attempted, timeout=15, what="every task attempted once")
        assert set(left) == {wrong_audience, stranger}  # the good one ran and is gone
        assert left[wrong_audience].last_attempt.response_status.code == 16  # UNAUTHENTICATED
        assert "401" in left[wrong_audience].last_attempt.response_status.message
        assert left[stranger].last_attempt.response_status.code == 7  # PERMISSION_DENIED
        assert "403" in left[stranger].last_attempt.response_status.message
        for name in left:
            client.delete_task(name=name)
        # What a caller without a token reads.
        answer = requests.post(url + "/process", json={"job": 1}, timeout=5)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "request_not_verified"
        assert "no Authorization header" in answer.json()["error"]["message"]
