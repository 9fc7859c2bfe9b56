"""Resource names of Cloud Tasks: parsing and the format rules the real service enforces."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulator.errors import invalid

PROJECT_PATTERN = r"[A-Za-z0-9\-.:]+"
LOCATION_PATTERN = r"[A-Za-z0-9\-]+"
LOCATION_RE = re.compile(
    rf"^projects/(?P<project>{PROJECT_PATTERN})/locations/(?P<location>{LOCATION_PATTERN})$"
)
QUEUE_ID_RE = re.compile(r"^[A-Za-z0-9\-]{1,100}$")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,500}$")
_QUEUE = (
    rf"projects/(?P<project>{PROJECT_PATTERN})/locations/(?P<location>{LOCATION_PATTERN})"
    r"/queues/(?P<queue>[^/]+)"
)
_QUEUE_NAME_RE = re.compile(f"^{_QUEUE}$")
_TASK_NAME_RE = re.compile(rf"^(?P<queue_name>{_QUEUE})/tasks/(?P<task>[^/]*)$")

# As Google spells them in its messages (and its missing "be" in the task ID one).
QUEUE_FORMAT = "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>"
TASK_FORMAT = QUEUE_FORMAT + "/tasks/<TASK_ID>"


@dataclass(frozen=True)
class QueueName:
    project: str
    location: str
    queue_id: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/queues/{self.queue_id}"


@dataclass(frozen=True)
class TaskName:
    queue: QueueName
    task_id: str

    def __str__(self) -> str:
        return f"{self.queue}/tasks/{self.task_id}"


def parse_location(name: str) -> str:
    if not LOCATION_RE.match(name):
        raise invalid("Invalid resource field value in the request.")
    return name


def parse_queue(name: str) -> QueueName:
    m = _QUEUE_NAME_RE.match(name)
    if not m or not QUEUE_ID_RE.match(m["queue"]):
        raise invalid(f'Queue name must be formatted: "{QUEUE_FORMAT}".')
    return QueueName(m["project"], m["location"], m["queue"])


def parse_task(name: str) -> TaskName:
    m = _TASK_NAME_RE.match(name)
    if not m:
        raise invalid(f'Task name must be formatted: "{TASK_FORMAT}".')
    queue = parse_queue(m["queue_name"])
    if not TASK_ID_RE.match(m["task"]):
        raise invalid(
            f'Task ID "{m["task"]}" can contain only letters ([A-Za-z]), numbers ([0-9]), '
            "hyphens (-), or underscores (_). Task ID must between 1 and 500 characters."
        )
    return TaskName(queue, m["task"])
