"""The answers of every Google call one diagnosis needs, fetched concurrently; nothing here
judges them (see ``checks``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from google.cloud import run_v2, tasks_v2
from google.iam.v1 import iam_policy_pb2

from enqueuer_core import cloud_run, iam_policies, setting_names
from enqueuer_core.calls import ClientError, Got, call
from enqueuer_core.config import Settings
from enqueuer_core.diagnose.target import EffectiveTarget, effective_target
from enqueuer_core.inspect import TaskSnapshot
from enqueuer_core.setup.plan import project_number
from enqueuer_core.workers import WorkerSpec

T = TypeVar("T")


class Diagnosis:
    """The answers of every Google call one run needs, fetched concurrently."""

    def __init__(self, settings: Settings, specs: list[WorkerSpec], tasks: Any, run: Any,
                 iam: Any, principal: str | None, timeout_s: float,
                 projects: Any = None, enqueuers: list[str] | None = None) -> None:
        self.s = settings
        self.specs = specs
        self.tasks, self.run, self.iam, self.projects = tasks, run, iam, projects
        self.principal = principal
        # Accounts judged from the policies instead of TestIamPermissions (see diagnose()).
        self.enqueuers = enqueuers or []
        self.timeout = timeout_s
        self.location = f"projects/{settings.project_id}/locations/{settings.tasks_region}"
        # Each queue's listed tasks' last attempts that got an answer (the capacity check
        # times them); filled by _list_tasks.
        self.attempts: dict[str, list[tasks_v2.Attempt]] = {}

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, pool: ThreadPoolExecutor) -> None:
        queues = sorted({spec.queue for spec in self.specs})
        services = pool.submit(self._list_services)
        if self.enqueuers:
            act_as = caller_policy = pool.submit(self._caller_policy)
            create = {q: pool.submit(self._queue_policy, q) for q in queues}
        else:
            act_as = pool.submit(self._act_as)
            create = {q: pool.submit(self._test_queue, q) for q in queues}
            # Who may mint tokens as the caller account (the service_agent check).
            caller_policy = pool.submit(self._caller_policy)
        project = pool.submit(self._project_policy)
        number = pool.submit(self._project_number)
        got_queue = {q: pool.submit(self._get_queue, q) for q in queues}
        listed = {q: pool.submit(self._list_tasks, q) for q in queues}
        self.services: Got = services.result()
        found = {self.service_of(spec) for spec in self.specs} - {None}
        policies = {name: pool.submit(self._policy, name) for name in found}
        self.act_as = act_as.result()
        self.queues = {q: f.result() for q, f in got_queue.items()}
        self.create = {q: f.result() for q, f in create.items()}
        self.listed = {q: f.result() for q, f in listed.items()}
        self.policies = {name: f.result() for name, f in policies.items()}
        # Grants on the project count too; unreadable, only the resources' own are seen.
        self.project_policy: Got = project.result()
        self.caller_policy: Got = caller_policy.result()
        self.project_number: Got = number.result()  # names the Cloud Tasks service agent

    def _project_number(self) -> Got:
        return project_number(self._client(self.projects, "Resource Manager API"),
                              self.s.project_id or "", self.timeout)

    def _client(self, client: Any, what: str) -> Any:
        if isinstance(client, Got):
            raise ClientError(client.error or what)
        return client

    def _list_services(self) -> Got:
        return call("the Cloud Run Admin API", lambda: cloud_run.list_services(
            self._client(self.run, "Cloud Run Admin API"), self.location, self.timeout))

    def _policy(self, service: str) -> Got:
        return call("the Cloud Run Admin API", lambda: self._client(
            self.run, "Cloud Run Admin API").get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(resource=service),
            retry=None, timeout=self.timeout))

    def _act_as(self) -> Got:
        if "@" not in (self.s.caller_sa or ""):
            return Got(error="needs: caller_sa")
        return call("the IAM API", lambda: self._client(self.iam, "IAM API")
                     .test_iam_permissions(
            request=iam_policy_pb2.TestIamPermissionsRequest(
                resource=f"projects/-/serviceAccounts/{self.s.caller_sa}",
                permissions=["iam.serviceAccounts.actAs"]),
            retry=None, timeout=self.timeout))

    def _caller_policy(self) -> Got:
        if "@" not in (self.s.caller_sa or ""):
            return Got(error="needs: caller_sa")
        return call("the IAM API", lambda: self._client(self.iam, "IAM API").get_iam_policy(
            request=iam_policies.policy_request(f"projects/-/serviceAccounts/{self.s.caller_sa}"),
            retry=None, timeout=self.timeout))

    def _queue_policy(self, queue: str) -> Got:
        return call("Cloud Tasks", lambda: self._client(self.tasks, "Cloud Tasks")
                     .get_iam_policy(request=iam_policies.policy_request(self.s.queue_path(queue)),
                                     retry=None, timeout=self.timeout))

    def _project_policy(self) -> Got:
        return call("the Resource Manager API", lambda: self._client(
            self.projects, "Resource Manager API").get_iam_policy(
            request=iam_policies.policy_request(f"projects/{self.s.project_id}"),
            retry=None, timeout=self.timeout))

    def _get_queue(self, queue: str) -> Got:
        return call("Cloud Tasks", lambda: self._client(self.tasks, "Cloud Tasks").get_queue(
            name=self.s.queue_path(queue), retry=None, timeout=self.timeout))

    def _test_queue(self, queue: str) -> Got:
        return call("Cloud Tasks", lambda: self._client(self.tasks, "Cloud Tasks")
                     .test_iam_permissions(
            request=iam_policy_pb2.TestIamPermissionsRequest(
                resource=self.s.queue_path(queue), permissions=["cloudtasks.tasks.create"]),
            retry=None, timeout=self.timeout))

    def _list_tasks(self, queue: str) -> Got:
        def read() -> list[TaskSnapshot]:
            tasks = self._client(self.tasks, "Cloud Tasks").list_tasks(
                request=tasks_v2.ListTasksRequest(parent=self.s.queue_path(queue),
                                                  page_size=1000),
                retry=None, timeout=self.timeout).tasks
            self.attempts[queue] = [t.last_attempt for t in tasks
                                    if t.last_attempt.response_time]
            return [TaskSnapshot.from_task(t) for t in tasks]
        return call("Cloud Tasks", read)

    # -- helpers -----------------------------------------------------------------------

    def service_of(self, spec: WorkerSpec) -> str | None:
        """The name of the service whose URL is the worker's scheme and host."""
        svc = self.service(spec)
        return svc.name if svc is not None else None

    def target(self, spec: WorkerSpec) -> EffectiveTarget:
        """Where ``spec``'s tasks really go, after its queue's http_target (none assumed when
        the queue could not be read)."""
        queue = self.queues.get(spec.queue)
        return effective_target(spec, self.s.caller_sa, queue.value if queue else None)

    def service(self, spec: WorkerSpec) -> run_v2.Service | None:
        if self.services.value is None:
            return None
        return cloud_run.service_for(self.services.value, spec.url)

    def env(self, spec: WorkerSpec, prefix: str, suffix: str = "") -> str:
        """Where the worker's setting is (``AUD_BRAIN``, or its workers file field);
        ``prefix``: AUD, URL, DEADLINE or QUEUE (``suffix`` is implied by it)."""
        return str(setting_names.by_prefix(spec, prefix, self.s))

    def setting(self, spec: WorkerSpec, prefix: str, value: object, suffix: str = "") -> str:
        """The setting with ``value``: ``AUD_BRAIN=...``, or the workers file's line."""
        return setting_names.by_prefix(spec, prefix, self.s).assign(value)

    @property
    def where(self) -> str:
        return f"--region={self.s.tasks_region} --project={self.s.project_id}"




