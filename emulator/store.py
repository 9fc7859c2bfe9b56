"""Durable state in SQLite (WAL): queues, tasks, name reservations, IAM policies, service
accounts created over the API, keys.

Every write that a client was told succeeded is committed before the answer leaves, so a
``kill -9`` at any moment loses nothing: WAL with ``synchronous=NORMAL`` survives a process
crash (only a power cut may lose the last transactions). CreateTask calls that arrive
together share one commit (``group_commit.py``), still made before any of them is answered.
Tasks stay on disk, not in memory, so 100,000 pending tasks cost the emulator almost nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from google.cloud import tasks_v2

from emulator.clock import from_timestamp

Task = tasks_v2.Task.pb()
Queue = tasks_v2.Queue.pb()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS queues(name TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS deleted_queues(name TEXT PRIMARY KEY, deleted_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    schedule_us INTEGER NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    execution_count INTEGER NOT NULL DEFAULT 0,
    previous_response INTEGER,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks(queue, leased, schedule_us);
CREATE INDEX IF NOT EXISTS tasks_listed ON tasks(queue, seq);
CREATE TABLE IF NOT EXISTS tombstones(name TEXT PRIMARY KEY, until_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_expiry ON tombstones(until_us);
CREATE TABLE IF NOT EXISTS policies(resource TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS service_accounts(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL
);
"""


@dataclass
class TaskRow:
    """A stored task and what the dispatcher keeps beside it."""

    seq: int
    task: Task
    execution_count: int  # responses that were not 5xx (X-CloudTasks-TaskExecutionCount)
    previous_response: int | None  # HTTP code of the last attempt, for the next one's headers
    leased: bool = False

    @property
    def name(self) -> str:
        return self.task.name


_TASK_COLS = "seq, body, execution_count, previous_response, leased"


def _row(r: tuple) -> TaskRow:
    return TaskRow(r[0], Task.FromString(r[1]), r[2], r[3], bool(r[4]))


class Store:
    def __init__(self, path: str | Path) -> None:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The emulator runs on one event loop thread; sqlite3 objects stay on it.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._before_close: list[Callable[[], None]] = []

    def on_close(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` before the connection closes (writes still waiting for a commit)."""
        self._before_close.append(flush)

    def close(self) -> None:
        for flush in self._before_close:
            flush()
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One commit for everything inside; nested uses join the outer transaction."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        r = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return r[0] if r else None

    def set_meta(self, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # -- queues -----------------------------------------------------------------------

    def get_queue(self, name: str) -> Queue | None:
        r = self.db.execute("SELECT body FROM queues WHERE name=?", (name,)).fetchone()
        return Queue.FromString(r[0]) if r else None

    def all_queues(self) -> list[Queue]:
        return [Queue.FromString(r[0]) for r in self.db.execute("SELECT body FROM queues")]

    def list_queues(self, parent: str, after: str, limit: int) -> list[Queue]:
        rows = self.db.execute(
            "SELECT body FROM queues WHERE name > ? AND name >= ? AND name < ? "
            "ORDER BY name LIMIT ?",
            (after, parent + "/queues/", parent + "/queues0", limit),
        )
        return [Queue.FromString(r[0]) for r in rows]

    def put_queue(self, queue: Queue) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO queues(name, body) VALUES(?, ?)",
                (queue.name, queue.SerializeToString()),
            )
            db.execute("DELETE FROM deleted_queues WHERE name=?", (queue.name,))

    def delete_queue(self, name: str, now_us: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM queues WHERE name=?", (name,))
            db.execute("DELETE FROM tasks WHERE queue=?", (name,))
            db.execute("DELETE FROM policies WHERE resource=?", (name,))
            db.execute(
                "INSERT OR REPLACE INTO deleted_queues(name, deleted_us) VALUES(?, ?)",
                (name, now_us),
            )

    def queue_deleted_at(self, name: str) -> int | None:
        r = self.db.execute(
            "SELECT deleted_us FROM deleted_queues WHERE name=?", (name,)
        ).fetchone()
        return r[0] if r else None

    # -- tasks ------------------------------------------------------------------------

    def insert_task(self, queue: str, task: Task) -> bool:
        """Store a new task; False when a live task already has its name."""
        try:
            self.db.execute(
                "INSERT INTO tasks(name, queue, schedule_us, body) VALUES(?, ?, ?, ?)",
                (task.name, queue, from_timestamp(task.schedule_time), task.SerializeToString()),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def get_task(self, name: str) -> TaskRow | None:
        r = self.db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE name=?", (name,)).fetchone()
        return _row(r) if r else None

    def list_tasks(self, queue: str, after_seq: int, limit: int) -> list[TaskRow]:
        rows = self.db.execute(
            f"SELECT {_TASK_COLS} FROM tasks WHERE queue=? AND seq>? ORDER BY seq LIMIT ?",
            (queue, after_seq, limit),
        )
        return [_row(r) for r in rows]

    def remove_task(self, name: str, reserve_until_us: int) -> bool:
        """Delete a task (done, given up or deleted) and keep its name reserved."""
        with self.transaction() as db:
            gone = db.execute("DELETE FROM tasks WHERE name=?", (name,)).rowcount
            if gone:
                db.execute(
                    "INSERT OR REPLACE INTO tombstones(name, until_us) VALUES(?, ?)",
                    (name, reserve_until_us),
                )
        return bool(gone)

    def purge(self, queue: str, reserve_until_us: int) -> int:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO tombstones(name, until_us) "
                "SELECT name, ? FROM tasks WHERE queue=?",
                (reserve_until_us, queue),
            )
            return db.execute("DELETE FROM tasks WHERE queue=?", (queue,)).rowcount

    def reserved_until(self, name: str) -> int | None:
        r = self.db.execute("SELECT until_us FROM tombstones WHERE name=?", (name,)).fetchone()
        return r[0] if r else None

    def expire_reservations(self, now_us: int) -> int:
        return self.db.execute("DELETE FROM tombstones WHERE until_us <= ?", (now_us,)).rowcount

    def lease_due(self, queue: str, now_us: int, limit: int) -> list[TaskRow]:
        """Take up to ``limit`` due tasks of a queue for dispatch, earliest first."""
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE queue=? AND leased=0 AND schedule_us<=? "
                "ORDER BY schedule_us LIMIT ?",
                (queue, now_us, limit),
            ).fetchall()
            if rows:
                db.executemany("UPDATE tasks SET leased=1 WHERE seq=?", [(r[0],) for r in rows])
        return [_row(r) for r in rows]

    def lease(self, name: str) -> TaskRow | None:
        """Take one task for dispatch whatever its schedule (RunTask)."""
        with self.transaction() as db:
            r = db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE name=?", (name,)).fetchone()
            if r:
                db.execute("UPDATE tasks SET leased=1 WHERE seq=?", (r[0],))
        return _row(r) if r else None

    def release_all(self) -> int:
        """After a restart nothing is in flight: every leased task is due again."""
        return self.db.execute("UPDATE tasks SET leased=0 WHERE leased=1").rowcount

    def save_attempt(self, row: TaskRow, leased: bool) -> bool:
        """Write back a task after (or at the start of) an attempt; False if it is gone."""
        return bool(
            self.db.execute(
                "UPDATE tasks SET schedule_us=?, leased=?, execution_count=?, "
                "previous_response=?, body=? WHERE seq=?",
                (
                    from_timestamp(row.task.schedule_time),
                    int(leased),
                    row.execution_count,
                    row.previous_response,
                    row.task.SerializeToString(),
                    row.seq,
                ),
            ).rowcount
        )

    def next_schedule_us(self, queue: str) -> int | None:
        r = self.db.execute(
            "SELECT min(schedule_us) FROM tasks WHERE queue=? AND leased=0", (queue,)
        ).fetchone()
        return r[0]

    def queue_counts(self, queue: str) -> tuple[int, int | None]:
        """Tasks in the queue and the earliest schedule time among them."""
        r = self.db.execute(
            "SELECT count(*), min(schedule_us) FROM tasks WHERE queue=?", (queue,)
        ).fetchone()
        return r[0], r[1]

    # -- IAM --------------------------------------------------------------------------

    def get_policy(self, resource: str) -> bytes | None:
        r = self.db.execute("SELECT body FROM policies WHERE resource=?", (resource,)).fetchone()
        return r[0] if r else None

    def set_policy(self, resource: str, body: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO policies(resource, body) VALUES(?, ?)", (resource, body)
        )

    # -- service accounts created over the API -----------------------------------------

    def service_accounts(self) -> list[bytes]:
        """The created accounts (serialized ServiceAccount protos), oldest first."""
        return [r[0] for r in self.db.execute("SELECT body FROM service_accounts ORDER BY seq")]

    def add_service_account(self, email: str, body: bytes) -> bool:
        """Store a new account; False when one with this email exists."""
        try:
            self.db.execute("INSERT INTO service_accounts(email, body) VALUES(?, ?)",
                            (email.lower(), body))
        except sqlite3.IntegrityError:
            return False
        return True
