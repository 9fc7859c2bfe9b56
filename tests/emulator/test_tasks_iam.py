"""Cloud Tasks' admin calls under IAM, through the official client: who may create, change,
delete a queue and read or set its policy, in Cloud Tasks' words; queue policies from the
configuration file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import field_mask_pb2

from tests.emulator.harness import (
    PARENT,
    PROJECT,
    RunningEmulator,
    emulator_on_disk,
    http_task,
    start_emulator,
)

ENQUEUER = f"serviceAccount:enqueuer@{PROJECT}.iam.gserviceaccount.com"  # the default caller
OPERATOR = "user:operator@example.com"  # roles/cloudtasks.admin on the project
QUEUE_ADMIN = "user:queues@example.com"  # roles/cloudtasks.queueAdmin on the project
STRANGER = "user:stranger@example.com"  # holds nothing on the project
API = f"serviceAccount:api@{PROJECT}.iam.gserviceaccount.com"  # granted on one queue by file
AS = {who: [("x-emulator-principal", who)] for who in (OPERATOR, QUEUE_ADMIN, STRANGER, API)}
CONFIG = f"""
[iam]
enforce = true
principal = "{ENQUEUER}"
bindings = [
  {{ role = "roles/cloudtasks.enqueuer", members = ["{ENQUEUER}"] }},
  {{ role = "roles/cloudtasks.admin", members = ["{OPERATOR}"] }},
  {{ role = "roles/cloudtasks.queueAdmin", members = ["{QUEUE_ADMIN}"] }},
]

[[queues]]
name = "bound-by-file"
paused = true

[[queues.bindings]]
role = "roles/cloudtasks.enqueuer"
members = ["{API}"]

[[queues.bindings]]
role = "roles/cloudtasks.viewer"
members = ["{API}", "{STRANGER}"]

[[queues]]
name = "left-alone"
paused = true
"""
BOUND, LEFT = f"{PARENT}/queues/bound-by-file", f"{PARENT}/queues/left-alone"


def refused(permission: str, resource: str) -> str:
    return (f'The principal (user or service account) lacks IAM permission "{permission}" '
            f'for the resource "{resource}" (or the resource may not exist).')


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tasks-iam")


@pytest.fixture(scope="module")
def enforcing(state: Path) -> Iterator[RunningEmulator]:
    with emulator_on_disk(state, CONFIG) as em:
        yield em


@pytest.fixture(scope="module")
def tasks(enforcing: RunningEmulator) -> tasks_v2.CloudTasksClient:
    return enforcing.client()


def queue(name: str, **fields: object) -> tasks_v2.Queue:
    return tasks_v2.Queue(name=f"{PARENT}/queues/{name}", **fields)


def rate(per_second: float) -> tasks_v2.RateLimits:
    return tasks_v2.RateLimits(max_dispatches_per_second=per_second)


MASK = field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"])


def test_a_stranger_is_refused_every_admin_call_and_changes_nothing(tasks):
    made = tasks.create_queue(parent=PARENT, queue=queue("admin-target", rate_limits=rate(3)),
                              metadata=AS[OPERATOR]).name
    ghost = f"{PARENT}/queues/never-made"
    calls = {
        ("cloudtasks.queues.create", PARENT): lambda: tasks.create_queue(
            parent=PARENT, queue=queue("by-stranger"), metadata=AS[STRANGER]),
        ("cloudtasks.queues.update", made): lambda: tasks.update_queue(
            queue=tasks_v2.Queue(name=made, rate_limits=rate(9)), update_mask=MASK,
            metadata=AS[STRANGER]),
        # UpdateQueue would create this one: it needs the same permission.
        ("cloudtasks.queues.update", ghost): lambda: tasks.update_queue(
            queue=tasks_v2.Queue(name=ghost, rate_limits=rate(9)), update_mask=MASK,
            metadata=AS[STRANGER]),
        ("cloudtasks.queues.delete", made): lambda: tasks.delete_queue(
            name=made, metadata=AS[STRANGER]),
        ("cloudtasks.queues.delete", ghost): lambda: tasks.delete_queue(
            name=ghost, metadata=AS[STRANGER]),
        ("cloudtasks.queues.getIamPolicy", made): lambda: tasks.get_iam_policy(
            resource=made, metadata=AS[STRANGER]),
        ("cloudtasks.queues.getIamPolicy", ghost): lambda: tasks.get_iam_policy(
            resource=ghost, metadata=AS[STRANGER]),
        ("cloudtasks.queues.setIamPolicy", made): lambda: tasks.set_iam_policy(
            request={"resource": made, "policy": policy_pb2.Policy(bindings=[
                policy_pb2.Binding(role="roles/cloudtasks.admin", members=[STRANGER])])},
            metadata=AS[STRANGER]),
    }
    for (permission, resource), call in calls.items():
        with pytest.raises(gexc.PermissionDenied) as e:
            call()
        assert e.value.message == refused(permission, resource)
    # The enqueuer creates tasks; it does not administer queues.
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_queue(parent=PARENT, queue=queue("by-enqueuer"))
    assert e.value.message == refused("cloudtasks.queues.create", PARENT)

    got = tasks.get_queue(name=made)
    assert got.rate_limits.max_dispatches_per_second == 3
    names = {q.name for q in tasks.list_queues(parent=PARENT)}
    assert made in names and ghost not in names and f"{PARENT}/queues/by-stranger" not in names
    assert list(tasks.get_iam_policy(resource=made, metadata=AS[OPERATOR]).bindings) == []


def test_an_admin_creates_changes_and_deletes_queues_and_sets_their_policies(tasks):
    made = tasks.create_queue(parent=PARENT, queue=queue("admin-made"),
                              metadata=AS[OPERATOR]).name
    changed = tasks.update_queue(queue=tasks_v2.Queue(name=made, rate_limits=rate(7)),
                                 update_mask=MASK, metadata=AS[OPERATOR])
    assert changed.rate_limits.max_dispatches_per_second == 7
    upserted = tasks.update_queue(queue=queue("admin-upserted", rate_limits=rate(2)),
                                  update_mask=MASK, metadata=AS[OPERATOR])
    assert tasks.get_queue(name=upserted.name).rate_limits.max_dispatches_per_second == 2
    # The queue admin role holds the queue IAM permissions too, as on Google.
    policy = tasks.get_iam_policy(resource=made, metadata=AS[QUEUE_ADMIN])
    policy.bindings.add(role="roles/cloudtasks.enqueuer", members=[API])
    written = tasks.set_iam_policy(request={"resource": made, "policy": policy},
                                   metadata=AS[QUEUE_ADMIN])
    assert [list(b.members) for b in written.bindings] == [[API]]
    for name in (made, upserted.name):
        tasks.delete_queue(name=name, metadata=AS[OPERATOR])
    with pytest.raises(gexc.NotFound):  # allowed to ask, so told the truth
        tasks.delete_queue(name=made, metadata=AS[OPERATOR])
    with pytest.raises(gexc.NotFound):
        tasks.get_iam_policy(resource=made, metadata=AS[OPERATOR])


def test_a_grant_on_one_queue_reaches_that_queue_only(tasks):
    mine = tasks.create_queue(parent=PARENT, queue=queue("granted-here"),
                              metadata=AS[OPERATOR]).name
    other = tasks.create_queue(parent=PARENT, queue=queue("not-here"),
                               metadata=AS[OPERATOR]).name
    policy = tasks.get_iam_policy(resource=mine, metadata=AS[OPERATOR])
    policy.bindings.add(role="roles/cloudtasks.queueAdmin", members=[STRANGER])
    tasks.set_iam_policy(request={"resource": mine, "policy": policy}, metadata=AS[OPERATOR])
    tasks.update_queue(queue=tasks_v2.Queue(name=mine, rate_limits=rate(4)), update_mask=MASK,
                       metadata=AS[STRANGER])
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.update_queue(queue=tasks_v2.Queue(name=other, rate_limits=rate(4)),
                           update_mask=MASK, metadata=AS[STRANGER])
    assert e.value.message == refused("cloudtasks.queues.update", other)
    asked = ["cloudtasks.queues.update", "cloudtasks.queues.setIamPolicy",
             "cloudtasks.tasks.create"]
    assert list(tasks.test_iam_permissions(resource=mine, permissions=asked,
                                           metadata=AS[STRANGER]).permissions) == asked[:2]
    assert list(tasks.test_iam_permissions(resource=other, permissions=asked,
                                           metadata=AS[STRANGER]).permissions) == []


def test_test_permissions_on_a_missing_queue_is_an_empty_answer(tasks):
    # Google: "If the resource does not exist, this will return an empty set of
    # permissions, not a NOT_FOUND error."
    got = tasks.test_iam_permissions(resource=f"{PARENT}/queues/nowhere",
                                     permissions=["cloudtasks.queues.get"],
                                     metadata=AS[OPERATOR])
    assert list(got.permissions) == []
    with pytest.raises(gexc.InvalidArgument):
        tasks.test_iam_permissions(resource=f"{PARENT}/queues/nowhere",
                                   permissions=["storage.objects.get"])


def test_reads_and_queue_actions_are_not_checked_yet(tasks):
    """A known difference: only the admin calls and CreateTask are checked."""
    q = tasks.create_queue(parent=PARENT, queue=queue("open-to-all"),
                           metadata=AS[OPERATOR]).name
    assert tasks.get_queue(name=q, metadata=AS[STRANGER]).name == q
    assert q in {x.name for x in tasks.list_queues(parent=PARENT, metadata=AS[STRANGER])}
    assert tasks.pause_queue(name=q, metadata=AS[STRANGER]).state == tasks_v2.Queue.State.PAUSED
    tasks.resume_queue(name=q, metadata=AS[STRANGER])
    tasks.purge_queue(name=q, metadata=AS[STRANGER])
    assert list(tasks.list_tasks(parent=q, metadata=AS[STRANGER])) == []


def test_the_file_sets_a_queues_policy_and_it_takes_effect(tasks):
    policy = tasks.get_iam_policy(resource=BOUND, metadata=AS[OPERATOR])
    assert {b.role: list(b.members) for b in policy.bindings} == {
        "roles/cloudtasks.enqueuer": [API],
        "roles/cloudtasks.viewer": [API, STRANGER],
    }
    created = tasks.create_task(parent=BOUND, task=http_task("http://127.0.0.1:9/work"),
                                metadata=AS[API])
    with pytest.raises(gexc.PermissionDenied) as e:
        tasks.create_task(parent=LEFT, task=http_task("http://127.0.0.1:9/work"),
                          metadata=AS[API])
    assert e.value.message == refused("cloudtasks.tasks.create", LEFT)
    tasks.delete_task(name=created.name)
    assert list(tasks.get_iam_policy(resource=LEFT, metadata=AS[OPERATOR]).bindings) == []


def test_at_restart_the_file_wins_where_it_names_a_policy_only(enforcing, state):
    """Last in the module: restarts the emulator on the same state."""
    tasks = enforcing.client()
    for name in (BOUND, LEFT):
        policy = tasks.get_iam_policy(resource=name, metadata=AS[OPERATOR])
        del policy.bindings[:]
        policy.bindings.add(role="roles/cloudtasks.taskRunner", members=[STRANGER])
        tasks.set_iam_policy(request={"resource": name, "policy": policy},
                             metadata=AS[OPERATOR])
    assert enforcing.stop() == 0, "".join(enforcing.stderr)
    again = start_emulator(state, CONFIG, db=enforcing.db)
    try:
        tasks = again.client()
        bound = tasks.get_iam_policy(resource=BOUND, metadata=AS[OPERATOR])
        assert {b.role for b in bound.bindings} == {"roles/cloudtasks.enqueuer",
                                                     "roles/cloudtasks.viewer"}
        left = tasks.get_iam_policy(resource=LEFT, metadata=AS[OPERATOR])
        assert [(b.role, list(b.members)) for b in left.bindings] == [
            ("roles/cloudtasks.taskRunner", [STRANGER])]
    finally:
        assert again.stop() == 0, "".join(again.stderr)


def test_a_bad_queue_binding_in_the_file_is_refused_at_start(tmp_path):
    with pytest.raises(RuntimeError, match=r"queues\.0\.bindings\.0\.members"):
        start_emulator(tmp_path, """
[[queues]]
name = "q"
bindings = [{ role = "roles/cloudtasks.enqueuer", members = ["bob"] }]
""", timeout=10)


def test_without_enforcement_anyone_administers_queues(emulator):
    tasks = emulator.client()
    made = tasks.create_queue(parent=PARENT, queue=queue("unenforced-admin"),
                              metadata=AS[STRANGER]).name
    policy = tasks.get_iam_policy(resource=made, metadata=AS[STRANGER])
    tasks.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=made,
                                                                   policy=policy),
                         metadata=AS[STRANGER])
    tasks.delete_queue(name=made, metadata=AS[STRANGER])
