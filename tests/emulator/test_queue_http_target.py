"""Queue-level routing (a queue's ``http_target``) as Cloud Tasks applies it, through the
official client and seen at a real receiver: URI overrides by enforce mode, method and
header overrides, the queue's OIDC token, tasks already waiting, and the refusals."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.transport.requests import Request
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import field_mask_pb2

from emulator.http_target import override_url
from tests.emulator.harness import PARENT, PROJECT, http_task, start_emulator, wait_until

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
OTHER = f"other@{PROJECT}.iam.gserviceaccount.com"
U = tasks_v2.UriOverride
ALWAYS, IF_NOT_EXISTS = U.UriOverrideEnforceMode.ALWAYS, U.UriOverrideEnforceMode.IF_NOT_EXISTS
NOBODY = "http://127.0.0.1:1"  # nothing listens there: only an override reaches the receiver


def route(receiver, **uri: object) -> tasks_v2.HttpTarget:
    """An http_target sending tasks to ``receiver``'s port (and whatever else is given)."""
    uri.setdefault("host", "127.0.0.1")
    uri.setdefault("port", receiver.port)
    return tasks_v2.HttpTarget(uri_override=U(**uri))


def test_always_replaces_scheme_host_port_path_and_query(client, make_queue, receiver):
    q = make_queue(http_target=route(
        receiver, scheme=U.Scheme.HTTP, path_override={"path": "/routed"},
        query_override={"query_params": "from=queue"}, uri_override_enforce_mode=ALWAYS))
    client.create_task(parent=q, task=http_task("https://localhost:1/task/path?from=task"))
    (r,) = receiver.at("/routed?from=queue")
    assert r.method == "POST" and r.body == b'{"job": 1}'


def test_unspecified_mode_is_always_and_empty_path_and_query_clear_them(
    client, make_queue, receiver
):
    q = make_queue(http_target=route(receiver, path_override={"path": ""},
                                     query_override={"query_params": ""}))
    client.create_task(parent=q, task=http_task(f"{NOBODY}/task/path?x=1"))
    (r,) = receiver.at("/")
    assert r.header("Host") == f"127.0.0.1:{receiver.port}"


def test_if_not_exists_fills_in_only_what_the_task_url_lacks(client, make_queue, receiver):
    q = make_queue(http_target=route(
        receiver, host="overridden.invalid", scheme=U.Scheme.HTTPS,
        path_override={"path": "/default"}, query_override={"query_params": "from=queue"},
        uri_override_enforce_mode=IF_NOT_EXISTS))
    # No port, path or query: the queue's are used; its scheme and host are not (a URL
    # always has its own).
    client.create_task(parent=q, task=http_task("http://127.0.0.1"))
    receiver.at("/default?from=queue")
    # A URL with all of them is sent as it is (the queue's port would be the same here).
    client.create_task(parent=q, task=http_task(f"{receiver.url}/own?from=task"))
    receiver.at("/own?from=task")
    assert {r.path for r in receiver.requests} == {"/default?from=queue", "/own?from=task"}


@pytest.mark.parametrize(("url", "uri", "want"), [
    ("https://h.example:8443/p?q=1", {"port": 0}, "https://h.example/p?q=1"),
    ("https://h.example/p", {"port": 8080}, "https://h.example:8080/p"),
    ("https://h.example:1/p", {"port": 8080, "uri_override_enforce_mode": IF_NOT_EXISTS},
     "https://h.example:1/p"),
    ("https://h.example/", {"path_override": {"path": "job"},
                            "uri_override_enforce_mode": IF_NOT_EXISTS},
     "https://h.example/job"),
    ("https://h.example/p", {"scheme": U.Scheme.SCHEME_UNSPECIFIED}, "https://h.example/p"),
    ("http://h.example/p", {"scheme": U.Scheme.SCHEME_UNSPECIFIED}, "https://h.example/p"),
    ("https://u:pw@[::1]:9/p#frag", {"host": "other.example"},
     "https://u:pw@other.example:9/p#frag"),
])
def test_uri_rules(url, uri, want):
    assert override_url(url, U.pb(U(**uri))) == want


def test_method_and_header_overrides(client, make_queue, receiver):
    target = route(receiver)
    target.http_method = tasks_v2.HttpMethod.GET
    target.header_overrides = [
        {"header": {"key": "x-tenant", "value": "from-queue"}},
        {"header": {"key": "X-Added", "value": "yes"}},
        # Cloud Tasks' own headers stay its own.
        {"header": {"key": "X-CloudTasks-QueueName", "value": "spoofed"}},
        {"header": {"key": "User-Agent", "value": "spoofed"}},
    ]
    q = make_queue(http_target=target)
    client.create_task(parent=q, task=http_task(f"{NOBODY}/h", headers={
        "X-Tenant": "from-task", "X-Kept": "kept", "Content-Type": "application/json"}))
    (r,) = receiver.at("/h")
    assert r.method == "GET" and r.body == b""  # a GET carries no body
    assert [v for k, v in r.headers if k.lower() == "x-tenant"] == ["from-queue"]
    assert r.header("X-Added") == "yes" and r.header("X-Kept") == "kept"
    assert r.header("X-CloudTasks-QueueName") == q.rsplit("/", 1)[1]
    assert r.header("User-Agent") == "Google-Cloud-Tasks"


def _claims(emulator, r, audience: str) -> dict:
    scheme, _, token = (r.header("Authorization") or "").partition(" ")
    assert scheme == "Bearer"
    return id_token.verify_token(token, Request(), audience=audience,
                                 certs_url=f"{emulator.http_url}/oauth2/v1/certs")


def test_the_queue_oidc_token_replaces_the_tasks(emulator, client, make_queue, receiver):
    target = route(receiver)
    target.oidc_token = tasks_v2.OidcToken(service_account_email=OTHER,
                                           audience="https://worker.example")
    q = make_queue(http_target=target)
    client.create_task(parent=q, task=http_task(
        f"{NOBODY}/with-token", oidc={"service_account_email": CALLER,
                                      "audience": "https://task.example"}))
    client.create_task(parent=q, task=http_task(
        f"{NOBODY}/without", headers={"Authorization": "Basic c2VjcmV0"}))
    for path in ("/with-token", "/without"):
        (r,) = receiver.at(path)
        claims = _claims(emulator, r, "https://worker.example")
        assert (claims["email"], claims["aud"]) == (OTHER, "https://worker.example")


def test_a_waiting_task_is_sent_by_the_routing_applied_later(
    emulator, client, make_queue, receiver
):
    q = make_queue(paused=True)
    name = client.create_task(parent=q, task=http_task(
        f"{NOBODY}/waiting", oidc={"service_account_email": CALLER})).name
    updated = client.update_queue(
        queue=tasks_v2.Queue(name=q, http_target=route(receiver)),
        update_mask=field_mask_pb2.FieldMask(paths=["http_target"]))
    assert updated.http_target.uri_override.port == receiver.port
    # The stored task keeps its own URL: the queue's routing applies when it is sent.
    assert client.get_task(name=name).http_request.url == f"{NOBODY}/waiting"
    client.resume_queue(name=q)
    (r,) = receiver.at("/waiting")
    # The task's own token, its audience defaulting to the URL the task is sent to.
    assert _claims(emulator, r, f"{receiver.url}/waiting")["email"] == CALLER
    wait_until(lambda: _gone(client, name), what="the task done")
    # Clearing it (gcloud: --clear-http-uri-override) leaves no queue-level routing.
    cleared = client.update_queue(
        queue=tasks_v2.Queue(name=q),
        update_mask=field_mask_pb2.FieldMask(paths=["http_target.uri_override"]))
    assert "http_target" not in cleared
    assert "http_target" not in client.get_queue(name=q)


def _gone(client, name: str) -> bool:
    try:
        client.get_task(name=name)
    except gexc.NotFound:
        return True
    return False


@pytest.mark.parametrize(("target", "says"), [
    ({"uri_override": {"host": ""}}, "UriOverride.host cannot be an empty string"),
    ({"uri_override": {"host": "a.example/path"}}, 'UriOverride.host "a.example/path" is not'),
    ({"uri_override": {"port": 70000}}, "UriOverride.port 70000 must be"),
    ({"uri_override": {"path_override": {"path": "/a?b=1"}}}, "the query goes in QueryOverride"),
    ({"header_overrides": [{"header": {"key": "Bad Name", "value": "x"}}]},
     '"Bad Name" is not a valid HTTP header name'),
    ({"header_overrides": [{"header": {"key": "X-A", "value": "a\r\nX-B: b"}}]},
     "contains a line break"),
    ({"oidc_token": {"service_account_email": "not-an-email", "audience": "https://a"}},
     '"not-an-email" is not a service account email'),
    ({"oidc_token": {"service_account_email": OTHER}},
     "HttpTarget.oidcToken.audience is required"),
    ({"oauth_token": {"service_account_email": OTHER}}, "HttpTarget.oauthToken.scope is required"),
])
def test_invalid_targets_are_refused_on_create_and_update(client, make_queue, target, says):
    name = f"{PARENT}/queues/refused-{sum(map(ord, says))}"
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, http_target=target))
    assert says in e.value.message
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=name)  # nothing was created
    q = make_queue()
    with pytest.raises(gexc.InvalidArgument) as e:
        client.update_queue(queue=tasks_v2.Queue(name=q, http_target=target),
                            update_mask=field_mask_pb2.FieldMask(paths=["http_target"]))
    assert says in e.value.message
    assert not client.get_queue(name=q).http_target.uri_override.host  # unchanged


def test_rest_round_trips_the_json_and_refuses_two_tokens(emulator, make_queue):
    rest = emulator.rest_client()
    name = f"{PARENT}/queues/rest-routed"
    target = tasks_v2.HttpTarget(
        uri_override=U(host="w.example", port=8443, path_override={"path": "/p"},
                       uri_override_enforce_mode=IF_NOT_EXISTS),
        http_method=tasks_v2.HttpMethod.PUT,
        header_overrides=[{"header": {"key": "X-T", "value": "1"}}],
        oidc_token={"service_account_email": CALLER, "audience": "https://w.example"})
    made = rest.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, http_target=target))
    assert made.http_target == target
    assert emulator.client().get_queue(name=name).http_target == target
    patched = rest.update_queue(
        queue=tasks_v2.Queue(name=name, http_target={"uri_override": {"port": 0}}),
        update_mask=field_mask_pb2.FieldMask(paths=["http_target.uri_override.port"]))
    # Port 0 is kept as set (it clears the tasks' port), the rest of the override unchanged.
    assert "port" in patched.http_target.uri_override
    assert patched.http_target.uri_override.port == 0
    assert patched.http_target.uri_override.host == "w.example"
    # Both kinds of token at once: JSON can say it, the API cannot hold it.
    both = requests.post(f"{emulator.http_url}/v2/{PARENT}/queues", timeout=10, json={
        "name": f"{PARENT}/queues/rest-two-tokens",
        "httpTarget": {"oidcToken": {"serviceAccountEmail": CALLER, "audience": "https://a"},
                       "oauthToken": {"serviceAccountEmail": CALLER, "scope": "s"}}})
    assert both.status_code == 400, both.text
    assert both.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "authorization_header" in both.json()["error"]["message"]


IAM_OPERATOR = "user:operator@example.com"
AS_OPERATOR = [("x-emulator-principal", IAM_OPERATOR)]


def test_a_queue_token_needs_act_as_on_its_account(tmp_path):
    em = start_emulator(tmp_path, f"""
[iam]
enforce = true
principal = "{IAM_OPERATOR}"

[[iam.bindings]]
role = "roles/cloudtasks.admin"
members = ["{IAM_OPERATOR}"]

[[service_accounts]]
email = "{CALLER}"

[[service_accounts.bindings]]
role = "roles/iam.serviceAccountUser"
members = ["{IAM_OPERATOR}"]

[[service_accounts]]
email = "{OTHER}"
""")
    try:
        client = em.client()
        token = {"oidc_token": {"service_account_email": OTHER, "audience": "https://a"}}
        with pytest.raises(gexc.PermissionDenied) as e:
            client.create_queue(parent=PARENT, queue=tasks_v2.Queue(
                name=f"{PARENT}/queues/as-other", http_target=token), metadata=AS_OPERATOR)
        assert (f'lacks IAM permission "iam.serviceAccounts.actAs" for the resource "{OTHER}"'
                in e.value.message)
        q = f"{PARENT}/queues/as-caller"
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=q, http_target={
            "oidc_token": {"service_account_email": CALLER, "audience": "https://a"}}),
            metadata=AS_OPERATOR)
        with pytest.raises(gexc.PermissionDenied):
            client.update_queue(queue=tasks_v2.Queue(name=q, http_target=token),
                                update_mask=field_mask_pb2.FieldMask(paths=["http_target"]),
                                metadata=AS_OPERATOR)
        # Changing something else keeps the account: no new grant is needed.
        client.update_queue(queue=tasks_v2.Queue(name=q, rate_limits={
            "max_dispatches_per_second": 5}), update_mask=field_mask_pb2.FieldMask(
            paths=["rate_limits.max_dispatches_per_second"]), metadata=AS_OPERATOR)
        assert (client.get_queue(name=q, metadata=AS_OPERATOR).http_target.oidc_token
                .service_account_email == CALLER)
    finally:
        em.stop()
