"""The everyday ``POST /enqueue`` skips FastAPI's machinery (``api/fast_path.py``): it must be
answered exactly as the app answers it, and every other request must still reach the app, its
body intact. A real uvicorn server, the real emulator, real tokens from its issuer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.body import Guard
from api.fast_path import EnqueueFastPath
from enqueuer_core.access.callers import Callers
from enqueuer_core.enqueue import Enqueuer
from tests.emulator.harness import RunningEmulator
from tests.serving import serving
from tests.test_api_auth import OPERATOR, VIEWER, audit_lines, door
from tests.test_app import BRAIN_PAYLOAD, make_queues, settings_for
from tests.tokens import id_token

JSON = {"Content-Type": "application/json"}
# What FastAPI reads as JSON too, but the fast path leaves to it: the same request, the long way.
JSON_LONG_WAY = {"Content-Type": "application/json; charset=utf-8"}


class App:
    """Stands where the app is: keeps what reaches it and answers 299."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.got.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def fast(emulator: RunningEmulator) -> Iterator[tuple[str, App, dict[str, str]]]:
    """The fast path alone, in front of ``App``; its base URL, the app, an operator's token."""
    settings = settings_for(emulator, "http://127.0.0.1:9",
                            make_queues(emulator, f"fast-{uuid.uuid4().hex[:8]}", paused=True))
    app = App()
    assert settings.api_audience
    token = {"Authorization": "Bearer " + id_token(emulator.http_url, OPERATOR,
                                                    settings.api_audience)}
    callers, enqueuer = Callers(settings), Enqueuer(settings)
    # The certificates are fetched on a first request the long way (the route fetches them).
    callers.member(token)
    with serving(Guard(EnqueueFastPath(app, callers, enqueuer))) as url:  # type: ignore[arg-type]
        yield url, app, token


def job(**fields: object) -> bytes:
    return json.dumps({"service": "testimonios", "payload": {"n": 1},
                       "idempotency_key": f"fast-{uuid.uuid4().hex[:8]}", **fields}).encode()


def test_the_everyday_request_is_answered_without_the_app(fast, capsys):
    url, app, token = fast
    app.got.clear()
    r = httpx.post(url + "/enqueue", content=job(), headers=token | JSON, timeout=20)
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["ok", "task", "service", "queue", "deadline_s", "idempotency_key"]
    assert app.got == []
    (line,) = audit_lines(capsys.readouterr().out)
    assert line["audit"]["outcome"] == "ok" and line["audit"]["task"] == r.json()["task"]
    # The library's refusals are answered here too, as the app renders them.
    r = httpx.post(url + "/enqueue", content=job(service="brian"), headers=token | JSON,
                   timeout=20)
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_service"
    assert app.got == []


@pytest.mark.parametrize(("method", "path", "headers", "body"), [
    ("POST", "/enqueue", JSON, job()),  # no token
    ("POST", "/enqueue", {"Authorization": "Bearer not-a-token"} | JSON, job()),
    ("POST", "/enqueue", "token", job()),  # no Content-Type
    ("POST", "/enqueue", "token" + "long", job()),
    ("POST", "/enqueue", "token" + "text", job()),
    ("POST", "/enqueue", "token" + "json", b'{"service": "testimonios", "payload": '),
    ("POST", "/enqueue", "token" + "json", b'["testimonios", {}]'),
    ("POST", "/enqueue", "token" + "json", job(priority=1)),
    ("POST", "/enqueue", "token" + "json", job(schedule_in_s=-1)),
    ("POST", "/enqueue", "token" + "json", b'{"service": "testimonios"}'),
    ("POST", "/enqueue", "token" + "json", b'{"service": "testimonios", "payload": {"x": NaN}}'),
    ("POST", "/enqueue/", "token" + "json", job()),
    ("PUT", "/enqueue", "token" + "json", job()),
    ("POST", "/workers", "token" + "json", job()),
], ids=["no token", "bad token", "no content type", "charset", "text", "not JSON", "array",
        "unknown field", "negative schedule", "no payload", "NaN", "trailing slash", "PUT",
        "another path"])
def test_anything_else_reaches_the_app_as_it_came(fast, method, path, headers, body):
    url, app, token = fast
    if isinstance(headers, str):  # the operator's token, and which Content-Type
        kind = headers.removeprefix("token")
        headers = token | {"json": JSON, "long": JSON_LONG_WAY,
                           "text": {"Content-Type": "text/plain"}}.get(kind, {})
    app.got.clear()
    r = httpx.request(method, url + path, content=body, headers=headers, timeout=20)
    assert r.status_code == 299
    assert app.got == [(method, path, body)]


def _answer(r: httpx.Response) -> tuple[int, str | None, str | None, Any]:
    return (r.status_code, r.headers.get("content-type"), r.headers.get("www-authenticate"),
            r.json())


def _same_line(line: dict) -> dict:
    """An audit line without what differs between two requests (time, request id)."""
    audit = {k: v for k, v in line["audit"].items() if k != "request_id"}
    return {k: v for k, v in line.items() if k != "time"} | {"audit": audit}


def test_the_fast_path_answers_and_records_as_the_app_does(emulator, capsys):
    with door(emulator, "http://127.0.0.1:9", paused=True) as d:
        operator, viewer = d.auth(OPERATOR), d.auth(VIEWER)
        key = f"twice-{uuid.uuid4().hex[:8]}"
        body = {"service": "testimonios", "payload": {"n": 1}, "idempotency_key": key}
        assert httpx.post(d.url + "/enqueue", json=body, headers=operator,
                          timeout=20).status_code == 200
        capsys.readouterr()
        cases = [
            (body, operator),  # a duplicate: the same key
            (body | {"service": "brian"}, operator),
            ({"service": "brain", "payload": {"input_doc_id": "x"}}, operator),
            ({"service": "testimonios", "payload": {"blob": "x" * 1_100_000}}, operator),
            (body, viewer),
        ]
        for request, token in cases:
            sent = json.dumps(request).encode()
            quick = httpx.post(d.url + "/enqueue", content=sent, headers=token | JSON,
                               timeout=20)
            quick_lines = audit_lines(capsys.readouterr().out)
            slow = httpx.post(d.url + "/enqueue", content=sent, headers=token | JSON_LONG_WAY,
                              timeout=20)
            slow_lines = audit_lines(capsys.readouterr().out)
            assert quick.status_code >= 400, quick.text
            assert _answer(quick) == _answer(slow)
            assert len(quick_lines) == len(slow_lines) == 1
            assert _same_line(quick_lines[0]) == _same_line(slow_lines[0])
        # A new job each way: the same answer but for its key and task.
        answers = []
        for headers in (JSON, JSON_LONG_WAY):
            r = httpx.post(d.url + "/enqueue", json={"service": "brain", "payload": BRAIN_PAYLOAD},
                           headers=operator | headers, timeout=20)
            assert r.status_code == 200, r.text
            answers.append({k: v for k, v in r.json().items()
                            if k not in ("task", "idempotency_key")})
        assert answers[0] == answers[1]
