"""CreateServiceAccount on the emulator through the official IAM client: Google's checks and
words, and a created account that is an account like any other, after a restart too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1, tasks_v2
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.iam.v1 import iam_policy_pb2

from tests.emulator.harness import (
    PARENT,
    PROJECT,
    RunningEmulator,
    emulator_on_disk,
    http_task,
    start_emulator,
)

ENQUEUER = f"enqueuer@{PROJECT}.iam.gserviceaccount.com"  # the default caller
CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"  # configured
OPERATOR = "user:operator@example.com"  # roles/iam.serviceAccountAdmin on the project
AS_OPERATOR = [("x-emulator-principal", OPERATOR)]
CONFIG = f"""
[iam]
enforce = true
principal = "serviceAccount:{ENQUEUER}"
bindings = [
  {{ role = "roles/cloudtasks.enqueuer", members = ["serviceAccount:{ENQUEUER}"] }},
  {{ role = "roles/iam.serviceAccountAdmin", members = ["{OPERATOR}"] }},
]

[[queues]]
name = "sa-queue"
paused = true

[[service_accounts]]
email = "{CALLER}"
"""
PROJECT_NAME = f"projects/{PROJECT}"


def iam_client(em: RunningEmulator) -> iam_admin_v1.IAMClient:
    channel = grpc.insecure_channel(em.target)
    return iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sa")


@pytest.fixture(scope="module")
def enforcing(state: Path) -> Iterator[RunningEmulator]:
    with emulator_on_disk(state, CONFIG) as em:
        yield em


@pytest.fixture(scope="module")
def iam(enforcing: RunningEmulator) -> iam_admin_v1.IAMClient:
    return iam_client(enforcing)


def create(iam: iam_admin_v1.IAMClient, account_id: str, **fields: str) -> object:
    return iam.create_service_account(request=iam_admin_v1.CreateServiceAccountRequest(
        name=PROJECT_NAME, account_id=account_id,
        service_account=iam_admin_v1.ServiceAccount(**fields)), metadata=AS_OPERATOR)


def test_a_created_account_is_found_listed_and_its_policy_set(iam):
    made = create(iam, "dashboard-sa", display_name="Enqueuer dashboard",
                  description="Reads queues for the dashboard")
    email = f"dashboard-sa@{PROJECT}.iam.gserviceaccount.com"
    assert made.email == email and made.project_id == PROJECT
    assert made.name == f"{PROJECT_NAME}/serviceAccounts/{email}"
    assert made.display_name == "Enqueuer dashboard"
    assert made.description == "Reads queues for the dashboard"
    assert len(made.unique_id) == 21 and made.unique_id.isdigit()
    for name in (f"projects/-/serviceAccounts/{email}", made.name,
                 f"projects/-/serviceAccounts/{made.unique_id}"):
        assert iam.get_service_account(name=name, metadata=AS_OPERATOR) == made
    listed = [a.email for a in iam.list_service_accounts(name=PROJECT_NAME,
                                                         metadata=AS_OPERATOR)]
    assert listed[0] == CALLER and email in listed

    policy = iam.get_iam_policy(resource=made.name, metadata=AS_OPERATOR)
    assert list(policy.bindings) == []
    policy.bindings.add(role="roles/iam.serviceAccountUser",
                        members=[f"serviceAccount:{ENQUEUER}"])
    iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=made.name, policy=policy), metadata=AS_OPERATOR)
    assert list(iam.test_iam_permissions(resource=made.name, permissions=[
        "iam.serviceAccounts.actAs"]).permissions) == ["iam.serviceAccounts.actAs"]


def test_create_task_may_act_as_a_created_account_once_granted(enforcing, iam):
    made = create(iam, "token-maker")
    tasks = enforcing.client()
    queue = f"{PARENT}/queues/sa-queue"
    task = http_task("http://127.0.0.1:9/work",
                     oidc={"service_account_email": made.email, "audience": "http://127.0.0.1:9"})
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_task(parent=queue, task=task)
    assert '"iam.serviceAccounts.actAs"' in e.value.message and made.email in e.value.message
    policy = iam.get_iam_policy(resource=made.name, metadata=AS_OPERATOR)
    policy.bindings.add(role="roles/iam.serviceAccountUser",
                        members=[f"serviceAccount:{ENQUEUER}"])
    iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=made.name, policy=policy), metadata=AS_OPERATOR)
    created = tasks.create_task(parent=queue, task=task)
    assert created.http_request.oidc_token.service_account_email == made.email
    tasks.delete_task(name=created.name)


def test_an_existing_account_is_refused_with_googles_words(iam):
    create(iam, "twice-made", display_name="first")
    for account_id in ("twice-made", "caller"):  # created over the API, configured
        with pytest.raises(gexc.AlreadyExists) as e:
            create(iam, account_id, display_name="second")
        assert e.value.message == (f"Service account {account_id} already exists within "
                                   f"project {PROJECT_NAME}.")
    email = f"twice-made@{PROJECT}.iam.gserviceaccount.com"
    got = iam.get_service_account(name=f"projects/-/serviceAccounts/{email}",
                                  metadata=AS_OPERATOR)
    assert got.display_name == "first"
    configured = iam.get_service_account(name=f"projects/-/serviceAccounts/{CALLER}",
                                         metadata=AS_OPERATOR)
    assert configured.display_name == "Caller"


@pytest.mark.parametrize(("account_id", "message"), [
    ("short", 'The account ID "short" does not have a length between 6 and 30.'),
    ("a" * 31, f'The account ID "{"a" * 31}" does not have a length between 6 and 30.'),
    ("tenant_sales", r"tenant_sales does not match [a-zA-Z][a-zA-Z\d\-]*[a-zA-Z\d]."),
    ("1starts-with-digit", r"1starts-with-digit does not match [a-zA-Z][a-zA-Z\d\-]*[a-zA-Z\d]."),
    ("ends-with-", r"ends-with- does not match [a-zA-Z][a-zA-Z\d\-]*[a-zA-Z\d]."),
])
def test_a_bad_account_id_gets_googles_message(iam, account_id, message):
    with pytest.raises(gexc.InvalidArgument) as e:
        create(iam, account_id)
    assert e.value.message == message


def test_bad_parents_and_refusals(iam):
    with pytest.raises(gexc.InvalidArgument) as e:
        iam.create_service_account(name="projects/-", account_id="newbie-sa",
                                   metadata=AS_OPERATOR)
    assert "projects/PROJECT_ID" in e.value.message
    refusal = ("Permission iam.serviceAccounts.create is required to perform this operation "
               "on project {}.")
    # The default caller, the enqueuer, may not create accounts.
    with pytest.raises(gexc.PermissionDenied) as e:
        iam.create_service_account(name=PROJECT_NAME, account_id="newbie-sa")
    assert e.value.message == refusal.format(PROJECT_NAME)
    # A project the emulator does not have, whoever asks.
    with pytest.raises(gexc.PermissionDenied) as e:
        iam.create_service_account(name="projects/elsewhere", account_id="newbie-sa",
                                   metadata=AS_OPERATOR)
    assert e.value.message == refusal.format("projects/elsewhere")
    with pytest.raises(gexc.NotFound):
        iam.get_service_account(name=f"projects/-/serviceAccounts/newbie-sa@{PROJECT}"
                                ".iam.gserviceaccount.com", metadata=AS_OPERATOR)


def test_created_accounts_outlive_a_restart(enforcing, state):
    """Last in the module: restarts the emulator on the same state."""
    made = create(iam_client(enforcing), "survivor", display_name="Survivor")
    assert enforcing.stop() == 0, "".join(enforcing.stderr)
    again = start_emulator(state, CONFIG, db=enforcing.db)
    try:
        iam = iam_client(again)
        assert iam.get_service_account(name=made.name, metadata=AS_OPERATOR) == made
        listed = [a.email for a in iam.list_service_accounts(name=PROJECT_NAME,
                                                             metadata=AS_OPERATOR)]
        assert listed[0] == CALLER and made.email in listed
        tasks = again.client()
        assert tasks.get_queue(name=f"{PARENT}/queues/sa-queue").state == \
            tasks_v2.Queue.State.PAUSED
    finally:
        assert again.stop() == 0, "".join(again.stderr)
