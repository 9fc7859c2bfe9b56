"""The live probe against a real emulator hosting the workers' Cloud Run services: a correct
worker is proven by a signed GET through its door; a wrong audience (401), a missing invoker
binding (403) and a prober who may not mint (unknown) are each caught with their fix, then
pass once repaired; a viewer is refused before any request."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from google.cloud import tasks_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import field_mask_pb2

from enqueuer_core import clients
from enqueuer_core.access import Acting, local_policy
from enqueuer_core.config import LOCAL_ADMIN, LOCAL_PRINCIPAL, Settings, load_settings
from enqueuer_core.diagnose import CheckResult, diagnose
from enqueuer_core.errors import Forbidden
from enqueuer_core.probe import MINTER_ROLE, probe_workers
from tests.emulator.harness import RunningEmulator, start_emulator

PROJECT, REGION = "local-project", "us-central1"
CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
PRINCIPAL = f"serviceAccount:{LOCAL_PRINCIPAL}"  # whom the clients call the emulator as
OPERATOR = Acting("user:operator@local-project.test", local_policy(), "cli")
VIEWER = Acting("user:viewer@local-project.test", local_policy(), "cli")
SERVICES = {"brain": "/process", "testimonios": "/generate-testimony"}
CONFIG = f"""
[iam]
enforce = true
principal = "{PRINCIPAL}"
bindings = [
  {{ role = "roles/cloudtasks.viewer", members = ["{PRINCIPAL}"] }},
  {{ role = "roles/run.viewer", members = ["{PRINCIPAL}"] }},
  {{ role = "roles/run.admin", members = ["{LOCAL_ADMIN}"] }},
  {{ role = "roles/cloudtasks.admin", members = ["{LOCAL_ADMIN}"] }},
  {{ role = "roles/iam.serviceAccountAdmin", members = ["{LOCAL_ADMIN}"] }},
]

[[service_accounts]]
email = "{CALLER}"
bindings = [
  {{ role = "{MINTER_ROLE}", members = ["{PRINCIPAL}"] }},
  {{ role = "roles/iam.serviceAccountUser", members = ["{LOCAL_ADMIN}"] }},
]

[[queues]]
name = "queue-brain"

[[queues]]
name = "queue-testimonios"
""" + "".join(f"""
[[services]]
name = "{name}"
port = 0
paths = ["{path}"]
invokers = ["serviceAccount:{CALLER}"]
""" for name, path in SERVICES.items()) + f"""
[[services]]
name = "transcripciones"
port = 0
paths = ["/api/transcribe"]
ingress = "internal"
invokers = ["serviceAccount:{CALLER}"]
"""
AS_ADMIN = [("x-emulator-principal", LOCAL_ADMIN)]


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("probe"), CONFIG, project=PROJECT)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def urls(em: RunningEmulator) -> dict[str, str]:
    run = clients.run_client(load_settings(lenient=True, cloud_tasks_emulator_host=em.target))
    return {name: run.get_service(
        name=f"projects/{PROJECT}/locations/{REGION}/services/{name}").uri
        for name in [*SERVICES, "transcripciones"]}


def settings_for(em: RunningEmulator, urls: dict[str, str], **overrides: object) -> Settings:
    values: dict[str, object] = {
        "cloud_tasks_emulator_host": em.target, "project_id": PROJECT, "tasks_region": REGION,
        "caller_sa": CALLER, "workers_file": None,
        "url_brain": urls["brain"] + "/process", "aud_brain": urls["brain"],
        "url_testi": urls["testimonios"] + "/generate-testimony",
        "aud_testi": urls["testimonios"]}
    return load_settings(lenient=True, **{**values, **overrides})


def probe(settings: Settings, acting: Acting = OPERATOR) -> CheckResult:
    (result,) = probe_workers(settings, acting, ["brain"], timeout_s=5)
    assert result.check == "probe" and result.worker == "brain"
    return result


def seen_by(url: str) -> list[dict]:
    """What the service's door let through (the emulator's log of it)."""
    return httpx.get(f"{url}/_requests", timeout=5).json()


def audit_lines(text: str) -> list[dict]:
    return [json.loads(line)["audit"] for line in text.splitlines()
            if line.startswith("{") and '"enqueuer-audit"' in line]


def change_policy(client, resource: str, role: str, member: str | None):
    """Drop ``role`` from ``resource``'s policy (member None) or give it back to ``member``;
    the policy as it was."""
    policy = client.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(
        resource=resource), metadata=AS_ADMIN)
    kept = policy_pb2.Policy()
    kept.CopyFrom(policy)
    changed = policy_pb2.Policy(version=policy.version, etag=policy.etag)
    changed.bindings.extend(b for b in policy.bindings if b.role != role)
    if member:
        changed.bindings.add(role=role, members=[member])
    client.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=resource, policy=changed), metadata=AS_ADMIN)
    kept.etag = b""
    return kept


def test_a_correct_worker_is_proven_by_a_signed_get(em, urls, capsys):
    before = len(seen_by(urls["brain"]))
    results = probe_workers(settings_for(em, urls), OPERATOR, ["brain", "testimonios"],
                            timeout_s=5)
    assert [(r.worker, r.status) for r in results] == [("brain", "pass"),
                                                       ("testimonios", "pass")]
    brain = results[0]
    assert brain.title == "A real request gets through the door" and brain.fix is None
    assert brain.evidence.startswith(
        "proven: token, audience and invoker binding accepted (GET answered 200)")
    assert f"as {CALLER}, audience {urls['brain']}" in brain.evidence
    # The worker saw a GET (never the job's POST) signed as Cloud Tasks signs for it.
    (request,) = seen_by(urls["brain"])[before:]
    assert request["method"] == "GET" and request["path"] == "/process"
    assert request["claims"]["email"] == CALLER and request["claims"]["aud"] == urls["brain"]
    (line,) = audit_lines(capsys.readouterr().err)
    assert (line["action"], line["outcome"], line["principal"]) == (
        "probe", "ok", "user:operator@local-project.test")
    assert line["results"] == {"brain": "pass", "testimonios": "pass"}


def test_a_wrong_audience_gets_401_then_passes_once_repaired(em, urls):
    got = probe(settings_for(em, urls, aud_brain="http://127.0.0.1:1"))
    assert got.status == "fail"
    assert "Cloud Run's door answered 401" in got.evidence
    assert "token audience 'http://127.0.0.1:1' is not this service's URL" in got.evidence
    assert got.fix.startswith(f"AUD_BRAIN={urls['brain']} (or gcloud run services update ")
    assert "--add-custom-audiences=http://127.0.0.1:1" in got.fix
    assert probe(settings_for(em, urls)).status == "pass"


def test_a_missing_invoker_binding_gets_403_then_passes_once_repaired(em, urls):
    settings = settings_for(em, urls)
    run = clients.run_client(settings)
    service = f"projects/{PROJECT}/locations/{REGION}/services/brain"
    kept = change_policy(run, service, "roles/run.invoker", None)
    try:
        # Through diagnose, which knows the service's name for the fix.
        results = diagnose(settings, ["brain"], probe=True, acting=OPERATOR, timeout_s=5)
        got = results[-1]
        assert (got.check, got.status) == ("probe", "fail")
        assert "Cloud Run's door answered 403" in got.evidence
        assert f"serviceAccount:{CALLER} lacks run.routes.invoke" in got.evidence
        assert got.fix == (f"gcloud run services add-iam-policy-binding brain "
                           f"--member=serviceAccount:{CALLER} --role=roles/run.invoker "
                           f"--region={REGION} --project={PROJECT}")
        assert [r.check for r in results].count("probe") == 1
    finally:
        run.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=service, policy=kept), metadata=AS_ADMIN)
    assert probe(settings).status == "pass"


def test_without_leave_to_mint_the_probe_is_unknown_and_names_the_role(em, urls):
    settings = settings_for(em, urls)
    iam = clients.iam_client(settings)
    account = f"projects/-/serviceAccounts/{CALLER}"
    before = len(seen_by(urls["brain"]))
    kept = change_policy(iam, account, MINTER_ROLE, None)
    try:
        got = probe(settings)
        assert got.status == "unknown"
        assert f"{PRINCIPAL} may not mint ID tokens as {CALLER}" in got.evidence
        assert "Permission 'iam.serviceAccounts.getOpenIdToken' denied" in got.evidence
        assert got.fix == (f"gcloud iam service-accounts add-iam-policy-binding {CALLER} "
                           f"--member={PRINCIPAL} --role={MINTER_ROLE} --project={PROJECT}")
        assert len(seen_by(urls["brain"])) == before  # the door was not tried
    finally:
        iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=account, policy=kept), metadata=AS_ADMIN)
    assert probe(settings).status == "pass"


def test_the_probe_goes_where_the_queue_sends_the_tasks(em, urls):
    """A queue-level OIDC override with a wrong audience is what Cloud Tasks sends: 401."""
    settings = settings_for(em, urls)
    tasks = clients.tasks_client(settings, acting_as=LOCAL_ADMIN)
    queue = settings.queue_path("queue-brain")
    routed = tasks_v2.Queue(name=queue, http_target=tasks_v2.HttpTarget(
        oidc_token=tasks_v2.OidcToken(service_account_email=CALLER,
                                      audience="http://127.0.0.1:1")))
    mask = field_mask_pb2.FieldMask(paths=["http_target"])
    tasks.update_queue(queue=routed, update_mask=mask)
    try:
        got = probe(settings)
        assert got.status == "fail" and "audience http://127.0.0.1:1" in got.evidence
        assert got.fix == (f"the audience http://127.0.0.1:1 is the queue's http_target "
                           f"override: make it {urls['brain']} (see queue_target)")
    finally:
        tasks.update_queue(queue=tasks_v2.Queue(name=queue), update_mask=mask)
    assert probe(settings).status == "pass"


def test_an_internal_ingress_cannot_be_probed_from_outside(em, urls):
    url = urls["transcripciones"]
    settings = settings_for(em, urls, url_trans=f"{url}/api/transcribe", aud_trans=url)
    (got,) = probe_workers(settings, OPERATOR, ["transcripciones"], timeout_s=5)
    assert got.status == "unknown" and got.fix is None
    assert "404 from Google's front end, not the app" in got.evidence
    assert 'ingress is "internal"' in got.evidence and "see service and ingress" in got.evidence


def test_an_unreachable_worker_fails(em, urls):
    got = probe(settings_for(em, urls, url_brain="http://127.0.0.1:9/process",
                             aud_brain="http://127.0.0.1:9"))
    assert got.status == "fail" and "GET http://127.0.0.1:9/process: unreachable" in got.evidence
    assert "URL_BRAIN" in got.fix


def test_a_viewer_is_refused_before_any_request(em, urls, capsys):
    before = len(seen_by(urls["brain"]))
    with pytest.raises(Forbidden) as e:
        probe_workers(settings_for(em, urls), VIEWER, ["brain"])
    assert "probing the workers' doors with a real request needs the operator role" in (
        e.value.message)
    with pytest.raises(Forbidden):
        diagnose(settings_for(em, urls), ["brain"], probe=True, acting=VIEWER)
    assert len(seen_by(urls["brain"])) == before
    lines = audit_lines(capsys.readouterr().err)
    assert [(x["action"], x["outcome"]) for x in lines] == [("probe", "refused")] * 2


def test_diagnose_runs_the_probe_only_when_asked(em, urls):
    results = diagnose(settings_for(em, urls), ["brain"], timeout_s=5)
    assert "probe" not in {r.check for r in results}
