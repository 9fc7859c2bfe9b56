"""The Cloud Tasks v2 API: validation, status codes and messages as the real service answers.

Each method takes the request proto and returns the response proto, or raises ``ApiError``
with Google's code and wording; ``grpc_server`` serves them. Methods the emulator does not
implement are not registered, so gRPC answers UNIMPLEMENTED.

IAM, when ``[iam] enforce = true``, is checked before anything about the resource is
revealed, as Cloud Tasks does (its refusal says the resource "may not exist"):

- CreateQueue needs ``cloudtasks.queues.create`` on the location (so on the project);
- UpdateQueue ``cloudtasks.queues.update`` on the queue, also when it creates a missing
  queue: Google documents that one permission for queues.patch and none other for the
  creation it may do;
- DeleteQueue ``cloudtasks.queues.delete``; GetIamPolicy and SetIamPolicy
  ``cloudtasks.queues.getIamPolicy`` and ``setIamPolicy`` on the queue (the reference of
  those methods: "on the specified resource parent");
- CreateTask ``cloudtasks.tasks.create`` on the queue and, for a task with a token,
  ``iam.serviceAccounts.actAs`` on its account; CreateQueue and UpdateQueue likewise
  ``actAs`` on the account of a token the queue's ``http_target`` gets (gcloud's help of
  ``--http-oidc-service-account-email-override``: "The caller must have
  'iam.serviceAccounts.actAs' permission for the service account"), once the queue is valid;
- TestIamPermissions needs nothing and answers what the caller holds; for a queue that does
  not exist, an empty set, not NOT_FOUND (the method's reference says so).

A known difference from Google: GetQueue, ListQueues, PauseQueue, ResumeQueue, PurgeQueue,
ListTasks, GetTask, DeleteTask and RunTask are not checked against IAM yet (Google checks
``cloudtasks.queues.get``, ``list``, ``pause``, ``resume``, ``purge`` and
``cloudtasks.tasks.list``, ``get``, ``delete``, ``run``): whoever calls may use them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import grpc
from google.cloud import tasks_v2
from google.iam.v1 import iam_policy_pb2
from google.protobuf import empty_pb2

from emulator import new_tasks, task_logs
from emulator.clock import US, now_us, to_timestamp
from emulator.dispatcher import Dispatcher
from emulator.errors import ApiError, invalid, not_found
from emulator.group_commit import GroupCommit
from emulator.iam import Authorizer, Policy, service_account_resource, tasks_denied
from emulator.names import parse_location, parse_queue, parse_task
from emulator.paging import page_size, page_token, read_seq, read_token
from emulator.queues import PAUSED, RUNNING, Queue, apply_update, validate_and_default
from emulator.store import Store, Task

ListQueuesRequest = tasks_v2.ListQueuesRequest.pb()
ListQueuesResponse = tasks_v2.ListQueuesResponse.pb()
GetQueueRequest = tasks_v2.GetQueueRequest.pb()
CreateQueueRequest = tasks_v2.CreateQueueRequest.pb()
UpdateQueueRequest = tasks_v2.UpdateQueueRequest.pb()
DeleteQueueRequest = tasks_v2.DeleteQueueRequest.pb()
PurgeQueueRequest = tasks_v2.PurgeQueueRequest.pb()
PauseQueueRequest = tasks_v2.PauseQueueRequest.pb()
ResumeQueueRequest = tasks_v2.ResumeQueueRequest.pb()
ListTasksRequest = tasks_v2.ListTasksRequest.pb()
ListTasksResponse = tasks_v2.ListTasksResponse.pb()
GetTaskRequest = tasks_v2.GetTaskRequest.pb()
CreateTaskRequest = tasks_v2.CreateTaskRequest.pb()
DeleteTaskRequest = tasks_v2.DeleteTaskRequest.pb()
RunTaskRequest = tasks_v2.RunTaskRequest.pb()
BASIC = tasks_v2.Task.View.BASIC.value
FULL = tasks_v2.Task.View.FULL.value
QUEUE_MISSING = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the "
    "queue to initialize."
)
ENTITY_MISSING = "Requested entity was not found."
TASK_GONE = (
    "The task no longer exists, though a task with this name existed recently. The task "
    "either successfully completed or was deleted."
)
TASK_TOO_RECENT = (
    "The task cannot be created because a task with this name existed too recently. For more "
    "information about task de-duplication see https://cloud.google.com/tasks/docs/reference/"
    "rest/v2/projects.locations.queues.tasks/create#body.request_body.FIELDS.task."
)
MAX_TASK_PAGE, MAX_QUEUE_PAGE = 1000, 9800
QUEUE_PERMISSIONS = frozenset(
    [f"cloudtasks.queues.{v}" for v in
     ("get", "update", "delete", "pause", "resume", "purge", "getIamPolicy", "setIamPolicy")]
    + [f"cloudtasks.tasks.{v}" for v in ("create", "get", "list", "delete", "run", "fullView")]
)


@dataclass
class Limits:
    """How long names stay reserved (Cloud Tasks: about 1 h for tasks, 7 days for queues)."""

    task_name_reservation_s: float = 3600.0
    queue_name_reservation_s: float = 7 * 24 * 3600.0


def _view(task: Task, view: int) -> Task:
    out = Task()
    out.CopyFrom(task)
    out.view = FULL if view == FULL else BASIC
    if out.view == BASIC:
        out.http_request.ClearField("body")
    return out


class CloudTasksService:
    def __init__(self, store: Store, dispatcher: Dispatcher, limits: Limits,
                 authorizer: Authorizer) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limits = limits
        self.authorizer = authorizer
        self.policies = authorizer.policies
        self.commits = GroupCommit(store)

    # -- queues -----------------------------------------------------------------------

    def queue(self, name: str) -> Queue:
        parse_queue(name)
        queue = self.store.get_queue(name)
        if queue is None:
            raise not_found(QUEUE_MISSING)
        return queue

    def ListQueues(self, req: ListQueuesRequest) -> ListQueuesResponse:
        queues, token = self.list_queues(req.parent, req.filter, req.page_size, req.page_token)
        return ListQueuesResponse(queues=queues, next_page_token=token)

    def list_queues(self, parent: str, filter_: str, size: int, token: str) -> tuple[list, str]:
        parse_location(parent)
        limit = page_size(size, MAX_QUEUE_PAGE)
        state = _state_filter(filter_)
        after = read_token(token) if token else ""
        out: list[Queue] = []
        while len(out) <= limit:
            batch = self.store.list_queues(parent, after, 500)
            if not batch:
                break
            after = batch[-1].name
            out.extend(q for q in batch if state is None or q.state == state)
        page = out[:limit]
        return page, (page_token(page[-1].name) if len(out) > limit else "")

    def GetQueue(self, req: GetQueueRequest) -> Queue:
        return self.queue(req.name)

    def _check(self, permission: str, resource: str) -> None:
        self.authorizer.check(permission, resource, tasks_denied(permission, resource))

    def CreateQueue(self, req: CreateQueueRequest) -> Queue:
        parse_location(req.parent)
        self._check("cloudtasks.queues.create", req.parent)
        name = parse_queue(req.queue.name)
        if name.parent != req.parent:
            raise invalid(f"{req.queue.name} must begin with {req.parent}.")
        if self.store.get_queue(req.queue.name) is not None:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Queue already exists")
        self._check_not_recently_deleted(req.queue.name)
        queue = Queue()
        queue.CopyFrom(req.queue)
        return self._save_new_queue(queue)

    def _check_not_recently_deleted(self, name: str) -> None:
        deleted = self.store.queue_deleted_at(name)
        if deleted is not None and now_us() - deleted < self.limits.queue_name_reservation_s * US:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "The queue cannot be created because a queue with this name existed too "
                "recently.",
            )

    def _save_new_queue(self, queue: Queue) -> Queue:
        # state and purge_time are output only.
        queue.ClearField("state")
        queue.ClearField("purge_time")
        validate_and_default(queue)
        self._check_target_account(queue, None)
        self.store.put_queue(queue)
        self.dispatcher.sync_queue(queue)
        return queue

    def UpdateQueue(self, req: UpdateQueueRequest) -> Queue:
        parse_queue(req.queue.name)
        self._check("cloudtasks.queues.update", req.queue.name)
        current = self.store.get_queue(req.queue.name)
        if current is None:  # UpdateQueue creates a missing queue
            self._check_not_recently_deleted(req.queue.name)
            current = Queue(name=req.queue.name)
            validate_and_default(current)
            updated = apply_update(current, req.queue, req.update_mask)
            return self._save_new_queue(updated)
        updated = apply_update(current, req.queue, req.update_mask)
        self._check_target_account(updated, current)
        self.store.put_queue(updated)
        self.dispatcher.sync_queue(updated)
        return updated

    def _check_target_account(self, queue: Queue, before: Queue | None) -> None:
        """A queue that mints tokens for an account: the caller must be allowed to act as it
        (when the queue gets that account now, not on every update of an unrelated field)."""
        email = _target_account(queue)
        if email and email != (_target_account(before) if before is not None else None):
            self.authorizer.require(self.authorizer.principal(), "iam.serviceAccounts.actAs",
                                    service_account_resource(email), email)

    def DeleteQueue(self, req: DeleteQueueRequest) -> empty_pb2.Empty:
        parse_queue(req.name)
        self._check("cloudtasks.queues.delete", req.name)
        if self.store.get_queue(req.name) is None:
            raise not_found(ENTITY_MISSING)
        self.commits.flush()  # creates accepted before this call go with the queue
        self.store.delete_queue(req.name, now_us())
        self.dispatcher.drop_queue(req.name)
        return empty_pb2.Empty()

    def PurgeQueue(self, req: PurgeQueueRequest) -> Queue:
        queue = self.queue(req.name)
        self.commits.flush()  # creates accepted before the purge are purged with the rest
        now = now_us()
        self.store.purge(req.name, now + int(self.limits.task_name_reservation_s * US))
        queue.purge_time.CopyFrom(to_timestamp(now))
        self.store.put_queue(queue)
        return queue

    def PauseQueue(self, req: PauseQueueRequest) -> Queue:
        return self._set_state(req.name, PAUSED)

    def ResumeQueue(self, req: ResumeQueueRequest) -> Queue:
        return self._set_state(req.name, RUNNING)

    def _set_state(self, name: str, state: int) -> Queue:
        queue = self.queue(name)
        queue.state = state
        self.store.put_queue(queue)
        self.dispatcher.sync_queue(queue)
        return queue

    # -- queue IAM --------------------------------------------------------------------

    def GetIamPolicy(self, req: iam_policy_pb2.GetIamPolicyRequest) -> Policy:
        parse_queue(req.resource)
        self._check("cloudtasks.queues.getIamPolicy", req.resource)
        self.queue(req.resource)
        return self.policies.get(req.resource)

    def SetIamPolicy(self, req: iam_policy_pb2.SetIamPolicyRequest) -> Policy:
        parse_queue(req.resource)
        self._check("cloudtasks.queues.setIamPolicy", req.resource)
        self.queue(req.resource)
        return self.policies.set(req.resource, req)

    def TestIamPermissions(
        self, req: iam_policy_pb2.TestIamPermissionsRequest
    ) -> iam_policy_pb2.TestIamPermissionsResponse:
        """The requested permissions the caller holds on the queue (all of them when IAM is
        not enforced; none on a queue that does not exist)."""
        parse_queue(req.resource)
        answer = self.policies.test(req, QUEUE_PERMISSIONS)
        if self.store.get_queue(req.resource) is None:
            return iam_policy_pb2.TestIamPermissionsResponse()
        if self.authorizer.enforce:
            member = self.authorizer.principal()
            held = [p for p in dict.fromkeys(answer.permissions)
                    if self.authorizer.holds(member, p, req.resource)]
            return iam_policy_pb2.TestIamPermissionsResponse(permissions=held)
        return answer

    # -- tasks ------------------------------------------------------------------------

    def _check_full_view(self, view: int, queue: str) -> None:
        """Tasks with their bodies need fullView: "Authorization for FULL requires
        cloudtasks.tasks.fullView Google IAM permission on the Queue resource"
        (cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2#google.cloud.tasks.v2.Task.View)."""
        if view == FULL:
            self._check("cloudtasks.tasks.fullView", queue)

    def ListTasks(self, req: ListTasksRequest) -> ListTasksResponse:
        self._check_full_view(req.response_view, req.parent)
        self.queue(req.parent)
        limit = page_size(req.page_size, MAX_TASK_PAGE)
        after = read_seq(req.page_token) if req.page_token else 0
        rows = self.store.list_tasks(req.parent, after, limit + 1)
        page = rows[:limit]
        return ListTasksResponse(
            tasks=[_view(r.task, req.response_view) for r in page],
            next_page_token=page_token(str(page[-1].seq)) if len(rows) > limit else "",
        )

    def _gone(self, name: str) -> ApiError:
        reserved = self.store.reserved_until(name)
        if reserved is not None and reserved > now_us():
            return not_found(TASK_GONE)
        return not_found(ENTITY_MISSING)

    def GetTask(self, req: GetTaskRequest) -> Task:
        self._check_full_view(req.response_view, str(parse_task(req.name).queue))
        row = self.store.get_task(req.name)
        if row is None:
            raise self._gone(req.name)
        return _view(row.task, req.response_view)

    def DeleteTask(self, req: DeleteTaskRequest) -> empty_pb2.Empty:
        parse_task(req.name)
        reserve = now_us() + int(self.limits.task_name_reservation_s * US)
        if not self.store.remove_task(req.name, reserve):
            raise self._gone(req.name)
        return empty_pb2.Empty()

    def RunTask(self, req: RunTaskRequest) -> Task:
        parse_task(req.name)
        row = self.store.lease(req.name)
        if row is None:
            raise self._gone(req.name)
        self.dispatcher.run_now(row)
        return _view(row.task, req.response_view)

    def CreateTask(self, req: CreateTaskRequest) -> Awaitable[Task]:
        """Checks the task now; stores it with the other creates of this loop turn (one
        commit, ``group_commit.py``) and answers once that commit is made."""
        queue_name = parse_queue(req.parent)
        # IAM first, as Cloud Tasks does: a caller without the permission learns nothing
        # about the queue (Google's message says it "may not exist").
        member = self.authorizer.principal()
        self.authorizer.require(member, "cloudtasks.tasks.create", req.parent, req.parent)
        task = req.task  # the request is ours alone: no copy needed
        named = bool(task.name)
        if named:
            in_queue = parse_task(task.name).queue
            if str(in_queue) != req.parent:
                raise invalid(
                    f"The queue name from request ('{req.parent}') must be the same as the "
                    f"queue name in the named task ('{in_queue}')."
                )
        queue = self.store.get_queue(req.parent)
        if queue is None:
            raise not_found(QUEUE_MISSING)
        now = now_us()
        new_tasks.check(task, now)
        # A token minted for a service account: the caller must be allowed to act as it.
        token = task.http_request.WhichOneof("authorization_header")
        if token is not None:
            email = getattr(task.http_request, token).service_account_email
            self.authorizer.require(member, "iam.serviceAccounts.actAs",
                                    service_account_resource(email), email)
        new_tasks.complete(task, str(queue_name), now)
        parent, store, logs = req.parent, self.store, self.dispatcher.logs
        entries = task_logs.created(queue, task, now) if logs is not None else []

        def write() -> Task:
            # Checked in the batch, not before it: a task finished since would have left
            # its name reserved. (A generated name is new: 19 random digits.)
            if named:
                reserved = store.reserved_until(task.name)
                if reserved is not None and reserved > now:
                    raise ApiError(grpc.StatusCode.ALREADY_EXISTS, TASK_TOO_RECENT)
            # A name taken by a live task, or by an earlier create of this batch.
            if not store.insert_task(parent, task):
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
            if entries and logs is not None:
                logs.add(entries)  # the taskCreationLog: in the same commit as the task
            return task

        return self._created(self.commits.submit(write), parent, req.response_view)

    async def _created(self, stored: Awaitable[Task], queue: str, view: int) -> Task:
        task = await stored
        # Due now or later, the runner re-reads when its next task is due.
        self.dispatcher.wake(queue)
        # The stored copy was serialized in the batch: the answer may take the task itself.
        task.view = FULL if view == FULL else BASIC
        if task.view == BASIC:
            task.http_request.ClearField("body")
        return task


def _target_account(queue: Queue) -> str | None:
    """The account the queue's http_target mints tokens for, if it does."""
    kind = queue.http_target.WhichOneof("authorization_header")
    return getattr(queue.http_target, kind).service_account_email.lower() if kind else None


def _state_filter(filter_: str) -> int | None:
    text = filter_.replace(" ", "")
    if not text:
        return None
    for sep in (":", "="):
        key, _, value = text.partition(sep)
        if key == "state" and value in ("RUNNING", "PAUSED", "DISABLED"):
            return tasks_v2.Queue.State[value].value
    raise invalid(
        f'Unsupported filter "{filter_}": the emulator filters queues by state only, '
        'for example "state: PAUSED".'
    )
