"""Search a queue's tasks by a field of their payload: ``input_doc_id=abc``, ``a.b.c=…``.

Cloud Tasks has no query on payloads: the only way is to read every task with its body,
ListTasks in the FULL view, page by page. ``search_payloads`` does that and yields each
page's matches as they come, with how far it got (pages read, tasks seen), and stops at a
cap. The FULL view needs ``cloudtasks.tasks.fullView`` on the queue ("Authorization for FULL
requires cloudtasks.tasks.fullView Google IAM permission on the Queue resource",
https://cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2#google.cloud.tasks.v2.Task.View);
a caller without it gets ``PermissionDenied`` naming it and the role that grants it
(``errors.translate_google_errors``).

Each page is one ListTasks call, and ListTasks counts against Cloud Tasks' list quota of
600 requests a minute per project (https://cloud.google.com/tasks/docs/quotas): pages of
1000 tasks, the most Cloud Tasks serves, keep a scan of the default cap to 10 calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.cloud import tasks_v2

from enqueuer_core.clients import principal
from enqueuer_core.errors import InvalidRequest, translate_google_errors
from enqueuer_core.inspect import (
    CALL_TIMEOUT_S,
    PAGE_SIZE,
    READ_RETRY,
    TaskSnapshot,
    _payload,  # the body decoded as the task details show it
)

SEARCH_CAP = 10_000  # tasks read at most by one search
_SEGMENT = re.compile(r"[^.\s=!<>]+")
EXAMPLES = "input_doc_id=abc, options.language=es or items.0.id=7"


@dataclass(frozen=True)
class FieldMatch:
    """``path=value``: the payload's field at ``path`` (keys, or list indices) holds
    ``value``, compared as text or as the JSON value it reads as (``3``, ``true``, ``null``,
    ``"quoted text"``)."""

    path: tuple[str, ...]
    value: str

    @property
    def expression(self) -> str:
        return f"{'.'.join(self.path)}={self.value}"

    def found(self, payload: Any) -> tuple[bool, Any]:
        """Whether ``payload`` has the field, and its value (None when it has not)."""
        node = payload
        for key in self.path:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return False, None
        return True, node

    def matches(self, payload: Any) -> bool:
        present, value = self.found(payload)
        if not present:
            return False
        if isinstance(value, str):
            return value == _unquoted(self.value)
        try:
            wanted = json.loads(self.value)
        except ValueError:
            return False
        if isinstance(value, bool) or isinstance(wanted, bool):  # JSON's true is not 1
            return value is wanted
        return bool(value == wanted)


def _unquoted(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def parse_expression(text: str) -> FieldMatch:
    """``FIELD=VALUE`` as a ``FieldMatch``; ``InvalidRequest`` saying what to write when it
    is not one."""
    expression = text.strip()
    field, sep, value = expression.partition("=")
    field = field.strip()
    if not sep or not field:
        raise InvalidRequest(
            f"{expression!r} is not a payload field search: write FIELD=VALUE, for example "
            f"{EXAMPLES}.")
    if field.endswith(("!", "<", ">")):
        raise InvalidRequest(
            f"{expression!r}: only = is supported (a field equal to a value), for example "
            f"{EXAMPLES}.")
    path = tuple(part.strip() for part in field.split("."))
    bad = next((p for p in path if not _SEGMENT.fullmatch(p)), None)
    if bad is not None:
        where = "an empty part" if not bad else f"the part {bad!r}"
        raise InvalidRequest(
            f"{field!r} has {where}: write the field's path with dots between its names "
            f"(nested objects) or indices (lists), like {EXAMPLES}.")
    value = value.strip()
    if not value:
        raise InvalidRequest(
            f"{expression!r} has no value after '=': write the value to look for, like "
            f'{field}=abc (or {field}="" for an empty string).')
    return FieldMatch(path, value)


@dataclass(frozen=True)
class SearchHit:
    task: TaskSnapshot
    payload: Any  # the whole payload, decoded
    value: Any  # what the field holds


@dataclass(frozen=True)
class ScanProgress:
    """How far a scan got: ListTasks pages read, tasks seen, matches so far."""

    pages: int
    seen: int
    matched: int
    capped: bool = False  # stopped at the cap: tasks past it were not read
    done: bool = False  # nothing more to read (the end of the queue, or the cap)


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    progress: ScanProgress


def task_pages(client: tasks_v2.CloudTasksClient, queue_path: str, page_size: int = PAGE_SIZE,
               view: tasks_v2.Task.View = tasks_v2.Task.View.FULL,
               ) -> Iterator[tuple[list[tasks_v2.Task], bool]]:
    """The queue's tasks (in the FULL view unless told, bodies included), one ListTasks page
    at a time, each fetched when the caller asks for it, and whether more pages follow;
    every Google error translated."""
    token = ""
    while True:
        with translate_google_errors(queue=queue_path, principal=principal(client)):
            page = client.list_tasks(
                request=tasks_v2.ListTasksRequest(
                    parent=queue_path, page_size=page_size, page_token=token,
                    response_view=view),
                retry=READ_RETRY, timeout=CALL_TIMEOUT_S)
            tasks = list(page.tasks)  # this page only: the pager is never iterated
        token = page.next_page_token
        yield tasks, bool(token)
        if not token:
            return


def body_of(task: tasks_v2.Task) -> Any:
    """The task's payload, JSON-decoded (the text when not JSON; None without a body)."""
    return _payload(tasks_v2.Task.pb(task).http_request.body)


def search_payloads(client: tasks_v2.CloudTasksClient, queue_path: str,
                    expression: str | FieldMatch, cap: int = SEARCH_CAP,
                    page_size: int = PAGE_SIZE) -> Iterator[SearchPage]:
    """The tasks whose payload matches ``expression``, one ListTasks page at a time.

    Yields a ``SearchPage`` per page read (its matches, possibly none, and the progress);
    the last one has ``progress.done``. Reads at most ``cap`` tasks. A bad expression is an
    ``InvalidRequest`` before anything is read.
    """
    match = parse_expression(expression) if isinstance(expression, str) else expression
    if cap < 1:
        raise InvalidRequest(f"The cap on tasks read must be at least 1, not {cap}.")
    seen = matched = 0
    for pages, (tasks, more) in enumerate(
            task_pages(client, queue_path, min(page_size, PAGE_SIZE)), 1):
        taken = tasks[:cap - seen]
        hits = []
        for task in taken:
            payload = body_of(task)
            present, value = match.found(payload)
            if present and match.matches(payload):
                hits.append(SearchHit(TaskSnapshot.from_task(task), payload, value))
        seen += len(taken)
        matched += len(hits)
        capped = len(taken) < len(tasks) or (seen >= cap and more)
        done = capped or not more
        yield SearchPage(hits, ScanProgress(pages, seen, matched, capped=capped, done=done))
        if done:
            return
