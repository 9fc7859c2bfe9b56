"""The HTTP/JSON rules seen with plain HTTP, as curl or another language's client sends it:
JSON mapping, query parameters, path variables, Google's error shape, and the OIDC routes
that share the port."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from collections.abc import Iterator

import httpx
import pytest
from google.cloud import tasks_v2
from google.cloud.logging_v2.types import ListLogEntriesRequest
from google.cloud.resourcemanager_v3.services.projects.transports.rest_base import (
    _BaseProjectsRestTransport,
)
from google.cloud.run_v2.services.services.transports.rest_base import _BaseServicesRestTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports.rest_base import (
    _BaseCloudTasksRestTransport,
)
from google.cloud.tasks_v2beta3.services.cloud_tasks.transports import rest_base as beta_rest

from emulator.rest_json import bind_query
from emulator.rest_rules import LOCATIONS, RESOURCE_MANAGER_V3, RULES, RUN_V2
from tests.emulator.harness import PARENT, RunningEmulator

FULL = tasks_v2.Task.View.FULL
_ids = itertools.count()


@pytest.fixture(scope="module")
def http(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.http_url, timeout=10) as c:
        yield c


@pytest.fixture
def queue(http: httpx.Client) -> str:
    """A paused queue made over REST: its tasks stay put for the test to read."""
    name = f"{PARENT}/queues/raw-{next(_ids)}"
    r = http.post(f"/v2/{PARENT}/queues", json={"name": name})
    assert r.status_code == 200, r.text
    assert http.post(f"/v2/{name}:pause").json()["state"] == "PAUSED"
    return name


def error(r: httpx.Response, http_status: int, status: str) -> str:
    """The message of Google's JSON error, after checking its shape."""
    assert r.status_code == http_status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == http_status and body["error"]["status"] == status
    return body["error"]["message"]


@pytest.mark.parametrize("alphabet", ["standard", "url-safe", "url-safe unpadded"])
def test_bytes_in_either_base64_alphabet(http, client, queue, alphabet):
    raw = b"\xfb\xff\xbf>?" * 3  # encodes to "+" and "/" in one alphabet, "-" and "_" in the other
    encoded = {"standard": base64.b64encode(raw).decode(),
               "url-safe": base64.urlsafe_b64encode(raw).decode(),
               "url-safe unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("=")}[alphabet]
    assert encoded.rstrip("=") != base64.b64encode(raw).decode().rstrip("=") or \
        alphabet == "standard"
    r = http.post(f"/v2/{queue}/tasks", json={
        "task": {"httpRequest": {"url": "https://example.com/b", "body": encoded}},
        "responseView": "FULL"})
    assert r.status_code == 200, r.text
    # Answers use the standard alphabet, as Google's do.
    assert r.json()["httpRequest"]["body"] == base64.b64encode(raw).decode()
    stored = client.get_task(request={"name": r.json()["name"], "response_view": FULL})
    assert stored.http_request.body == raw


def test_enums_by_name_or_by_number(http, queue):
    by_name = http.get(f"/v2/{queue}").json()
    assert by_name["state"] == "PAUSED"
    by_number = http.get(f"/v2/{queue}", params={"$alt": "json;enum-encoding=int"}).json()
    assert by_number["state"] == tasks_v2.Queue.State.PAUSED.value
    assert {k: v for k, v in by_number.items() if k != "state"} == \
        {k: v for k, v in by_name.items() if k != "state"}
    # Requests take either form too.
    for view in ("FULL", 2, "2"):
        r = http.post(f"/v2/{queue}/tasks", json={
            "task": {"httpRequest": {"url": "https://example.com/e", "body": "e30="}},
            "responseView": view})
        assert r.json()["view"] == "FULL" and r.json()["httpRequest"]["body"] == "e30="


def test_json_mapping_of_durations_times_and_camel_case(http, queue):
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=500_000)
    r = http.post(f"/v2/{queue}/tasks", json={"task": {
        "httpRequest": {"url": "https://example.com/t", "httpMethod": "PUT"},
        # RFC 3339 with an offset; answers are in UTC.
        "scheduleTime": tomorrow.astimezone(dt.timezone(dt.timedelta(hours=-8))).isoformat(),
        "dispatchDeadline": "700s"}})
    task = r.json()
    assert r.status_code == 200, r.text
    assert task["scheduleTime"] == tomorrow.strftime("%Y-%m-%dT%H:%M:%S.500Z")
    assert task["dispatchDeadline"] == "700s" and task["httpRequest"]["httpMethod"] == "PUT"
    # Proto names are accepted in requests; answers are lowerCamelCase and leave defaults out.
    r = http.post(f"/v2/{queue}/tasks", json={"task": {
        "http_request": {"url": "https://example.com/t"}, "dispatch_deadline": "15s"}})
    assert r.json()["dispatchDeadline"] == "15s" and "dispatchCount" not in r.json()


def test_system_parameters_are_ignored(http, queue):
    plain = http.get(f"/v2/{queue}")
    params = {"alt": "json", "prettyPrint": "false", "key": "AIza-not-checked",
              "fields": "name", "quotaUser": "me", "$.xgafv": "2", "callback": "cb",
              "upload_protocol": "raw", "uploadType": "media", "access_token": "t",
              "$prettyPrint": "true"}
    r = http.get(f"/v2/{queue}", params=params,
                 headers={"Authorization": "Bearer not-checked"})
    assert r.status_code == 200 and r.json() == plain.json()


def test_path_variables_win_over_the_body(http, client, queue):
    other = f"{PARENT}/queues/raw-other-{next(_ids)}"
    r = http.post(f"/v2/{queue}/tasks", json={
        "parent": other, "task": {"httpRequest": {"url": "https://example.com/p"}}})
    assert r.status_code == 200, r.text
    assert r.json()["name"].startswith(f"{queue}/tasks/")
    # UpdateQueue names its queue in the path (queue.name): the body's name is not used.
    r = http.patch(f"/v2/{queue}", params={"updateMask": "retryConfig.maxAttempts"},
                   json={"name": other, "retryConfig": {"maxAttempts": 9}})
    assert r.status_code == 200 and r.json()["name"] == queue
    assert client.get_queue(name=queue).retry_config.max_attempts == 9


def test_update_mask_in_the_query(http, client, queue):
    body = {"rateLimits": {"maxDispatchesPerSecond": 5, "maxConcurrentDispatches": 2}}
    r = http.patch(f"/v2/{queue}", params={"updateMask": "rateLimits.maxConcurrentDispatches"},
                   json=body)
    assert r.status_code == 200, r.text
    limits = client.get_queue(name=queue).rate_limits
    assert limits.max_concurrent_dispatches == 2 and limits.max_dispatches_per_second == 500
    # A list of paths, in snake_case as well.
    r = http.patch(f"/v2/{queue}", json=body, params={
        "updateMask": "rate_limits.max_dispatches_per_second,rateLimits.maxConcurrentDispatches"})
    assert r.json()["rateLimits"]["maxDispatchesPerSecond"] == 5


def test_unknown_fields_are_refused_in_googles_words(http, queue):
    r = http.post(f"/v2/{queue}/tasks", json={
        "task": {"httpRequest": {"url": "https://example.com/u", "colour": "red"}}, "x": 1})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        "Invalid JSON payload received. Unknown name \"colour\" at 'task.http_request': "
        "Cannot find field.\n"
        'Invalid JSON payload received. Unknown name "x": Cannot find field.')
    r = http.patch(f"/v2/{queue}", params={"updateMask": "state"}, json={"stat": "PAUSED"})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        "Invalid JSON payload received. Unknown name \"stat\" at 'queue': Cannot find field.")
    r = http.get(f"/v2/{queue}/tasks", params={"pageSise": "5"})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        'Invalid JSON payload received. Unknown name "pageSise": Cannot bind query parameter. '
        "Field 'pageSise' could not be found in request message.")
    # With body "*" every field comes in the body, none from the query.
    r = http.post(f"/v2/{queue}:pause", params={"name": queue})
    assert "Cannot bind query parameter" in error(r, 400, "INVALID_ARGUMENT")


def test_values_of_the_wrong_type_are_refused(http, queue):
    r = http.patch(f"/v2/{queue}", params={"updateMask": "rateLimits.maxDispatchesPerSecond"},
                   json={"rateLimits": {"maxDispatchesPerSecond": "fast"}})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        "Invalid value at 'queue.rate_limits.max_dispatches_per_second' (TYPE_DOUBLE), \"fast\"")
    r = http.post(f"/v2/{queue}/tasks", json={"task": {"dispatchDeadline": "ten minutes"}})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        "Invalid value at 'task.dispatch_deadline' (type.googleapis.com/google.protobuf."
        'Duration), "ten minutes"')
    r = http.post(f"/v2/{queue}/tasks", json={"task": {"httpRequest": {"httpMethod": "FETCH"}}})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        "Invalid value at 'task.http_request.http_method' (type.googleapis.com/google.cloud."
        'tasks.v2.HttpMethod), "FETCH"')
    r = http.post(f"/v2/{queue}/tasks", json={"task": [1]})
    assert error(r, 400, "INVALID_ARGUMENT") == (
        'Invalid JSON payload received. Unknown name "task": Proto field is not repeating, '
        "cannot start list.")
    r = http.post(f"/v2/{queue}/tasks", json=[{"task": {}}])
    assert error(r, 400, "INVALID_ARGUMENT") == (
        'Invalid JSON payload received. Unknown name "": Root element must be a message.')


def test_bad_json_says_where(http, queue):
    r = http.post(f"/v2/{queue}/tasks", content=b'{"task": {"httpRequest": }',
                  headers={"Content-Type": "application/json"})
    message = error(r, 400, "INVALID_ARGUMENT")
    assert message.startswith("Invalid JSON payload received. Expecting value (line 1, column")
    assert message.endswith('{"task": {"httpRequest": }\n                         ^')
    # curl -d sends form encoding by default: the body is still read as JSON.
    r = http.post(f"/v2/{queue}/tasks",
                  content=b'{"task": {"httpRequest": {"url": "https://example.com/f"}}}',
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


def test_errors_carry_the_http_status_of_their_code(http, queue):
    r = http.post(f"/v2/{PARENT}/queues", json={"name": queue})
    assert error(r, 409, "ALREADY_EXISTS") == "Queue already exists"
    r = http.get(f"/v2/{PARENT}/queues/raw-missing")
    assert error(r, 404, "NOT_FOUND")
    r = http.post(f"/v2beta3/{PARENT}/queues", json={"name": f"{PARENT}/queues/b3"})
    assert "CreateQueue" in error(r, 501, "UNIMPLEMENTED")


def test_unknown_paths_and_verbs_answer_404_in_the_same_shape(http, queue):
    r = http.get("/v2/projects/p/queues")
    assert "/v2/projects/p/queues was not found" in error(r, 404, "NOT_FOUND")
    r = http.get("/v9/anything")
    assert r.status_code == 404  # not an API prefix: aiohttp's own 404
    r = http.put(f"/v2/{queue}", json={})
    assert error(r, 404, "NOT_FOUND") == (
        f"PUT /v2/{queue} is not a method: that path takes DELETE, GET or PATCH.")
    # POST with X-HTTP-Method-Override stands for the verb it names.
    r = http.post(f"/v2/{queue}", headers={"X-HTTP-Method-Override": "GET"})
    assert r.status_code == 200 and r.json()["name"] == queue


def test_percent_encoded_path_segments_are_decoded(http, queue):
    project, rest = queue.split("/", 2)[1], queue.split("/", 2)[2]
    encoded = project.replace("-", "%2D")
    r = http.get(f"/v2/projects/{encoded}/{rest}")
    assert r.status_code == 200 and r.json()["name"] == queue


def test_repeated_and_nested_query_parameters():
    got = bind_query([("resourceNames", "projects/a"), ("resource_names", "projects/b"),
                      ("pageSize", "5"), ("$alt", "json;enum-encoding=int")],
                     ListLogEntriesRequest.pb().DESCRIPTOR, "")
    assert got == {"resourceNames": ["projects/a", "projects/b"], "pageSize": "5"}


def test_oidc_routes_are_untouched(http, emulator):
    disco = http.get("/.well-known/openid-configuration").json()
    assert disco["jwks_uri"] == f"{emulator.http_url}/oauth2/v3/certs"
    assert http.get("/oauth2/v3/certs").json()["keys"]
    assert http.get("/oauth2/v1/certs").status_code == 200
    assert http.get("/healthz").json() == {"ok": True}
    token = http.post("/emulator/v1/id-token", json={
        "email": "a@example.com", "audience": "https://a.example.com"})
    assert token.status_code == 200 and token.json()["id_token"].count(".") == 2
    userinfo = http.get("/v1/userinfo")  # under /v1/, where IAM's REST paths live too
    assert userinfo.status_code == 401 and userinfo.json()["error"] == "invalid_request"
    assert http.get("/iap/verify/public_key-jwk").json()["keys"]


# The REST transports of the installed clients carry the same http rules, generated from the
# protos: the hand-kept table must agree with them, and miss none of their methods.
TRANSPORTS = {
    "google.cloud.tasks.v2.CloudTasks": (_BaseCloudTasksRestTransport, True),
    "google.cloud.tasks.v2beta3.CloudTasks": (beta_rest._BaseCloudTasksRestTransport, True),
    RUN_V2: (_BaseServicesRestTransport, True),
    RESOURCE_MANAGER_V3: (_BaseProjectsRestTransport, False),  # only some methods kept
}
_OPERATIONS = {"GetOperation", "ListOperations", "DeleteOperation", "WaitOperation"}


@pytest.mark.parametrize("service", sorted(TRANSPORTS))
def test_the_table_agrees_with_the_official_rest_clients(service):
    transport, complete = TRANSPORTS[service]
    version = transport._BaseGetIamPolicy._get_http_options()[0]["uri"].split("/")[1]
    ours = {(r.method, r.verb, r.template, r.body) for r in RULES
            if r.service == service or (r.service == LOCATIONS and "tasks" in service
                                        and r.template.startswith(f"/{version}/"))}
    theirs = {(name.removeprefix("_Base"), o["method"].upper(), o["uri"], o.get("body", ""))
              for name in dir(transport) if name.startswith("_Base")
              and name.removeprefix("_Base") not in _OPERATIONS
              for o in getattr(transport, name)._get_http_options()}
    assert ours <= theirs
    if complete:
        assert ours == theirs
