"""Resource Manager v3 on the emulator through the official ProjectsClient: the project, its
IAM policy (the one that grants project-wide roles everywhere), and Google's refusals."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import resourcemanager_v3, tasks_v2
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.iam.v1 import iam_policy_pb2, policy_pb2

from tests.emulator.harness import (
    PARENT,
    PROJECT,
    RunningEmulator,
    emulator_on_disk,
)

ENQUEUER = f"serviceAccount:enqueuer@{PROJECT}.iam.gserviceaccount.com"  # the default caller
OPERATOR = "user:operator@example.com"  # roles/resourcemanager.projectIamAdmin
BROWSER = "user:browser@example.com"  # roles/browser: reads the policy, changes nothing
STRANGER = "user:stranger@example.com"  # holds nothing
AS = {who: [("x-emulator-principal", who)] for who in (OPERATOR, BROWSER, STRANGER)}
CONFIG = f"""
[iam]
enforce = true
principal = "{ENQUEUER}"
bindings = [
  {{ role = "roles/cloudtasks.enqueuer", members = ["{ENQUEUER}"] }},
  {{ role = "roles/resourcemanager.projectIamAdmin", members = ["{OPERATOR}"] }},
  {{ role = "roles/browser", members = ["{BROWSER}"] }},
]
"""
NAME = f"projects/{PROJECT}"


def denied(permission: str, name: str) -> str:
    return (f"Permission '{permission}' denied on resource "
            f"'//cloudresourcemanager.googleapis.com/{name}' (or it may not exist).")


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    with emulator_on_disk(tmp_path_factory.mktemp("rm"), CONFIG) as em:
        yield em


def projects_client(em: RunningEmulator) -> resourcemanager_v3.ProjectsClient:
    channel = grpc.insecure_channel(em.target)
    return resourcemanager_v3.ProjectsClient(transport=ProjectsGrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def projects(enforcing: RunningEmulator) -> resourcemanager_v3.ProjectsClient:
    return projects_client(enforcing)


def roles(policy: policy_pb2.Policy) -> dict[str, list[str]]:
    return {b.role: list(b.members) for b in policy.bindings}


def test_the_project_reads_as_google_answers_by_id_and_by_number(projects):
    project = projects.get_project(name=NAME)
    number = project.name.removeprefix("projects/")
    assert number.isdigit() and len(number) == 12
    assert project.project_id == PROJECT and project.display_name == PROJECT
    assert project.state == resourcemanager_v3.Project.State.ACTIVE
    assert project.create_time.timestamp() > 0
    assert projects.get_project(name=f"projects/{number}") == project
    # The number is the project's own: the same at every start.
    assert projects.get_iam_policy(resource=f"projects/{number}", metadata=AS[OPERATOR]) == \
        projects.get_iam_policy(resource=NAME, metadata=AS[OPERATOR])


def test_the_policy_is_the_configured_one_and_changes_take_effect_everywhere(enforcing,
                                                                             projects):
    tasks = enforcing.client()
    queue = f"{PARENT}/queues/granted-by-project"
    as_stranger = AS[STRANGER]
    with pytest.raises(gexc.PermissionDenied):
        tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue), metadata=as_stranger)

    first = projects.get_iam_policy(resource=NAME, metadata=AS[OPERATOR])
    assert roles(first)["roles/resourcemanager.projectIamAdmin"] == [OPERATOR]
    assert first.etag
    wanted = policy_pb2.Policy()
    wanted.CopyFrom(first)  # read-modify-write, with the etag just read
    wanted.bindings.add(role="roles/cloudtasks.queueAdmin", members=[STRANGER])
    written = projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=NAME, policy=wanted), metadata=AS[OPERATOR])
    assert roles(written)["roles/cloudtasks.queueAdmin"] == [STRANGER]
    assert written.etag != first.etag
    try:
        # Granted on the project, the stranger now administers queues.
        tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue), metadata=as_stranger)
        tasks.delete_queue(name=queue, metadata=as_stranger)
        # A writer that read before the change is refused, and changes nothing.
        with pytest.raises(gexc.Aborted) as e:
            projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
                resource=NAME, policy=first), metadata=AS[OPERATOR])
        assert "concurrent policy changes" in e.value.message
        assert projects.get_iam_policy(resource=NAME, metadata=AS[OPERATOR]) == written
    finally:
        restored = policy_pb2.Policy()
        restored.CopyFrom(first)
        restored.etag = written.etag
        projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=NAME, policy=restored), metadata=AS[OPERATOR])
    assert "roles/cloudtasks.queueAdmin" not in roles(
        projects.get_iam_policy(resource=NAME, metadata=AS[OPERATOR]))


def test_refusals_name_the_permission_in_resource_managers_words(projects):
    with pytest.raises(gexc.PermissionDenied) as e:
        projects.get_iam_policy(resource=NAME, metadata=AS[STRANGER])
    assert e.value.message == denied("resourcemanager.projects.getIamPolicy", NAME)
    # The browser reads the policy but may not change it.
    policy = projects.get_iam_policy(resource=NAME, metadata=AS[BROWSER])
    with pytest.raises(gexc.PermissionDenied) as e:
        projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=NAME, policy=policy), metadata=AS[BROWSER])
    assert e.value.message == denied("resourcemanager.projects.setIamPolicy", NAME)
    with pytest.raises(gexc.PermissionDenied) as e:
        projects.get_project(name=NAME, metadata=AS[STRANGER])
    assert e.value.message == denied("resourcemanager.projects.get", NAME)
    # The enqueuer's role lets it see the project, not its policy.
    assert projects.get_project(name=NAME).project_id == PROJECT
    with pytest.raises(gexc.PermissionDenied):
        projects.get_iam_policy(resource=NAME)


def test_another_project_is_denied_to_everyone_as_if_hidden(projects):
    other = "projects/someone-elses"
    with pytest.raises(gexc.PermissionDenied) as e:
        projects.get_iam_policy(resource=other, metadata=AS[OPERATOR])
    assert e.value.message == denied("resourcemanager.projects.getIamPolicy", other)
    with pytest.raises(gexc.PermissionDenied) as e:
        projects.get_project(name=other, metadata=AS[OPERATOR])
    assert e.value.message == denied("resourcemanager.projects.get", other)
    got = projects.test_iam_permissions(resource=other, permissions=[
        "resourcemanager.projects.get"], metadata=AS[OPERATOR])
    assert list(got.permissions) == []


def test_test_permissions_answers_what_the_caller_holds(projects):
    asked = ["resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy",
             "cloudtasks.queues.create", "cloudtasks.tasks.create"]
    assert list(projects.test_iam_permissions(resource=NAME, permissions=asked,
                                              metadata=AS[OPERATOR]).permissions) == asked[:2]
    assert list(projects.test_iam_permissions(resource=NAME, permissions=asked,
                                              metadata=AS[BROWSER]).permissions) == asked[:1]
    assert list(projects.test_iam_permissions(resource=NAME, permissions=asked)
                .permissions) == ["cloudtasks.tasks.create"]
    assert list(projects.test_iam_permissions(resource=NAME, permissions=asked,
                                              metadata=AS[STRANGER]).permissions) == []
    with pytest.raises(gexc.InvalidArgument) as e:
        projects.test_iam_permissions(resource=NAME, permissions=["storage.objects.get"])
    assert e.value.message == "Permission storage.objects.get is not valid for this resource."


def test_bad_input_gets_googles_answer(projects):
    public = policy_pb2.Policy(bindings=[policy_pb2.Binding(
        role="roles/viewer", members=["allUsers"])])
    with pytest.raises(gexc.InvalidArgument) as e:
        projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=NAME, policy=public), metadata=AS[OPERATOR])
    assert e.value.message == "Request contains an invalid argument."
    with pytest.raises(gexc.InvalidArgument) as e:
        projects.get_project(name="local-project")
    assert "projects/PROJECT_ID" in e.value.message
    assert "allUsers" not in str(roles(projects.get_iam_policy(resource=NAME,
                                                               metadata=AS[OPERATOR])))


def test_other_methods_are_unimplemented(projects):
    with pytest.raises(gexc.MethodNotImplemented):
        projects.delete_project(name=NAME, metadata=AS[OPERATOR])


def test_without_enforcement_everyone_reads_and_writes_the_policy(emulator):
    projects = projects_client(emulator)
    name = f"projects/{PROJECT}"
    policy = projects.get_iam_policy(resource=name, metadata=AS[STRANGER])
    assert list(projects.test_iam_permissions(
        resource=name, permissions=["resourcemanager.projects.setIamPolicy"],
        metadata=AS[STRANGER]).permissions) == ["resourcemanager.projects.setIamPolicy"]
    assert projects.get_project(name=name).project_id == PROJECT
    assert projects.get_iam_policy(resource=name) == policy


def test_a_configured_project_number_is_the_one_google_answers(tmp_path):
    # The dev stack fixes the number so that it can name the project's service agents
    # (service-NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com) in its bindings.
    with emulator_on_disk(tmp_path, 'project_number = "123456789012"\n') as em:
        projects = projects_client(em)
        assert projects.get_project(name=NAME).name == "projects/123456789012"
        assert projects.get_project(name="projects/123456789012").project_id == PROJECT
