"""Cloud Run Admin v2, Cloud Logging v2 and Resource Manager v3 over HTTP/JSON: the official
REST clients where the package has one (run_v2, resourcemanager_v3), plain HTTP for Logging
(google-cloud-logging's gapic client has no REST transport)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import resourcemanager_v3, run_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2

from tests.emulator.harness import PARENT, PROJECT, RunningEmulator, start_emulator

CONFIG = """
[[services]]
name = "alpha"
port = 0
timeout_s = 120

[[services]]
name = "beta"
port = 0
ingress = "internal"
invokers = ["allUsers"]

[[services]]
name = "gamma"
port = 0
"""


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("rest-run"), CONFIG)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def run(em: RunningEmulator) -> run_v2.ServicesClient:
    return run_v2.ServicesClient(**em.rest_options())


@pytest.fixture(scope="module")
def http(em: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=em.http_url, timeout=10) as c:
        yield c


def service(name: str) -> str:
    return f"{PARENT}/services/{name}"


def test_run_services_read_as_over_grpc(em, run):
    grpc_run = run_v2.ServicesClient(transport=ServicesGrpcTransport(
        channel=grpc.insecure_channel(em.target)))
    alpha = run.get_service(name=service("alpha"))
    assert alpha == grpc_run.get_service(name=service("alpha"))
    assert alpha.uri.startswith("http://127.0.0.1:") and alpha.template.timeout.seconds == 120
    assert run.get_service(name=service("beta")).ingress == \
        run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
    pages = list(run.list_services(request={"parent": PARENT, "page_size": 2}).pages)
    assert [[s.name.rsplit("/", 1)[1] for s in p.services] for p in pages] == [
        ["alpha", "beta"], ["gamma"]]


def test_run_iam_policy_methods(run):
    beta = service("beta")
    # GetIamPolicy is a GET here, its options in the query (options.requestedPolicyVersion).
    got = run.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(
        resource=beta, options=options_pb2.GetPolicyOptions(requested_policy_version=3)))
    assert [(b.role, list(b.members)) for b in got.bindings] == [
        ("roles/run.invoker", ["allUsers"])]
    member = "serviceAccount:caller@test-project.iam.gserviceaccount.com"
    policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker",
                                                            members=[member])])
    set_ = run.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=service("gamma"), policy=policy))
    assert list(set_.bindings[0].members) == [member]
    assert run.get_iam_policy(request={"resource": service("gamma")}).etag == set_.etag
    tested = run.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
        resource=beta, permissions=["run.routes.invoke", "run.services.get"]))
    assert list(tested.permissions) == ["run.routes.invoke", "run.services.get"]


def test_run_errors(run):
    with pytest.raises(gexc.NotFound) as e:
        run.get_service(name=service("nope"))
    assert e.value.response.json()["error"] == {
        "code": 404, "status": "NOT_FOUND",
        "message": f"Resource 'nope' of kind 'SERVICE' in region 'us-central1' in project "
                   f"'{PROJECT}' does not exist."}
    with pytest.raises(gexc.BadRequest, match="page_size must not be negative"):
        list(run.list_services(request={"parent": PARENT, "page_size": -1}))
    # Services come from the configuration: creating one is not served, as on gRPC.
    with pytest.raises(gexc.MethodNotImplemented):
        run.create_service(parent=PARENT, service=run_v2.Service(), service_id="new")


def test_resource_manager_over_rest(em):
    projects = resourcemanager_v3.ProjectsClient(**em.rest_options())
    project = projects.get_project(name=f"projects/{PROJECT}")
    assert project.project_id == PROJECT and project.name.split("/")[1].isdigit()
    assert project.state == resourcemanager_v3.Project.State.ACTIVE
    assert projects.get_iam_policy(resource=f"projects/{PROJECT}").etag


def write(http: httpx.Client, body: dict) -> httpx.Response:
    return http.post("/v2/entries:write", json=body)


def test_logging_write_then_list_with_a_filter_over_pages(http):
    project = "rest-logs"
    log = f"projects/{project}/logs/worker"
    r = write(http, {"logName": log, "resource": {"type": "global"},
                     "labels": {"env": "local"},
                     "entries": [{"jsonPayload": {"n": i, "kind": "even" if i % 2 == 0 else "odd"},
                                  "severity": "WARNING" if i % 2 else "INFO"}
                                 for i in range(7)]})
    assert r.status_code == 200 and r.json() == {}
    request = {"resourceNames": [f"projects/{project}"], "orderBy": "timestamp desc",
               "filter": 'severity>=WARNING AND jsonPayload.kind="odd"', "pageSize": 2}
    seen, token, pages = [], None, 0
    while True:
        r = http.post("/v2/entries:list", json={**request, **({"pageToken": token} if token
                                                              else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        seen += body.get("entries", [])
        pages += 1
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages == 2 and [e["jsonPayload"]["n"] for e in seen] == [5, 3, 1]
    first = seen[0]
    assert first["logName"] == log and first["severity"] == "WARNING"
    assert first["labels"] == {"env": "local"} and first["resource"] == {"type": "global"}
    assert first["timestamp"].endswith("Z") and first["insertId"]
    # The Python REST clients ask for enums as numbers; so may any caller.
    r = http.post("/v2/entries:list", params={"$alt": "json;enum-encoding=int"},
                  json={**request, "pageSize": 1})
    assert r.json()["entries"][0]["severity"] == 400


def test_logging_errors_in_googles_shape(http):
    r = http.post("/v2/entries:list", json={"resourceNames": ["projects/rest-logs"],
                                            "filter": "severity>>"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    # A refused write of partial_success names the bad entries in its details, as on gRPC.
    r = write(http, {"resource": {"type": "global"}, "partialSuccess": True, "entries": [
        {"logName": "projects/rest-partial/logs/good", "textPayload": "kept"},
        {"logName": "projects/rest-partial/logs/bad name", "textPayload": "refused"}]})
    error = r.json()["error"]
    assert r.status_code == 400 and error["message"] == "Log name contains illegal character  "
    (detail,) = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.logging.v2.WriteLogEntriesPartialErrors"
    assert list(detail["logEntryErrors"]) == ["1"]
    listed = http.post("/v2/entries:list", json={"resourceNames": ["projects/rest-partial"]})
    assert [e["textPayload"] for e in listed.json()["entries"]] == ["kept"]
    r = http.get("/v2/projects/rest-logs/logs")  # ListLogs: not served, as on gRPC
    assert r.status_code == 501 and r.json()["error"]["status"] == "UNIMPLEMENTED"
