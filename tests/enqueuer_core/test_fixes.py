"""The Fix of a failing check against a real emulator enforcing IAM: an invoker binding removed
makes diagnostics fail `invoker`; its Fix is exactly setup's one change that restores it;
a viewer or an operator is refused before anything changes; an admin applies it, leaving one
audit line that names the check and the worker, and the check passes again. What setup cannot
repair has no Fix."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from google.iam.v1 import policy_pb2

from enqueuer_core import iam_policies
from enqueuer_core.access import Acting, Action, local_policy
from enqueuer_core.diagnose import CheckResult, diagnose
from enqueuer_core.diagnose.fixes import FIXABLE, apply_fix, fix_for
from enqueuer_core.errors import Forbidden
from enqueuer_core.setup import SetupClients
from tests.acting import as_admin
from tests.enqueuer_core.test_setup import (
    CALLER,
    DASHBOARD_SA,
    LOCATION,
    PROJECT,
    REGION,
    SetupStack,
    set_up,
)

BRAIN = f"{LOCATION}/services/brain"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[SetupStack]:
    with set_up(tmp_path_factory.mktemp("fixes")) as stack:
        yield stack


def results(stack: SetupStack, **overrides: object) -> dict[str, CheckResult]:
    return {r.check: r for r in diagnose(stack.settings(**overrides), ["brain"])}


def audit_lines(err: str) -> list[dict]:
    return [json.loads(line)["audit"] for line in err.splitlines() if '"audit"' in line]


def remove_invoker(c: SetupClients) -> None:
    policy = c.run.get_iam_policy(request=iam_policies.policy_request(BRAIN))
    broken = policy_pb2.Policy(version=policy.version, etag=policy.etag)
    broken.bindings.extend(b for b in policy.bindings if b.role != "roles/run.invoker")
    c.run.set_iam_policy(request={"resource": BRAIN, "policy": broken})


def test_a_removed_invoker_binding_is_fixed_by_an_admin_only(stack, capsys):
    settings = stack.settings()
    c = SetupClients.build(settings)
    remove_invoker(c)
    failing = results(stack)["invoker"]
    assert failing.status == "fail"

    fix = fix_for(settings, failing, c)
    assert fix is not None and fix.result == failing
    (change,) = fix.plan.changes
    assert (change.status, change.item.resource, change.item.role, change.item.member) == (
        "add", BRAIN, "roles/run.invoker", f"serviceAccount:{CALLER}")
    assert change.gcloud == (
        f"gcloud run services add-iam-policy-binding brain --region={REGION} "
        f"--member=serviceAccount:{CALLER} --role=roles/run.invoker --project={PROJECT}")
    # A probe the door answered 403 is repaired by the same change.
    door = f"GET {settings.url_brain} as {CALLER}, audience {settings.aud_brain}"
    probe = CheckResult("brain", "probe", "The door lets the caller in", "fail",
                        f"{door}: Cloud Run's door answered 403 (no run.routes.invoke)", None)
    assert [ch.what for ch in fix_for(settings, probe, c).plan.changes] == [change.what]

    capsys.readouterr()
    for who in ("user:viewer@local-project.test", "user:operator@local-project.test"):
        with pytest.raises(Forbidden, match="admin"):
            apply_fix(fix, c, Acting(who, local_policy(), "cli"))
    assert results(stack)["invoker"].status == "fail"  # nothing changed
    refused = audit_lines(capsys.readouterr().err)
    assert [(a["outcome"], a["fix"], a["worker"]) for a in refused] == [
        ("refused", "invoker", "brain")] * 2

    assert apply_fix(fix, c, as_admin()) == [change]
    (line,) = audit_lines(capsys.readouterr().err)
    assert (line["action"], line["outcome"], line["fix"], line["worker"]) == (
        Action.SETUP.value, "ok", "invoker", "brain")
    assert line["applied"] == [f"add {change.what}"]

    passing = results(stack)["invoker"]
    assert passing.status == "pass"
    assert fix_for(settings, passing, c) is None
    assert fix_for(settings, failing, c) is None  # setup holds it all already


def test_what_setup_cannot_repair_has_no_fix(stack):
    settings = stack.settings()
    c = SetupClients.build(settings)
    wrong = results(stack, aud_brain="https://elsewhere.example.com")["audience_accepted"]
    assert wrong.status == "fail" and wrong.check not in FIXABLE
    assert fix_for(settings, wrong, c) is None
    # A 401 at the door is the audience's: nothing of setup's repairs it.
    probe = CheckResult("brain", "probe", "The door lets the caller in", "fail",
                        f"GET {settings.url_brain}: Cloud Run's door answered 401 (the "
                        "audience is not one brain accepts)", None)
    assert fix_for(settings, probe, c) is None
    assert {"invoker", "act_as", "create_tasks", "queue", "service_agent"} <= FIXABLE


def test_a_probe_that_could_not_mint_is_fixed_by_the_dashboards_grant(stack):
    settings = stack.settings()
    c = SetupClients.build(settings)
    caller = f"projects/{PROJECT}/serviceAccounts/{CALLER}"
    role = "roles/iam.serviceAccountOpenIdTokenCreator"
    policy = c.iam.get_iam_policy(request=iam_policies.policy_request(caller))
    broken = policy_pb2.Policy(version=policy.version, etag=policy.etag)
    broken.bindings.extend(b for b in policy.bindings if b.role != role)
    c.iam.set_iam_policy(request={"resource": caller, "policy": broken})
    dashboard = f"serviceAccount:{DASHBOARD_SA}"
    probe = CheckResult("brain", "probe", "The door lets the caller in", "unknown",
                        f"{dashboard} may not mint ID tokens as {CALLER}, so the door was not "
                        "tried", None)
    fix = fix_for(settings, probe, c)
    assert fix is not None
    assert [(ch.item.role, ch.item.member) for ch in fix.plan.changes] == [(role, dashboard)]
    apply_fix(fix, c, as_admin())
    assert fix_for(settings, probe, c) is None
