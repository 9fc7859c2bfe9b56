"""Dispatch of HTTP tasks as Cloud Tasks does it, one runner per queue.

A runner takes due tasks from the store within the queue's rate (a token bucket of
``max_burst_size`` filled at ``max_dispatches_per_second``) and concurrency limits, sends
each as its HTTP request (under the queue's current ``http_target``, when it has one: see
``http_target``) with Cloud Tasks' headers and an OIDC token, and records the attempt: 2xx
removes the task and reserves its name, anything else schedules a retry by the queue's
RetryConfig or, once its limits are reached, removes the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import lru_cache

import aiohttp
import grpc
from google.cloud import tasks_v2

from emulator import http_target, task_logs
from emulator.clock import US, now_us, seconds, to_timestamp
from emulator.log_store import LogRow, LogStore
from emulator.oidc import Issuer
from emulator.queues import RUNNING, Queue, retry_policy
from emulator.retry import RetryPolicy
from emulator.store import Store, Task, TaskRow

log = logging.getLogger("emulator.dispatch")

Attempt = tasks_v2.Attempt.pb()
USER_AGENT = "Google-Cloud-Tasks"
_METHODS = {m.value: m.name for m in tasks_v2.HttpMethod if m.value}
# Headers Cloud Tasks computes or owns; a task's own values for them are not sent.
_OWNED_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
_OWNED = {"host", "content-length", "user-agent"}
# google.rpc code of an HTTP answer, as Google maps them.
_HTTP_TO_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
MAX_BATCH = 500
# Attempts that may wait for the event loop at once (all queues): past this the process
# is saturated, and leasing more would not send them any sooner.
MAX_UNSTARTED = 64


@lru_cache(maxsize=64)
def _timeout(deadline_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=deadline_s)


def status_of(http_status: int) -> grpc.StatusCode:
    if 200 <= http_status < 300:
        return grpc.StatusCode.OK
    return _HTTP_TO_CODE.get(http_status, grpc.StatusCode.UNKNOWN)


def _set_status(attempt: Attempt, code: grpc.StatusCode, detail: str) -> None:
    attempt.response_status.code = code.value[0]
    attempt.response_status.message = f"{code.name}({code.value[0]}): {detail}"


class Dispatcher:
    """Owns the per-queue runners and the HTTP client they share."""

    def __init__(self, store: Store, issuer: Issuer, reserve_s: float,
                 logs: LogStore | None = None) -> None:
        self.store = store
        self.logs = logs
        # Task-operation log entries of attempts' outcomes, written with those outcomes.
        self.log_rows: list[LogRow] = []
        self.issuer = issuer
        self.reserve_s = reserve_s
        self.runners: dict[str, QueueRunner] = {}
        self.session: aiohttp.ClientSession | None = None
        self._writes: list[Callable[[], object]] = []
        # Attempts created whose coroutine has not run yet (a cancelled one never runs).
        self.unstarted: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # Nothing is in flight after a restart: what was being sent is due again.
        released = self.store.release_all()
        if released:
            log.info("%d task(s) were in flight at the last stop; dispatching them again",
                     released)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        for queue in self.store.all_queues():
            self.sync_queue(queue)

    async def stop(self) -> None:
        runners = list(self.runners.values())
        self.runners.clear()
        await asyncio.gather(*(r.stop() for r in runners))
        self._flush()
        if self.session:
            await self.session.close()
            self.session = None

    def record(self, write: Callable[[], object]) -> None:
        """Write an attempt's outcome soon: all outcomes of one loop turn share a commit.

        Should the process die before that commit, the task is still leased in the store,
        so it is dispatched again after restart: at least once, as Cloud Tasks promises.
        """
        self._writes.append(write)
        if len(self._writes) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        writes, self._writes = self._writes, []
        if not writes:
            return
        rows, self.log_rows = self.log_rows, []
        with self.store.transaction():
            for write in writes:
                write()
            if self.logs is not None:
                self.logs.add(rows)

    def sync_queue(self, queue: Queue) -> None:
        """A queue was created or changed: (re)configure its runner."""
        runner = self.runners.get(queue.name)
        if runner is None:
            self.runners[queue.name] = QueueRunner(self, queue)
        else:
            runner.configure(queue)
            runner.wake()

    def drop_queue(self, name: str) -> None:
        runner = self.runners.pop(name, None)
        if runner:
            asyncio.get_running_loop().create_task(runner.stop())

    def wake(self, queue: str) -> None:
        runner = self.runners.get(queue)
        # A paused queue's runner has nothing to do until resumed (sync_queue wakes it then).
        if runner and runner.running:
            runner.wake()

    def run_now(self, row: TaskRow) -> None:
        """RunTask: dispatch a leased task now, whatever the queue's state and limits."""
        runner = self.runners[row.task.name.rsplit("/tasks/", 1)[0]]
        with self.store.transaction():
            entry = runner.start_attempt(row, forced=True)
            if entry and self.logs is not None:
                self.logs.add([entry])


class QueueRunner:
    def __init__(self, dispatcher: Dispatcher, queue: Queue) -> None:
        self.d = dispatcher
        self.name = queue.name
        self.queue_id = queue.name.rsplit("/", 1)[1]
        self.inflight: set[asyncio.Task[None]] = set()
        self.responses: deque[float] = deque()  # monotonic times, for the last-minute count
        self._event = asyncio.Event()
        self.configure(queue)
        self._tokens = float(self.burst)
        self._refilled = time.monotonic()
        self._loop = asyncio.get_running_loop().create_task(self._run())

    def configure(self, queue: Queue) -> None:
        self.running = queue.state == RUNNING
        self.rate = queue.rate_limits.max_dispatches_per_second
        self.burst = queue.rate_limits.max_burst_size
        self.concurrency = queue.rate_limits.max_concurrent_dispatches
        self.retry = retry_policy(queue.retry_config)
        self.log = task_logs.QueueLog.of(queue)
        # Queue-level routing, read at each dispatch so that it reaches the tasks already
        # waiting; None (the usual case) costs the hot path nothing.
        self.target: http_target.HttpTarget | None = None
        if queue.HasField("http_target"):
            self.target = http_target.HttpTarget()
            self.target.CopyFrom(queue.http_target)

    def wake(self) -> None:
        self._event.set()

    def executed_last_minute(self) -> int:
        horizon = time.monotonic() - 60
        while self.responses and self.responses[0] < horizon:
            self.responses.popleft()
        return len(self.responses)

    async def stop(self) -> None:
        self._loop.cancel()
        for t in list(self.inflight):
            t.cancel()
        await asyncio.gather(self._loop, *self.inflight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._event.clear()
            try:
                delay = self._pump()
            except Exception:  # a failing store must not kill the queue for good
                log.exception("dispatch of %s failed; retrying in 1 s", self.name)
                delay = 1.0
            if delay == 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), delay)

    def _pump(self) -> float | None:
        """Start what may start now; how long until something else may (None: until woken)."""
        if not self.running:
            return None
        free = self.concurrency - len(self.inflight)
        if free <= 0:
            return None  # an attempt that ends wakes the runner
        backlog = MAX_UNSTARTED - len(self.d.unstarted)
        if backlog <= 0:
            # The process is behind: more attempts now would only wait in the event loop,
            # each holding a connection of its own. Look again once it has caught up.
            return 0.005
        free = min(free, backlog)
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1:
            # Wait for a few tokens rather than one: at 500/s that is a wake-up every 10 ms
            # leasing 5 tasks, not every 2 ms leasing one; the rate is the same.
            want = min(self.burst, max(1.0, self.rate / 100))
            return (want - self._tokens) / self.rate
        n = min(free, int(self._tokens), MAX_BATCH)
        with self.d.store.transaction():  # the lease and the dispatch records: one commit
            rows = self.d.store.lease_due(self.name, now_us(), n)
            entries = [e for row in rows if (e := self.start_attempt(row))]
            if entries and self.d.logs is not None:
                self.d.logs.add(entries)  # one executemany for the batch
        self._tokens -= len(rows)
        if len(rows) == n:
            return 0
        nxt = self.d.store.next_schedule_us(self.name)
        if nxt is None:
            return None
        # Capped so that a clock change cannot leave a due task waiting for long.
        return min(max(0.0, (nxt - now_us()) / US), 30.0)

    def start_attempt(self, row: TaskRow, forced: bool = False) -> LogRow | None:
        """Record the dispatch (so GetTask and RunTask see it at once), then send. Returns
        the attemptDispatchLog entry when the task is sampled, for the caller's commit."""
        task = row.task
        now = now_us()
        if forced:
            task.schedule_time.CopyFrom(to_timestamp(now))
        attempt = Attempt()
        attempt.schedule_time.CopyFrom(task.schedule_time)
        attempt.dispatch_time.CopyFrom(to_timestamp(now))
        if not task.HasField("first_attempt"):
            task.first_attempt.dispatch_time.CopyFrom(attempt.dispatch_time)
        retry_count = task.dispatch_count
        task.dispatch_count += 1
        task.last_attempt.CopyFrom(attempt)
        self.d.store.save_attempt(row, leased=True)
        t = asyncio.get_running_loop().create_task(self._attempt(row, retry_count))
        self.d.unstarted.add(t)
        self.inflight.add(t)
        t.add_done_callback(self._ended)
        return task_logs.dispatch(self.log, task, now) if self.log.sampled(task.name) else None

    def _ended(self, t: asyncio.Task[None]) -> None:
        self.inflight.discard(t)
        self.d.unstarted.discard(t)
        self._event.set()

    async def _attempt(self, row: TaskRow, retry_count: int) -> None:
        self.d.unstarted.discard(asyncio.current_task())  # type: ignore[arg-type]
        task = row.task
        http = task.http_request
        if self.target is not None:
            http = http_target.effective_request(self.target, http)
        deadline = seconds(task.dispatch_deadline) or 600.0
        headers = self._headers(row, retry_count, http)
        got: int | None = None
        try:
            assert self.d.session is not None
            async with self.d.session.request(
                _METHODS.get(http.http_method, "POST"),
                http.url,
                data=http.body or None,
                headers=headers,
                timeout=_timeout(deadline),
                skip_auto_headers=("Content-Type",),
                allow_redirects=True,
            ) as resp:
                await resp.read()
                got = resp.status
            code, detail = status_of(got), f"HTTP status code {got}"
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            detail = f"the target did not answer within the dispatch deadline ({deadline:g}s)"
        except (aiohttp.ClientError, OSError, ValueError) as e:
            code = grpc.StatusCode.UNAVAILABLE
            detail = f"the request to {http.url} failed: {e or type(e).__name__}"
        self._finish(row, got, code, detail)

    def _headers(self, row: TaskRow, retry_count: int,
                 http: http_target.HttpRequest) -> dict[str, str]:
        """The headers sent for ``http``: the task's request, or what the queue made of it."""
        task = row.task
        oidc = http.HasField("oidc_token")
        headers = {
            k: v
            for k, v in http.headers.items()
            if k.lower() not in _OWNED
            and not k.lower().startswith(_OWNED_PREFIXES)
            and not ((oidc or http.HasField("oauth_token")) and k.lower() == "authorization")
        }
        headers.update({
            "User-Agent": USER_AGENT,
            "X-CloudTasks-QueueName": self.queue_id,
            "X-CloudTasks-TaskName": task.name.rsplit("/", 1)[1],
            "X-CloudTasks-TaskRetryCount": str(retry_count),
            "X-CloudTasks-TaskExecutionCount": str(row.execution_count),
            "X-CloudTasks-TaskETA": f"{task.schedule_time.ToMicroseconds() / US:.6f}",
        })
        if retry_count:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(row.previous_response or 0)
            # Cloud Tasks sends this header empty for HTTP targets.
            headers["X-CloudTasks-TaskRetryReason"] = ""
        if oidc:
            token = self.d.issuer.token(
                http.oidc_token.service_account_email, http.oidc_token.audience or http.url
            )
            headers["Authorization"] = f"Bearer {token}"
        elif http.HasField("oauth_token"):
            # Access tokens are only for Google APIs, which the emulator does not serve.
            headers["Authorization"] = (
                f"Bearer emulator-access-token-{http.oauth_token.service_account_email}"
            )
        return headers

    def _finish(self, row: TaskRow, got: int | None, code: grpc.StatusCode, detail: str) -> None:
        task = row.task
        now = now_us()
        task.last_attempt.response_time.CopyFrom(to_timestamp(now))
        _set_status(task.last_attempt, code, detail)
        if got is not None:
            task.response_count += 1
            self.responses.append(time.monotonic())
        store = self.d.store
        reserve_until = now + int(self.d.reserve_s * US)
        if code == grpc.StatusCode.OK:
            self._log_response(task, now, code)
            self.d.record(lambda: store.remove_task(task.name, reserve_until))
            return
        if got is not None and got < 500:
            row.execution_count += 1
        # Without an HTTP answer, the next attempt is told what Google's front end answers.
        row.previous_response = got if got is not None else (
            504 if code == grpc.StatusCode.DEADLINE_EXCEEDED else 503
        )
        policy = self._policy(task)
        since_first = (now - task.first_attempt.dispatch_time.ToMicroseconds()) / US
        if policy.exhausted(task.dispatch_count, since_first):
            log.info("%s: giving up after %d attempts (%s)", task.name, task.dispatch_count,
                     task.last_attempt.response_status.message)
            self._log_response(task, now, code)  # no retryTime: it failed for good
            self.d.record(lambda: store.remove_task(task.name, reserve_until))
            return
        task.schedule_time.CopyFrom(
            to_timestamp(now + int(policy.backoff_s(task.dispatch_count) * US))
        )
        self._log_response(task, now, code, task.schedule_time.ToMicroseconds())

        def save() -> None:
            if store.save_attempt(row, leased=False):
                self._event.set()

        self.d.record(save)

    def _log_response(self, task: Task, now: int, code: grpc.StatusCode,
                      retry_us: int | None = None) -> None:
        if self.d.logs is not None and self.log.sampled(task.name):
            self.d.log_rows.append(task_logs.response(
                self.log, task, now, code.name, retry_us, self._policy(task).max_attempts))

    def _policy(self, task: Task) -> RetryPolicy:
        return retry_policy(task.retry_config) if task.HasField("retry_config") else self.retry
