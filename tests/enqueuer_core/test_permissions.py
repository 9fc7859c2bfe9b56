"""A missing IAM binding, as production would refuse it: the emulator enforces IAM, and the
library and the HTTP API say which permission is missing and how to grant it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.cloud import iam_admin_v1
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.iam.v1 import policy_pb2

from app import create_app
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import PermissionDenied
from tests.acting import as_admin
from tests.emulator.harness import PARENT, PROJECT, RunningEmulator, start_emulator
from tests.serving import serving
from tests.tokens import bearer

# Who calls Cloud Tasks: the emulator's default principal, which the library assumes.
ENQUEUER = "enqueuer@local-project.iam.gserviceaccount.com"
CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"  # the account the tokens are for
QUEUES = {"brain": "perm-brain", "testi": "perm-testi", "trans": "perm-trans"}
# Who changes the account's policy in the last test, as a platform engineer would.
OPERATOR = "user:operator@example.com"
AS_OPERATOR = [("x-emulator-principal", OPERATOR)]
# The enqueuer may create tasks, but nobody may act as the caller account.
CONFIG = f"""
[iam]
enforce = true

[[iam.bindings]]
role = "roles/cloudtasks.enqueuer"
members = ["serviceAccount:{ENQUEUER}"]

[[iam.bindings]]
role = "roles/iam.serviceAccountAdmin"
members = ["{OPERATOR}"]

[[service_accounts]]
email = "{CALLER}"
""" + "".join(f'\n[[queues]]\nname = "{q}"\npaused = true\n' for q in QUEUES.values())
BRAIN = {"system_instructions_doc_id": "s", "base_prompt_doc_id": "b", "input_doc_id": "i",
         "output_doc_id": "o"}
FIX = f"gcloud iam service-accounts add-iam-policy-binding {CALLER} "


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("perm"), CONFIG)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def settings(enforcing: RunningEmulator) -> Settings:
    worker = "http://127.0.0.1:9"
    return load_settings(
        cloud_tasks_emulator_host=enforcing.target, project_id=PROJECT,
        tasks_region="us-central1", caller_sa=CALLER, url_brain=worker + "/process",
        url_testi=worker + "/generate-testimony", url_trans=worker + "/api/transcribe",
        **{f"queue_{s}": q for s, q in QUEUES.items()}, emulator_http_url=enforcing.http_url,
    )


def queued(enforcing: RunningEmulator) -> list[str]:
    return [t.name for t in enforcing.client().list_tasks(parent=f"{PARENT}/queues/perm-brain")]


def assert_names_the_fix(message: str) -> None:
    assert "iam.serviceAccounts.actAs" in message
    assert "roles/iam.serviceAccountUser" in message
    assert FIX in message and "--role=roles/iam.serviceAccountUser" in message
    assert f"--member=serviceAccount:{ENQUEUER}" in message


def test_the_library_names_the_missing_act_as_and_the_fix(enforcing, settings):
    with pytest.raises(PermissionDenied) as e:
        Enqueuer(settings).enqueue(EnqueueRequest(service="brain", payload=BRAIN), as_admin())
    assert e.value.http_status == 403 and e.value.code == "permission_denied"
    assert_names_the_fix(e.value.message)
    assert queued(enforcing) == []


def test_the_api_answers_403_with_the_fix(enforcing, settings):
    with serving(create_app(settings)) as url:
        r = httpx.post(url + "/enqueue", json={"service": "brain", "payload": BRAIN},
                       headers=bearer(enforcing.http_url, "operator@local-project.test",
                                      settings.api_audience or ""), timeout=20)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["ok"] is False and body["error"]["code"] == "permission_denied"
    assert_names_the_fix(body["error"]["message"])
    assert queued(enforcing) == []


def test_once_granted_the_same_job_is_enqueued(enforcing, settings):
    iam = iam_admin_v1.IAMClient(
        transport=IAMGrpcTransport(channel=grpc.insecure_channel(enforcing.target)))
    account = f"projects/-/serviceAccounts/{CALLER}"
    before = iam.get_iam_policy(resource=account, metadata=AS_OPERATOR)
    policy = policy_pb2.Policy()
    policy.CopyFrom(before)
    policy.bindings.add(role="roles/iam.serviceAccountUser",
                        members=[f"serviceAccount:{ENQUEUER}"])
    after = iam.set_iam_policy(request={"resource": account, "policy": policy},
                               metadata=AS_OPERATOR)
    created: list[str] = []
    try:
        result = Enqueuer(settings).enqueue(EnqueueRequest(service="brain", payload=BRAIN),
                                            as_admin())
        created.append(result.task)
        assert queued(enforcing) == [result.task]
    finally:  # as it was: the other tests expect no binding and an empty queue
        for task in created:
            enforcing.client().delete_task(name=task)
        del after.bindings[:]
        iam.set_iam_policy(request={"resource": account, "policy": after}, metadata=AS_OPERATOR)
