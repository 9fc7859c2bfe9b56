"""Which task an operator means: a full name, a task ID, or the key the job was enqueued with."""

from __future__ import annotations

from enqueuer_core import history
from enqueuer_core.task_names import task_id_for_key

QUEUE = "projects/p/locations/l/queues/queue-brain"


def test_a_key_names_the_task_enqueuer_made_for_it() -> None:
    assert history.task_for("report-1", QUEUE) == f"{QUEUE}/tasks/{task_id_for_key('report-1')}"
    # Any key: spaces, slashes and all, as the task ID rules turn it.
    key = "nightly/2026-12-01 run"
    assert history.task_for(f"  {key} ", QUEUE) == f"{QUEUE}/tasks/{task_id_for_key(key)}"


def test_a_task_id_is_kept_as_it_is() -> None:
    made = task_id_for_key("report-1")  # Enqueuer's: the key's hash, then the key
    assert history.task_for(made, QUEUE) == f"{QUEUE}/tasks/{made}"
    generated = "7523185416409421345"  # Cloud Tasks' own, for a task created without a name
    assert history.task_for(generated, QUEUE) == f"{QUEUE}/tasks/{generated}"


def test_a_full_name_wins_over_the_queue() -> None:
    other = "projects/p/locations/l/queues/queue-other/tasks/abc"
    assert history.task_for(other, QUEUE) == other


def test_a_short_number_is_a_key_not_a_generated_id() -> None:
    # Keys such as an order number are far shorter than the IDs Cloud Tasks generates.
    assert history.task_for("4217", QUEUE) == f"{QUEUE}/tasks/{task_id_for_key('4217')}"
