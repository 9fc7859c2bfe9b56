"""Group commit: writes that arrive together share one SQLite transaction, and none of their
callers hears back before that transaction is committed.

A commit costs far more than an insert, and under load many CreateTask calls reach the event
loop in the same turn. ``GroupCommit.submit`` queues a write and returns a future; the first
write of a turn schedules ``flush`` for the next one, which runs every queued write inside
one ``BEGIN IMMEDIATE ... COMMIT`` and only then resolves the futures. So:

- an answer that says OK leaves after its write is committed (a ``kill -9`` loses nothing
  that was acknowledged, as ``store.py`` promises);
- ``flush`` is one synchronous step of the loop thread, the only thread that touches the
  connection: nothing else (the dispatcher, another API call) ever runs while the batch's
  rows are written but not committed, so nothing can dispatch or report them early;
- a write that refuses (raises ``ApiError``, having changed nothing, e.g. ALREADY_EXISTS
  when an earlier write of the same batch took the name) fails alone; any other failure,
  the commit's included, rolls the whole batch back and fails every write of it: none is
  answered OK;
- a caller that stopped waiting (its deadline passed) does not undo its write: like a
  create whose answer was lost, it may have happened.

Code that must see every write submitted so far (deleting or purging a queue) calls
``flush`` first; the store flushes before it closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from emulator.errors import ApiError
from emulator.store import Store

log = logging.getLogger("emulator.store")
T = TypeVar("T")


class GroupCommit:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        store.on_close(self.flush)

    def submit(self, write: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``write`` in the next shared transaction. Its future resolves to what it
        returned once that transaction is committed, or fails with what it raised (or with
        INTERNAL when the batch could not be committed)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._pending.append((write, done))
        if len(self._pending) == 1:
            loop.call_soon(self.flush)
        return done

    def flush(self) -> None:
        """Write and commit everything submitted so far, then answer each submitter."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        db = self.store.db
        outcomes: list[tuple[asyncio.Future[Any], Any, ApiError | None]] = []
        try:
            if db.in_transaction:  # a caller's own transaction would hold our commit back
                raise RuntimeError("group commit called inside an open transaction")
            db.execute("BEGIN IMMEDIATE")
            try:
                for write, done in batch:
                    try:
                        outcomes.append((done, write(), None))
                    except ApiError as e:
                        outcomes.append((done, None, e))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except Exception as e:
            log.exception("could not commit %d write(s); none of them was stored", len(batch))
            for _, done in batch:
                if not done.done():
                    done.set_exception(ApiError(
                        grpc.StatusCode.INTERNAL,
                        f"The emulator could not store this change: {type(e).__name__}: {e}. "
                        "Nothing of it was saved; see the emulator's log."))
            return
        for done, value, error in outcomes:
            if done.done():
                continue
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(value)
