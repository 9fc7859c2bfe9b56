"""The local Cloud Run: its front door as Cloud Tasks meets it, its sample worker, and the
Cloud Run Admin v2 API through the official client."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from google.api_core import exceptions as gexc
from google.auth import crypt, jwt
from google.cloud import run_v2, tasks_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.protobuf import duration_pb2

from tests.emulator.harness import (
    LOCATION,
    PARENT,
    PROJECT,
    RunningEmulator,
    http_task,
    queue_name,
    start_emulator,
    wait_until,
)

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
STRANGER = f"stranger@{PROJECT}.iam.gserviceaccount.com"
CONFIG = f"""
[[queues]]
name = "q-hold"   # a failed attempt stays the last one for a minute
retry_config = {{ max_attempts = 5, min_backoff_s = 60, max_backoff_s = 60 }}

[[queues]]
name = "q-fast"
retry_config = {{ max_attempts = 10, min_backoff_s = 0.1, max_backoff_s = 0.2 }}

[[services]]
name = "brain"
port = 0
paths = ["/process"]
custom_audiences = ["https://brain.example.com"]
service_account = "brain-runtime@{PROJECT}.iam.gserviceaccount.com"
invokers = ["serviceAccount:{CALLER}"]

[[services]]
name = "slow"
port = 0
paths = ["/work"]
timeout_s = 1
invokers = ["serviceAccount:{CALLER}"]

[[services]]
name = "locked"
port = 0

[[services]]
name = "public"
port = 0
ingress = "internal"
invokers = ["allUsers"]
"""
HOLD, FAST = queue_name("q-hold"), queue_name("q-fast")
UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, INTERNAL, DEADLINE_EXCEEDED = 16, 7, 5, 13, 4


def service_name(service: str) -> str:
    return f"{PARENT}/services/{service}"


def run_client(em: RunningEmulator) -> run_v2.ServicesClient:
    channel = grpc.insecure_channel(em.target)
    return run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))


@dataclass
class Env:
    em: RunningEmulator
    tasks: tasks_v2.CloudTasksClient
    run: run_v2.ServicesClient
    url: dict[str, str]

    def task(self, queue: str, url: str, payload: object = None, *, audience: str | None = None,
             caller: str = CALLER, token: bool = True, **fields: object) -> str:
        """Create a task; its name."""
        name = f"{queue}/tasks/t-{uuid.uuid4().hex}"
        oidc = {"service_account_email": caller, "audience": audience} if token else None
        body = json.dumps(payload if payload is not None else {"job": 1}).encode()
        self.tasks.create_task(parent=queue, task=http_task(url, body, name=name, oidc=oidc,
                                                            **fields))
        return name

    def last_attempt(self, task: str) -> tasks_v2.Attempt:
        got = wait_until(lambda: (t := self.tasks.get_task(name=task)).response_count and t,
                         what=f"an answer to {task}")
        return got.last_attempt

    def arrived(self, service: str, task: str, n: int = 1, done: bool = True,
                timeout: float = 10) -> list[dict]:
        """The requests of ``task`` that reached ``service`` (the worker answered them)."""
        short = task.rsplit("/", 1)[1]

        def seen() -> list[dict] | None:
            got = [r for r in requests.get(f"{self.url[service]}/_requests", timeout=5).json()
                   if header(r, "X-CloudTasks-TaskName") == short]
            ready = len(got) >= n and (not done or all(r["status"] for r in got))
            return got if ready else None

        return wait_until(seen, timeout=timeout, interval=0.05,
                          what=f"{n} request(s) of {short} at {service}")


def header(record: dict, name: str) -> str | None:
    return next((v for k, v in record["headers"] if k.lower() == name.lower()), None)


def gone(client: tasks_v2.CloudTasksClient, task: str) -> bool:
    try:
        client.get_task(name=task)
    except gexc.NotFound:
        return True
    return False


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("cloud-run")
    em = start_emulator(tmp, CONFIG, db=str(tmp / "state.db"))
    try:
        run = run_client(em)
        url = {s: run.get_service(name=service_name(s)).uri
               for s in ("brain", "slow", "locked", "public")}
        yield Env(em, em.client(), run, url)
    finally:
        assert em.stop() == 0, "".join(em.stderr)
        assert "Traceback" not in "".join(em.stderr), "".join(em.stderr)


# -- the front door, as the queue's last attempt shows it ---------------------------------

def test_right_token_200_and_the_request_in_requests(env):
    task = env.task(HOLD, env.url["brain"] + "/process", {"doc": "abc"},
                    audience=env.url["brain"])
    (got,) = env.arrived("brain", task)
    assert got["status"] == 200 and got["method"] == "POST" and got["path"] == "/process"
    assert got["body"] == {"doc": "abc"}
    assert header(got, "Authorization").startswith("Bearer ")
    claims = got["claims"]
    assert claims["email"] == CALLER and claims["aud"] == env.url["brain"]
    assert claims["iss"] == "https://accounts.google.com" and claims["exp"] > time.time()
    wait_until(lambda: gone(env.tasks, task), what="the task done after its 200")


def test_wrong_audience_is_401(env):
    # A token minted for another service (its URL) does not open this one.
    task = env.task(HOLD, env.url["brain"] + "/process", audience=env.url["slow"])
    last = env.last_attempt(task)
    assert last.response_status.code == UNAUTHENTICATED
    assert last.response_status.message == "UNAUTHENTICATED(16): HTTP status code 401"
    rows = requests.get(env.url["brain"] + "/_requests", timeout=5).json()
    assert not any(header(r, "X-CloudTasks-TaskName") == task.rsplit("/", 1)[1] for r in rows)


def test_no_token_is_401(env):
    task = env.task(HOLD, env.url["brain"] + "/process", token=False)
    assert env.last_attempt(task).response_status.code == UNAUTHENTICATED


def test_caller_without_invoker_is_403(env):
    task = env.task(HOLD, env.url["locked"] + "/", audience=env.url["locked"])
    last = env.last_attempt(task)
    assert last.response_status.code == PERMISSION_DENIED
    assert last.response_status.message == "PERMISSION_DENIED(7): HTTP status code 403"


def test_slower_than_the_timeout_is_504(env):
    task = env.task(HOLD, env.url["slow"] + "/work", {"_simulate": {"delay_s": 2}},
                    audience=env.url["slow"], dispatch_deadline=duration_pb2.Duration(seconds=15))
    last = env.last_attempt(task)
    assert last.response_status.code == DEADLINE_EXCEEDED
    assert last.response_status.message == "DEADLINE_EXCEEDED(4): HTTP status code 504"
    (got,) = env.arrived("slow", task)
    assert got["status"] == 504
    # Cut off at the service's 1 s, not at the worker's 2 s.
    elapsed = last.response_time - last.dispatch_time
    assert 0.9 <= elapsed.total_seconds() < 1.9


def test_wrong_path_is_404(env):
    task = env.task(HOLD, env.url["brain"] + "/proces", audience=env.url["brain"])
    last = env.last_attempt(task)
    assert last.response_status.code == NOT_FOUND
    (got,) = env.arrived("brain", task)
    assert got["status"] == 404 and got["path"] == "/proces"


def test_fail_first_answers_500_then_200_on_retry(env):
    task = env.task(FAST, env.url["brain"] + "/process", {"_simulate": {"fail_first": 1}},
                    audience=env.url["brain"])
    first, second = env.arrived("brain", task, n=2)
    assert [first["status"], second["status"]] == [500, 200]
    assert [header(first, "X-CloudTasks-TaskRetryCount"),
            header(second, "X-CloudTasks-TaskRetryCount")] == ["0", "1"]
    wait_until(lambda: gone(env.tasks, task), what="the task done after its retry")


def test_all_users_needs_no_token_and_internal_ingress_refuses_direct_calls(env):
    task = env.task(HOLD, env.url["public"] + "/", token=False)
    (got,) = env.arrived("public", task)
    assert got["status"] == 200 and got["claims"] is None
    # Not from Cloud Tasks: outside the project, so not let in (Google's 404 page).
    direct = requests.post(env.url["public"] + "/", json={"job": 1}, timeout=5)
    assert direct.status_code == 404
    assert "<title>404 Page not found</title>" in direct.text


# -- the front door, called directly --------------------------------------------------------

def _emulator_signer(env: Env) -> crypt.RSASigner:
    (kid,) = requests.get(env.em.http_url + "/oauth2/v1/certs", timeout=5).json()
    with sqlite3.connect(env.em.db) as db:
        (key,) = db.execute("SELECT value FROM meta WHERE key = 'oidc_key'").fetchone()
    return crypt.RSASigner.from_string(key, key_id=kid)


def _token(signer: crypt.Signer, aud: str, email: str = CALLER, age_s: float = 0) -> str:
    iat = int(time.time() - age_s)
    return jwt.encode(signer, {"iss": "https://accounts.google.com", "aud": aud, "sub": "1",
                               "email": email, "iat": iat, "exp": iat + 3600}).decode()


def test_tokens_and_audiences_at_the_door(env):
    base = env.url["brain"]
    signer = _emulator_signer(env)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign = crypt.RSASigner.from_string(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), key_id="other")

    def call(token: str) -> requests.Response:
        return requests.post(base + "/process", json={"job": 1}, timeout=5,
                             headers={"Authorization": f"Bearer {token}"})

    for aud in (base, base + "/", base + "/process", "https://brain.example.com"):
        assert call(_token(signer, aud)).status_code == 200, aud
    for aud in (base + "/process?x=1", "https://brain.example.com/", env.url["public"]):
        assert call(_token(signer, aud)).status_code == 401, aud
    expired = call(_token(signer, base, age_s=7200))
    assert expired.status_code == 401
    assert "<h1>Error: Unauthorized</h1>" in expired.text
    assert "invalid_token" in expired.headers["WWW-Authenticate"]
    assert call(_token(foreign, base)).status_code == 401
    refused = call(_token(signer, base, email=STRANGER))
    assert refused.status_code == 403
    assert "<code>/process</code> from this server" in refused.text
    assert "run.routes.invoke" in refused.headers["X-Emulator-Reason"]


# -- the Admin API --------------------------------------------------------------------------

def test_get_service_as_cloud_run_describes_it(env):
    svc = env.run.get_service(name=service_name("brain"))
    assert svc.uri == env.url["brain"] and list(svc.urls) == [svc.uri]
    assert svc.uri.startswith("http://127.0.0.1:")
    assert len(svc.uid) == 36 and svc.generation == 1
    assert list(svc.custom_audiences) == ["https://brain.example.com"]
    assert svc.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    assert svc.template.timeout.total_seconds() == 300
    assert svc.template.service_account == f"brain-runtime@{PROJECT}.iam.gserviceaccount.com"
    assert svc.create_time <= svc.update_time
    assert svc.terminal_condition.type_ == "Ready"
    assert svc.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    slow = env.run.get_service(name=service_name("slow"))
    assert slow.template.timeout.total_seconds() == 1
    public = env.run.get_service(name=service_name("public"))
    assert public.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY


def test_list_services_in_pages(env):
    pager = env.run.list_services(request={"parent": PARENT, "page_size": 3})
    pages = [[s.name.rsplit("/", 1)[1] for s in page.services] for page in pager.pages]
    assert pages == [["brain", "locked", "public"], ["slow"]]
    elsewhere = env.run.list_services(parent=f"projects/{PROJECT}/locations/europe-west1")
    assert list(elsewhere) == []


def test_unknown_service_not_found(env):
    with pytest.raises(gexc.NotFound) as e:
        env.run.get_service(name=service_name("nope"))
    assert e.value.message == (f"Resource 'nope' of kind 'SERVICE' in region '{LOCATION}' "
                               f"in project '{PROJECT}' does not exist.")
    with pytest.raises(gexc.NotFound):
        env.run.get_iam_policy(request={"resource": service_name("nope")})


def test_set_iam_policy_lets_a_refused_caller_in_on_its_next_attempt(env):
    locked = service_name("locked")
    task = env.task(HOLD, env.url["locked"] + "/", audience=env.url["locked"])
    assert env.last_attempt(task).response_status.code == PERMISSION_DENIED
    policy = env.run.get_iam_policy(request={"resource": locked})
    assert list(policy.bindings) == []
    policy.bindings.add(role="roles/run.invoker", members=[f"serviceAccount:{CALLER}"])
    env.run.set_iam_policy(request={"resource": locked, "policy": policy})
    env.tasks.run_task(name=task)  # the next attempt, now
    (got,) = env.arrived("locked", task)
    assert got["status"] == 200 and header(got, "X-CloudTasks-TaskRetryCount") == "1"
    brain = env.run.get_iam_policy(request={"resource": service_name("brain")})
    assert [(b.role, list(b.members)) for b in brain.bindings] == [
        ("roles/run.invoker", [f"serviceAccount:{CALLER}"])]


def test_test_iam_permissions_without_enforcement_grants_what_is_valid(env):
    asked = ["run.services.get", "run.routes.invoke", "run.services.setIamPolicy"]
    got = env.run.test_iam_permissions(
        request={"resource": service_name("brain"), "permissions": asked})
    assert list(got.permissions) == asked
    with pytest.raises(gexc.InvalidArgument):
        env.run.test_iam_permissions(
            request={"resource": service_name("brain"), "permissions": ["cloudtasks.tasks.get"]})


VIEWER = f"serviceAccount:viewer@{PROJECT}.iam.gserviceaccount.com"
ENFORCED = f"""
[iam]
enforce = true
principal = "{VIEWER}"
bindings = [{{ role = "roles/run.viewer", members = ["{VIEWER}"] }}]

[[services]]
name = "svc"
port = 0
"""


def test_enforced_iam_answers_what_the_caller_holds(tmp_path):
    em = start_emulator(tmp_path, ENFORCED)
    try:
        run = run_client(em)
        name = service_name("svc")
        got = run.test_iam_permissions(request={"resource": name, "permissions": [
            "run.services.get", "run.services.setIamPolicy", "run.routes.invoke"]})
        assert list(got.permissions) == ["run.services.get"]
        assert run.get_service(name=name).name == name
        with pytest.raises(gexc.PermissionDenied) as e:
            run.set_iam_policy(request={"resource": name, "policy": {}})
        assert "run.services.setIamPolicy" in e.value.message
    finally:
        assert em.stop() == 0, "".join(em.stderr)
