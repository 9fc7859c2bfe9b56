"""The service_agent check against a real emulator enforcing IAM: after `enqueuer setup` the
Cloud Tasks service agent may mint tokens as the caller account; without its grant the check
warns with the exact gcloud line, setup's plan has that one grant to add, and applying it
makes the check pass. A project-level roles/cloudtasks.serviceAgent counts when the project's
policy is readable; an unreadable account policy is unknown, with the role that reads it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.iam.v1 import policy_pb2

from enqueuer_core import clients, iam_policies
from enqueuer_core.diagnose import CheckResult, diagnose
from enqueuer_core.setup import SetupClients, apply_plan, make_plan
from tests.acting import as_admin
from tests.enqueuer_core.test_setup import (
    API_SA,
    CALLER,
    DASHBOARD_SA,
    PROJECT,
    SetupStack,
    set_up,
    tasks_agent,
)
from tests.gcloud_cli import check_command

CALLER_RESOURCE = f"projects/{PROJECT}/serviceAccounts/{CALLER}"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[SetupStack]:
    with set_up(tmp_path_factory.mktemp("agent")) as stack:
        yield stack


def check(stack: SetupStack, **clients_as: object) -> CheckResult:
    (result,) = [r for r in diagnose(stack.settings(), ["brain"], **clients_as)
                 if r.check == "service_agent"]
    return result


def change_policy(stack: SetupStack, resource: str, change) -> None:
    """A read-modify-write of ``resource``'s policy by the operator (a platform engineer)."""
    c = SetupClients.build(stack.settings())
    client = c.iam if "/serviceAccounts/" in resource else c.projects
    policy = client.get_iam_policy(request=iam_policies.policy_request(resource))
    changed = policy_pb2.Policy(version=policy.version, etag=policy.etag)
    changed.bindings.extend(change(policy.bindings))
    client.set_iam_policy(request={"resource": resource, "policy": changed})


def test_missing_grant_warns_with_the_command_and_setup_repairs_it(stack):
    agent = tasks_agent(stack)
    passed = check(stack)
    assert passed.status == "pass", passed
    assert passed.evidence == f"{agent.split(':', 1)[1]} holds {TOKEN_CREATOR} on {CALLER}"

    change_policy(stack, CALLER_RESOURCE,
                  lambda bindings: [b for b in bindings if b.role != TOKEN_CREATOR])
    warned = check(stack)
    assert warned.status == "warn", warned
    assert warned.fix == (f"gcloud iam service-accounts add-iam-policy-binding {CALLER} "
                          f"--member={agent} --role={TOKEN_CREATOR} --project={PROJECT}")
    check_command(warned.fix)
    assert "projects created before 19 March 2019" in warned.evidence
    # The dashboard's account cannot read the project's policy: the evidence says what it
    # could not see, rather than claiming the agent holds nothing anywhere.
    assert "the project's policy could not be read" in warned.evidence
    assert "resourcemanager.projects.getIamPolicy" in warned.evidence

    # Setup has exactly that one grant to make; once made, the check passes.
    settings = stack.settings()
    c = SetupClients.build(settings)
    plan = make_plan(settings, c)
    assert [(ch.status, ch.item.member, ch.item.role) for ch in plan.to_change] == [
        ("add", agent, TOKEN_CREATOR)]
    assert plan.to_change[0].gcloud == warned.fix
    apply_plan(plan, c, as_admin())
    assert check(stack).status == "pass"


def test_the_service_agent_role_on_a_readable_project_counts(stack):
    agent = tasks_agent(stack)
    project = f"projects/{PROJECT}"

    added = ("roles/cloudtasks.serviceAgent", "roles/browser")

    def without_project_grants(bindings):
        return [b for b in bindings if b.role not in added]

    def with_project_grants(bindings):
        return [*without_project_grants(bindings),
                policy_pb2.Binding(role="roles/cloudtasks.serviceAgent", members=[agent]),
                # The dashboard's account may read the project's policy here.
                policy_pb2.Binding(role="roles/browser",
                                   members=[f"serviceAccount:{DASHBOARD_SA}"])]

    def without_token_creator(bindings):
        return [b for b in bindings if b.role != TOKEN_CREATOR]

    change_policy(stack, project, with_project_grants)
    change_policy(stack, CALLER_RESOURCE, without_token_creator)
    try:
        got = check(stack)
        assert got.status == "pass", got
        assert got.evidence.endswith(f"holds roles/cloudtasks.serviceAgent on the project "
                                     f"{PROJECT}")
    finally:
        change_policy(stack, project, without_project_grants)
        c = SetupClients.build(stack.settings())
        apply_plan(make_plan(stack.settings(), c), c, as_admin())


def test_an_account_policy_it_cannot_read_is_unknown_with_the_role_that_reads_it(stack):
    # The API's account holds no roles/iam.serviceAccountViewer on the caller account.
    settings = stack.settings()
    api = f"serviceAccount:{API_SA}"
    got = check(stack, tasks_client=clients.tasks_client(settings, api),
                run_client=clients.run_client(settings, api),
                iam_client=clients.iam_client(settings, api))
    assert got.status == "unknown", got
    assert "iam.serviceAccounts.getIamPolicy" in got.evidence
    assert got.fix.startswith(f"gcloud iam service-accounts add-iam-policy-binding {CALLER} "
                              f"--member={api} --role=roles/iam.serviceAccountViewer "
                              f"--project={PROJECT}")
