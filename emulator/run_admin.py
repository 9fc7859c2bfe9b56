"""Cloud Run Admin v2 (``google.cloud.run.v2.Services``): the emulator's services as the
official client reads them, and their IAM policies.

GetService, ListServices (paginated), GetIamPolicy, SetIamPolicy and TestIamPermissions.
Services come from the configuration, so Create/Update/DeleteService are not registered
and answer UNIMPLEMENTED, as do the long-running operations.

Each service reads as a deployed one: ``uri`` and ``urls`` its local base URL, a Ready
``terminal_condition``, one revision serving 100 % of the traffic, its capacity as
``template.scaling.max_instance_count`` and ``template.max_instance_request_concurrency``
(the ``max_instances`` and ``concurrency`` of its configuration). ``create_time`` is when
the emulator first hosted it (kept in the state), ``update_time`` and ``generation`` change
when its configuration does. With ``[iam] enforce`` on, the methods need the
``run.services.*`` permissions Google checks, and TestIamPermissions answers what the
caller holds; with it off, every valid permission asked about.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

import grpc
from google.api import launch_stage_pb2
from google.cloud import run_v2
from google.iam.v1 import iam_policy_pb2

from emulator.clock import duration, now_us, to_timestamp
from emulator.config import EmulatorConfig, ServiceConfig
from emulator.errors import ApiError, invalid
from emulator.grpc_server import GrpcRouter
from emulator.iam import Authorizer, Policy
from emulator.names import LOCATION_RE
from emulator.paging import page_size, page_token, read_token
from emulator.store import Store

RUN_V2 = "google.cloud.run.v2.Services"
Service = run_v2.Service.pb()
GetServiceRequest = run_v2.GetServiceRequest.pb()
ListServicesRequest = run_v2.ListServicesRequest.pb()
ListServicesResponse = run_v2.ListServicesResponse.pb()
SERVICE_PERMISSIONS = frozenset(
    [f"run.services.{v}" for v in ("get", "update", "delete", "getIamPolicy", "setIamPolicy")]
    + ["run.routes.invoke"]
)
INGRESS = {
    "all": run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL.value,
    "internal": run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY.value,
    "internal-and-cloud-load-balancing":
        run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER.value,
}
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED.value
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST.value
MAX_PAGE = 1000
IMAGE = "emulator/sample-worker"


@dataclass
class ServiceRecord:
    """A hosted service: its configuration, where it listens, and its history."""

    config: ServiceConfig
    name: str  # projects/P/locations/L/services/S
    uri: str = ""
    created_us: int = 0
    updated_us: int = 0
    generation: int = 1

    def load_history(self, store: Store) -> None:
        """Times and generation from the state; a changed configuration is an update."""
        digest = hashlib.sha256(self.config.model_dump_json().encode()).hexdigest()[:16]
        key = f"cloud_run_service:{self.name}"
        raw = store.get_meta(key)
        now = now_us()
        seen = json.loads(raw) if raw else None
        if seen is None:
            self.created_us = self.updated_us = now
            self.generation = 1
        else:
            self.created_us = seen["created_us"]
            changed = seen["digest"] != digest
            self.updated_us = now if changed else seen["updated_us"]
            self.generation = seen["generation"] + (1 if changed else 0)
        store.set_meta(key, json.dumps({
            "created_us": self.created_us, "updated_us": self.updated_us,
            "generation": self.generation, "digest": digest}).encode())

    def proto(self) -> Service:
        cfg = self.config
        svc = Service(
            name=self.name,
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
            generation=self.generation,
            observed_generation=self.generation,
            uri=self.uri,
            urls=[self.uri],
            custom_audiences=cfg.custom_audiences,
            ingress=INGRESS[cfg.ingress],
            launch_stage=launch_stage_pb2.GA,
            etag=f'"{self.generation}-{self.updated_us}"',
        )
        svc.create_time.CopyFrom(to_timestamp(self.created_us))
        svc.update_time.CopyFrom(to_timestamp(self.updated_us))
        svc.template.timeout.CopyFrom(duration(cfg.timeout_s))
        svc.template.service_account = cfg.service_account or ""
        # Always set, as Google answers for a service deployed with its defaults (100, 80).
        svc.template.scaling.max_instance_count = cfg.max_instances
        svc.template.max_instance_request_concurrency = cfg.concurrency
        svc.template.containers.add(image=IMAGE).ports.add(name="http1", container_port=8080)
        revision = f"{self.name}/revisions/{cfg.name}-{self.generation:05d}-emu"
        svc.latest_ready_revision = svc.latest_created_revision = revision
        svc.traffic.add(type_=_LATEST, percent=100)
        svc.traffic_statuses.add(type_=_LATEST, percent=100)
        ready = to_timestamp(self.updated_us)
        svc.terminal_condition.type_ = "Ready"
        svc.terminal_condition.state = _SUCCEEDED
        svc.terminal_condition.last_transition_time.CopyFrom(ready)
        for kind in ("RoutesReady", "ConfigurationsReady"):
            svc.conditions.add(type_=kind, state=_SUCCEEDED).last_transition_time.CopyFrom(ready)
        return svc


class RunAdmin:
    def __init__(self, config: EmulatorConfig, authorizer: Authorizer,
                 services: dict[str, ServiceRecord]) -> None:
        self.config = config
        self.authorizer = authorizer
        self.policies = authorizer.policies
        self.services = services  # by resource name; filled when the services start

    def register(self, router: GrpcRouter) -> None:
        router.add_all(RUN_V2, self, {
            "GetService": GetServiceRequest,
            "ListServices": ListServicesRequest,
            "GetIamPolicy": iam_policy_pb2.GetIamPolicyRequest,
            "SetIamPolicy": iam_policy_pb2.SetIamPolicyRequest,
            "TestIamPermissions": iam_policy_pb2.TestIamPermissionsRequest,
        })

    def _check(self, permission: str, resource: str) -> None:
        if not self.authorizer.allows(self.authorizer.principal(), permission, resource):
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission '{permission}' denied on resource '{resource}' "
                "(or resource may not exist).",
            )

    def service(self, name: str) -> ServiceRecord:
        parts = name.split("/")
        if (len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations"
                or parts[4] != "services" or not all(parts[1::2])):
            raise invalid(
                f"Invalid resource name '{name}': a service is named "
                "projects/<PROJECT_ID>/locations/<LOCATION>/services/<SERVICE_ID>."
            )
        record = self.services.get(name)
        if record is None:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND,
                f"Resource '{parts[5]}' of kind 'SERVICE' in region '{parts[3]}' in project "
                f"'{parts[1]}' does not exist.",
            )
        return record

    def GetService(self, req: GetServiceRequest) -> Service:
        self._check("run.services.get", req.name)
        return self.service(req.name).proto()

    def ListServices(self, req: ListServicesRequest) -> ListServicesResponse:
        m = LOCATION_RE.match(req.parent)
        if not m:
            raise invalid(
                f"Invalid parent '{req.parent}': use projects/<PROJECT_ID>/locations/<LOCATION>"
                " (or locations/- for every location)."
            )
        self._check("run.services.list", req.parent)
        size = page_size(req.page_size, MAX_PAGE)
        after = read_token(req.page_token) if req.page_token else ""
        prefix = (f"projects/{m['project']}/locations/"
                  + ("" if m["location"] == "-" else f"{m['location']}/"))
        names = sorted(n for n in self.services if n.startswith(prefix) and n > after)
        page = names[:size]
        token = page_token(page[-1]) if len(names) > size else ""
        return ListServicesResponse(services=[self.services[n].proto() for n in page],
                                    next_page_token=token)

    def GetIamPolicy(self, req: iam_policy_pb2.GetIamPolicyRequest) -> Policy:
        self._check("run.services.getIamPolicy", req.resource)
        self.service(req.resource)
        return self.policies.get(req.resource)

    def SetIamPolicy(self, req: iam_policy_pb2.SetIamPolicyRequest) -> Policy:
        self._check("run.services.setIamPolicy", req.resource)
        self.service(req.resource)
        return self.policies.set(req.resource, req)

    def TestIamPermissions(
        self, req: iam_policy_pb2.TestIamPermissionsRequest
    ) -> iam_policy_pb2.TestIamPermissionsResponse:
        self.service(req.resource)
        asked = self.policies.test(req, SERVICE_PERMISSIONS)
        if not self.authorizer.enforce:
            return asked
        who = self.authorizer.principal()
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=[
            p for p in asked.permissions if self.authorizer.holds(who, p, req.resource)
        ])
