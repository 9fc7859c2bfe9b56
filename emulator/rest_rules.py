"""The ``google.api.http`` rules of the APIs the emulator serves: which HTTP verb and path
call which method, and where its request's fields come from.

The protobuf descriptors in the installed packages do not carry these options, so they are
kept here by hand, copied from googleapis/googleapis (commit f8291d2b, 2026-08-22):

- ``google/cloud/tasks/v2/cloudtasks.proto`` and ``google/cloud/tasks/v2beta3/cloudtasks.proto``
  (the same paths under ``/v2beta3/``, plus BatchCreateTasks, BatchDeleteTasks and
  Get/UpdateCmekConfig, which google-cloud-tasks 2.26's v2 REST transport also calls under
  ``/v2/``);
- ``google/cloud/tasks/v2/cloudtasks_v2.yaml`` and ``v2beta3/cloudtasks_v2beta3.yaml``,
  ``http.rules``: the locations mixin of ``google/cloud/location/locations.proto`` bound
  under each version;
- ``google/cloud/run/v2/service.proto``;
- ``google/logging/v2/logging.proto``;
- ``google/iam/admin/v1/iam.proto`` (service accounts),
  ``google/iam/credentials/v1/iamcredentials.proto`` and
  ``google/cloud/resourcemanager/v3/projects.proto``.

A rule whose method the emulator does not register (Cloud Run's CreateService, Logging's
ListLogs, v2beta3's CreateQueue...) answers 501 UNIMPLEMENTED, as the gRPC port does, so a
REST client learns the method is missing rather than that the path is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

TASKS = "google.cloud.tasks.{version}.CloudTasks"
LOCATIONS = "google.cloud.location.Locations"
RUN_V2 = "google.cloud.run.v2.Services"
LOGGING_V2 = "google.logging.v2.LoggingServiceV2"
IAM_ADMIN_V1 = "google.iam.admin.v1.IAM"
IAM_CREDENTIALS_V1 = "google.iam.credentials.v1.IAMCredentials"
RESOURCE_MANAGER_V3 = "google.cloud.resourcemanager.v3.Projects"


@dataclass(frozen=True)
class HttpRule:
    """One binding: ``verb`` ``template`` calls ``service``/``method``; ``body`` is "" (no
    body), "*" (the whole request) or the request field the body fills."""

    verb: str
    template: str
    body: str
    service: str
    method: str


_Q = "projects/*/locations/*/queues/*"
_T = f"{_Q}/tasks/*"


def _tasks(version: str) -> list[HttpRule]:
    s = TASKS.format(version=version)
    v = f"/{version}"
    rules = [
        ("GET", f"{v}/{{parent=projects/*/locations/*}}/queues", "", "ListQueues"),
        ("GET", f"{v}/{{name={_Q}}}", "", "GetQueue"),
        ("POST", f"{v}/{{parent=projects/*/locations/*}}/queues", "queue", "CreateQueue"),
        ("PATCH", f"{v}/{{queue.name={_Q}}}", "queue", "UpdateQueue"),
        ("DELETE", f"{v}/{{name={_Q}}}", "", "DeleteQueue"),
        ("POST", f"{v}/{{name={_Q}}}:purge", "*", "PurgeQueue"),
        ("POST", f"{v}/{{name={_Q}}}:pause", "*", "PauseQueue"),
        ("POST", f"{v}/{{name={_Q}}}:resume", "*", "ResumeQueue"),
        ("POST", f"{v}/{{resource={_Q}}}:getIamPolicy", "*", "GetIamPolicy"),
        ("POST", f"{v}/{{resource={_Q}}}:setIamPolicy", "*", "SetIamPolicy"),
        ("POST", f"{v}/{{resource={_Q}}}:testIamPermissions", "*", "TestIamPermissions"),
        ("GET", f"{v}/{{parent={_Q}}}/tasks", "", "ListTasks"),
        ("GET", f"{v}/{{name={_T}}}", "", "GetTask"),
        ("POST", f"{v}/{{parent={_Q}}}/tasks", "*", "CreateTask"),
        ("DELETE", f"{v}/{{name={_T}}}", "", "DeleteTask"),
        ("POST", f"{v}/{{name={_T}}}:run", "*", "RunTask"),
    ]
    cmek = "projects/*/locations/*/cmekConfig"
    rules += [  # not served (501), as on gRPC
        ("POST", f"{v}/{{parent={_Q}}}/tasks:batchCreate", "*", "BatchCreateTasks"),
        ("POST", f"{v}/{{parent={_Q}}}/tasks:batchDelete", "*", "BatchDeleteTasks"),
        ("GET", f"{v}/{{name={cmek}}}", "", "GetCmekConfig"),
        ("PATCH", f"{v}/{{cmek_config.name={cmek}}}", "cmek_config", "UpdateCmekConfig"),
    ]
    return [
        *(HttpRule(verb, template, body, s, method) for verb, template, body, method in rules),
        HttpRule("GET", f"{v}/{{name=projects/*}}/locations", "", LOCATIONS, "ListLocations"),
        HttpRule("GET", f"{v}/{{name=projects/*/locations/*}}", "", LOCATIONS, "GetLocation"),
    ]


_S = "projects/*/locations/*/services/*"
_SA = "projects/*/serviceAccounts/*"

RULES: tuple[HttpRule, ...] = (
    *_tasks("v2"),
    *_tasks("v2beta3"),
    HttpRule("POST", "/v2/{parent=projects/*/locations/*}/services", "service", RUN_V2,
             "CreateService"),
    HttpRule("GET", f"/v2/{{name={_S}}}", "", RUN_V2, "GetService"),
    HttpRule("GET", "/v2/{parent=projects/*/locations/*}/services", "", RUN_V2, "ListServices"),
    HttpRule("PATCH", f"/v2/{{service.name={_S}}}", "service", RUN_V2, "UpdateService"),
    HttpRule("DELETE", f"/v2/{{name={_S}}}", "", RUN_V2, "DeleteService"),
    HttpRule("GET", f"/v2/{{resource={_S}}}:getIamPolicy", "", RUN_V2, "GetIamPolicy"),
    HttpRule("POST", f"/v2/{{resource={_S}}}:setIamPolicy", "*", RUN_V2, "SetIamPolicy"),
    HttpRule("POST", f"/v2/{{resource={_S}}}:testIamPermissions", "*", RUN_V2,
             "TestIamPermissions"),
    HttpRule("POST", "/v2/entries:write", "*", LOGGING_V2, "WriteLogEntries"),
    HttpRule("POST", "/v2/entries:list", "*", LOGGING_V2, "ListLogEntries"),
    HttpRule("GET", "/v2/monitoredResourceDescriptors", "", LOGGING_V2,
             "ListMonitoredResourceDescriptors"),
    HttpRule("GET", "/v2/{parent=*/*}/logs", "", LOGGING_V2, "ListLogs"),
    HttpRule("DELETE", "/v2/{log_name=*/*/logs/*}", "", LOGGING_V2, "DeleteLog"),
    HttpRule("GET", "/v1/{name=projects/*}/serviceAccounts", "", IAM_ADMIN_V1,
             "ListServiceAccounts"),
    HttpRule("GET", f"/v1/{{name={_SA}}}", "", IAM_ADMIN_V1, "GetServiceAccount"),
    HttpRule("POST", "/v1/{name=projects/*}/serviceAccounts", "*", IAM_ADMIN_V1,
             "CreateServiceAccount"),
    HttpRule("DELETE", f"/v1/{{name={_SA}}}", "", IAM_ADMIN_V1, "DeleteServiceAccount"),
    HttpRule("POST", f"/v1/{{resource={_SA}}}:getIamPolicy", "", IAM_ADMIN_V1, "GetIamPolicy"),
    HttpRule("POST", f"/v1/{{resource={_SA}}}:setIamPolicy", "*", IAM_ADMIN_V1, "SetIamPolicy"),
    HttpRule("POST", f"/v1/{{resource={_SA}}}:testIamPermissions", "*", IAM_ADMIN_V1,
             "TestIamPermissions"),
    *(HttpRule("POST", f"/v1/{{name={_SA}}}:{verb}", "*", IAM_CREDENTIALS_V1, method)
      for verb, method in (("generateAccessToken", "GenerateAccessToken"),
                           ("generateIdToken", "GenerateIdToken"), ("signBlob", "SignBlob"),
                           ("signJwt", "SignJwt"))),
    HttpRule("GET", "/v3/{name=projects/*}", "", RESOURCE_MANAGER_V3, "GetProject"),
    HttpRule("POST", "/v3/{resource=projects/*}:getIamPolicy", "*", RESOURCE_MANAGER_V3,
             "GetIamPolicy"),
    HttpRule("POST", "/v3/{resource=projects/*}:setIamPolicy", "*", RESOURCE_MANAGER_V3,
             "SetIamPolicy"),
    HttpRule("POST", "/v3/{resource=projects/*}:testIamPermissions", "*", RESOURCE_MANAGER_V3,
             "TestIamPermissions"),
)
