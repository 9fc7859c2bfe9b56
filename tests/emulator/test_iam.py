"""IAM on the emulator through the official clients: service-account policies over the IAM
Admin API, IAM Admin and Cloud Tasks refusing where Google refuses, in Google's words."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1, tasks_v2
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.iam.v1 import iam_policy_pb2, policy_pb2

from tests.emulator.harness import PARENT, PROJECT, RunningEmulator, http_task, start_emulator

ENQUEUER = f"enqueuer@{PROJECT}.iam.gserviceaccount.com"  # the configured caller
STRANGER = f"stranger@{PROJECT}.iam.gserviceaccount.com"  # holds nothing
CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"  # the tokens' account
SCRATCH = f"scratch@{PROJECT}.iam.gserviceaccount.com"  # for policy edits
USER = "roles/iam.serviceAccountUser"
OPERATOR = "user:operator@example.com"  # a platform engineer: changes queues and accounts
EDITOR = "user:editor@example.com"  # roles/editor: changes things, not who may
AS_STRANGER = [("x-emulator-principal", f"serviceAccount:{STRANGER}")]
AS_OPERATOR = [("x-emulator-principal", OPERATOR)]
AS_EDITOR = [("x-emulator-principal", EDITOR)]
CONFIG = f"""
[iam]
enforce = true
principal = "serviceAccount:{ENQUEUER}"

[[iam.bindings]]
role = "roles/cloudtasks.enqueuer"
members = ["serviceAccount:{ENQUEUER}"]

[[iam.bindings]]
role = "roles/cloudtasks.admin"
members = ["{OPERATOR}"]

[[iam.bindings]]
role = "roles/iam.serviceAccountAdmin"
members = ["{OPERATOR}"]

[[iam.bindings]]
role = "roles/editor"
members = ["{EDITOR}"]

[[queues]]
name = "iam-queue"
paused = true

[[service_accounts]]
email = "{CALLER}"

[[service_accounts.bindings]]
role = "{USER}"
members = ["serviceAccount:{ENQUEUER}"]

[[service_accounts]]
email = "{SCRATCH}"

[[service_accounts.bindings]]
role = "roles/iam.serviceAccountTokenCreator"
members = ["user:ops@example.com"]
"""
QUEUE = f"{PARENT}/queues/iam-queue"


def actas_denied(email: str) -> str:
    return (f'The principal (user or service account) lacks IAM permission '
            f'"iam.serviceAccounts.actAs" for the resource "{email}" (or the resource may '
            f'not exist).')


def create_denied(queue: str) -> str:
    return (f'The principal (user or service account) lacks IAM permission '
            f'"cloudtasks.tasks.create" for the resource "{queue}" (or the resource may not '
            f'exist).')


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("iam"), CONFIG)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def iam(enforcing: RunningEmulator) -> iam_admin_v1.IAMClient:
    channel = grpc.insecure_channel(enforcing.target)
    return iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def tasks(enforcing: RunningEmulator) -> tasks_v2.CloudTasksClient:
    return enforcing.client()


def oidc_task(email: str = CALLER) -> tasks_v2.Task:
    return http_task("http://127.0.0.1:9/work",
                     oidc={"service_account_email": email, "audience": "http://127.0.0.1:9"})


def fresh_queue(tasks: tasks_v2.CloudTasksClient, name: str) -> str:
    queue = f"{PARENT}/queues/{name}"
    tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue), metadata=AS_OPERATOR)
    tasks.pause_queue(name=queue)  # what is created stays there to be counted
    return queue


def members(policy: policy_pb2.Policy, role: str) -> list[str]:
    return [m for b in policy.bindings if b.role == role for m in b.members]


def without(policy: policy_pb2.Policy, role: str) -> policy_pb2.Policy:
    out = policy_pb2.Policy()
    out.CopyFrom(policy)
    del out.bindings[:]
    out.bindings.extend(b for b in policy.bindings if b.role != role)
    return out


# -- service accounts and their policies over the IAM Admin API ---------------------------


def test_configured_accounts_are_listed_and_found_by_every_name(iam):
    listed = iam.list_service_accounts(name=f"projects/{PROJECT}", metadata=AS_OPERATOR)
    by_email = {a.email: a for a in listed}
    assert list(by_email) == [CALLER, SCRATCH]
    caller = by_email[CALLER]
    assert caller.name == f"projects/{PROJECT}/serviceAccounts/{CALLER}"
    assert caller.project_id == PROJECT and caller.display_name == "Caller"
    assert len(caller.unique_id) == 21 and caller.unique_id.isdigit()
    assert caller.unique_id != by_email[SCRATCH].unique_id
    for name in (f"projects/-/serviceAccounts/{CALLER}",
                 f"projects/{PROJECT}/serviceAccounts/{CALLER}",
                 f"projects/-/serviceAccounts/{caller.unique_id}"):
        assert iam.get_service_account(name=name, metadata=AS_OPERATOR) == caller


@pytest.mark.parametrize("project", ["-", PROJECT])
def test_an_unknown_account_is_not_found_as_google_says(iam, project):
    name = f"projects/{project}/serviceAccounts/ghost@{PROJECT}.iam.gserviceaccount.com"
    calls = [  # by someone who may see accounts: IAM says no first to anyone else
        lambda: iam.get_service_account(name=name, metadata=AS_OPERATOR),
        lambda: iam.get_iam_policy(resource=name, metadata=AS_OPERATOR),
        lambda: iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=name, policy=policy_pb2.Policy()), metadata=AS_OPERATOR),
        lambda: iam.test_iam_permissions(resource=name,
                                         permissions=["iam.serviceAccounts.actAs"]),
    ]
    for call in calls:
        with pytest.raises(gexc.NotFound) as e:
            call()
        assert e.value.message == "Unknown service account"


def test_a_policy_is_read_and_written_with_its_etag_under_both_names(iam):
    short, full = (f"projects/-/serviceAccounts/{SCRATCH}",
                   f"projects/{PROJECT}/serviceAccounts/{SCRATCH}")
    first = iam.get_iam_policy(resource=short, metadata=AS_OPERATOR)
    assert members(first, "roles/iam.serviceAccountTokenCreator") == ["user:ops@example.com"]
    assert iam.get_iam_policy(resource=full, metadata=AS_OPERATOR) == first

    wanted = policy_pb2.Policy()
    wanted.CopyFrom(first)
    wanted.bindings.add(role=USER, members=[f"serviceAccount:{STRANGER}"])
    written = iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=full, policy=wanted), metadata=AS_OPERATOR)
    assert members(written, USER) == [f"serviceAccount:{STRANGER}"]
    assert written.etag and written.etag != first.etag
    assert iam.get_iam_policy(resource=short, metadata=AS_OPERATOR) == written

    # A writer that read before the change is refused, and changes nothing.
    with pytest.raises(gexc.Aborted) as e:
        iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=short, policy=first), metadata=AS_OPERATOR)
    assert "concurrent policy changes" in e.value.message
    assert iam.get_iam_policy(resource=full, metadata=AS_OPERATOR) == written

    # A role that means nothing on a service account is refused as Google refuses it.
    bad = policy_pb2.Policy(bindings=[policy_pb2.Binding(
        role="roles/cloudtasks.enqueuer", members=[f"serviceAccount:{STRANGER}"])])
    with pytest.raises(gexc.InvalidArgument) as e:
        iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=full, policy=bad), metadata=AS_OPERATOR)
    assert e.value.message == "Role roles/cloudtasks.enqueuer is not supported for this resource."


def test_test_permissions_answers_what_the_caller_holds_on_the_account(iam):
    asked = ["iam.serviceAccounts.actAs", "iam.serviceAccounts.getOpenIdToken",
             "iam.serviceAccounts.get"]
    for name in (f"projects/-/serviceAccounts/{CALLER}",
                 f"projects/{PROJECT}/serviceAccounts/{CALLER}"):
        held = iam.test_iam_permissions(resource=name, permissions=asked)
        assert held.permissions == ["iam.serviceAccounts.actAs", "iam.serviceAccounts.get"]
        other = iam.test_iam_permissions(resource=name, permissions=asked, metadata=AS_STRANGER)
        assert other.permissions == []
    with pytest.raises(gexc.InvalidArgument) as e:
        iam.test_iam_permissions(resource=f"projects/-/serviceAccounts/{CALLER}",
                                 permissions=["cloudtasks.tasks.create"])
    assert "cloudtasks.tasks.create" in e.value.message


def test_other_iam_admin_methods_are_unimplemented(iam):
    with pytest.raises(gexc.MethodNotImplemented):
        iam.delete_service_account(name=f"projects/-/serviceAccounts/{SCRATCH}",
                                   metadata=AS_OPERATOR)


def iam_denied(permission: str, kind: str, name: str) -> str:
    return f"Permission {permission} is required to perform this operation on {kind} {name}."


def test_iam_admin_refuses_in_iams_words_before_saying_whether_an_account_exists(iam):
    for email in (CALLER, f"ghost@{PROJECT}.iam.gserviceaccount.com"):
        name = f"projects/-/serviceAccounts/{email}"
        refusals = {
            "iam.serviceAccounts.get": lambda n=name: iam.get_service_account(
                name=n, metadata=AS_STRANGER),
            "iam.serviceAccounts.getIamPolicy": lambda n=name: iam.get_iam_policy(
                resource=n, metadata=AS_STRANGER),
            "iam.serviceAccounts.setIamPolicy": lambda n=name: iam.set_iam_policy(
                request=iam_policy_pb2.SetIamPolicyRequest(resource=n, policy=policy_pb2.Policy()),
                metadata=AS_STRANGER),
        }
        for permission, call in refusals.items():
            with pytest.raises(gexc.PermissionDenied) as e:
                call()
            assert e.value.message == iam_denied(permission, "service account", name)
    project = f"projects/{PROJECT}"
    with pytest.raises(gexc.PermissionDenied) as e:
        iam.list_service_accounts(name=project, metadata=AS_STRANGER)
    assert e.value.message == iam_denied("iam.serviceAccounts.list", "project", project)
    # Nothing changed: the operator still reads the account's configured policy.
    policy = iam.get_iam_policy(resource=f"projects/-/serviceAccounts/{CALLER}",
                                metadata=AS_OPERATOR)
    assert members(policy, USER) == [f"serviceAccount:{ENQUEUER}"]


def test_an_editor_reads_policies_but_may_not_set_them(iam):
    # Google's roles/editor holds no setIamPolicy permission.
    name = f"projects/-/serviceAccounts/{SCRATCH}"
    policy = iam.get_iam_policy(resource=name, metadata=AS_EDITOR)
    assert iam.get_service_account(name=name, metadata=AS_EDITOR).email == SCRATCH
    with pytest.raises(gexc.PermissionDenied) as e:
        iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=name, policy=policy), metadata=AS_EDITOR)
    assert e.value.message == iam_denied("iam.serviceAccounts.setIamPolicy", "service account",
                                         name)


# -- CreateTask, enforced as Cloud Tasks enforces it ---------------------------------------


def test_create_task_needs_act_as_on_the_token_account(iam, tasks):
    queue = fresh_queue(tasks, "iam-actas")
    account = f"projects/-/serviceAccounts/{CALLER}"
    granted = iam.get_iam_policy(resource=account, metadata=AS_OPERATOR)
    assert members(granted, USER) == [f"serviceAccount:{ENQUEUER}"]

    revoked = iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=account, policy=without(granted, USER)), metadata=AS_OPERATOR)
    try:
        with pytest.raises(gexc.PermissionDenied) as e:
            tasks.create_task(parent=queue, task=oidc_task())
        assert e.value.message == actas_denied(CALLER)
        assert list(tasks.list_tasks(parent=queue)) == []
        # Only a task that carries a token needs the account.
        plain = tasks.create_task(parent=queue, task=http_task("http://127.0.0.1:9/work"))
    finally:
        restored = iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=account, policy=granted_again(revoked)), metadata=AS_OPERATOR)
    assert members(restored, USER) == [f"serviceAccount:{ENQUEUER}"]

    created = tasks.create_task(parent=queue, task=oidc_task())
    assert created.http_request.oidc_token.service_account_email == CALLER
    assert {t.name for t in tasks.list_tasks(parent=queue)} == {plain.name, created.name}


def granted_again(policy: policy_pb2.Policy) -> policy_pb2.Policy:
    out = policy_pb2.Policy()
    out.CopyFrom(policy)  # keeps the etag just read: a plain read-modify-write
    out.bindings.add(role=USER, members=[f"serviceAccount:{ENQUEUER}"])
    return out


def test_an_oauth_token_needs_act_as_too(tasks):
    task = http_task("http://127.0.0.1:9/work")
    task.http_request.oauth_token = tasks_v2.OAuthToken(service_account_email=SCRATCH)
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_task(parent=QUEUE, task=task)
    assert e.value.message == actas_denied(SCRATCH)


def test_create_task_needs_tasks_create_and_the_metadata_picks_the_caller(tasks):
    queue = fresh_queue(tasks, "iam-create")
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_task(parent=queue, task=http_task("http://127.0.0.1:9/work"),
                          metadata=AS_STRANGER)
    assert e.value.message == create_denied(queue)
    # A missing queue says the same to who may not create tasks: nothing leaks.
    ghost = f"{PARENT}/queues/never-made"
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_task(parent=ghost, task=http_task("http://127.0.0.1:9/work"),
                          metadata=AS_STRANGER)
    assert e.value.message == create_denied(ghost)
    assert list(tasks.list_tasks(parent=queue)) == []

    # Granted on this queue only, the stranger may create plain tasks there...
    policy = tasks.get_iam_policy(resource=queue, metadata=AS_OPERATOR)
    policy.bindings.add(role="roles/cloudtasks.enqueuer", members=[f"serviceAccount:{STRANGER}"])
    tasks.set_iam_policy(request={"resource": queue, "policy": policy}, metadata=AS_OPERATOR)
    plain = tasks.create_task(parent=queue, task=http_task("http://127.0.0.1:9/work"),
                              metadata=AS_STRANGER)
    # ...but not act as the token account, which the configured caller may.
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_task(parent=queue, task=oidc_task(), metadata=AS_STRANGER)
    assert e.value.message == actas_denied(CALLER)
    assert [t.name for t in tasks.list_tasks(parent=queue)] == [plain.name]


def test_queue_test_permissions_answers_what_the_caller_holds(tasks):
    asked = ["cloudtasks.tasks.create", "cloudtasks.tasks.delete", "cloudtasks.queues.get"]
    held = tasks.test_iam_permissions(resource=QUEUE, permissions=asked)
    assert held.permissions == ["cloudtasks.tasks.create"]
    assert tasks.test_iam_permissions(resource=QUEUE, permissions=asked,
                                      metadata=AS_STRANGER).permissions == []


# -- with enforcement off (the default), IAM stays out of the way --------------------------


def test_without_enforcement_everything_is_allowed(emulator, make_queue):
    client = emulator.client()
    queue = make_queue(paused=True)
    task = oidc_task(f"nobody@{PROJECT}.iam.gserviceaccount.com")
    created = client.create_task(parent=queue, task=task, metadata=AS_STRANGER)
    assert [t.name for t in client.list_tasks(parent=queue)] == [created.name]
    asked = ["cloudtasks.tasks.create", "cloudtasks.tasks.delete"]
    assert client.test_iam_permissions(resource=queue, permissions=asked,
                                       metadata=AS_STRANGER).permissions == asked
