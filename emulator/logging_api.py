"""Cloud Logging v2 (``google.logging.v2.LoggingServiceV2``): WriteLogEntries and
ListLogEntries, on the emulator's gRPC port, as the official ``LoggingServiceV2Client``
calls them. The other methods (ListLogs, DeleteLog, TailLogEntries, ...) are not
registered, so gRPC answers UNIMPLEMENTED.

What the references say and the emulator does (WriteLogEntriesRequest, ListLogEntriesRequest
and LogEntry in google/logging/v2/logging.proto and log_entry.proto):

- the request's ``log_name``, ``resource`` and ``labels`` fill in entries that lack them (an
  entry's own label wins); a missing ``timestamp`` is the time of receipt and a missing
  ``insert_id`` a unique one, so that entries without them sort in the order sent;
- ``partial_success`` writes the valid entries even when others fail, the call still
  answering the status of a failed entry with ``WriteLogEntriesPartialErrors`` (per entry,
  keyed by index) in its details; ``dry_run`` checks and writes nothing;
- ``order_by`` is ``timestamp asc`` (default) or ``timestamp desc``, ties in write order;
  ``page_size`` defaults to 50, and a negative one or one above 1000 is refused;
  ``page_token`` must come from the same request ("page_token doesn't match arguments from
  the request" otherwise, as Google answers: googleapis/java-logging#987);
- a log ID holds letters, digits, "/", "_", "-" and "." only, URL-encoded in the log name,
  under 512 characters; a leading "/" on the log name is dropped.

IAM, with ``[iam] enforce = true``: writing needs ``logging.logEntries.create`` on each
project written to, listing ``logging.logEntries.list`` on each resource name; refusals in
Google's words, "Permission 'logging.logEntries.create' denied on resource (or it may not
exist)." (kubeflow/pipelines#12591, genkit-ai/genkit#3577).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

import grpc
from google.cloud.logging_v2 import types as logging_types
from google.protobuf import json_format
from google.rpc import status_pb2

from emulator.clock import now_us
from emulator.errors import ApiError, invalid
from emulator.grpc_server import GrpcRouter
from emulator.iam import Authorizer
from emulator.log_filter import FilterError, compile_filter
from emulator.log_store import Cursor, LogRow, LogStore, insert_id, request_digest, to_proto

SERVICE = "google.logging.v2.LoggingServiceV2"
WriteLogEntriesRequest = logging_types.WriteLogEntriesRequest.pb()
WriteLogEntriesResponse = logging_types.WriteLogEntriesResponse.pb()
WriteLogEntriesPartialErrors = logging_types.WriteLogEntriesPartialErrors.pb()
ListLogEntriesRequest = logging_types.ListLogEntriesRequest.pb()
ListLogEntriesResponse = logging_types.ListLogEntriesResponse.pb()
LogEntry = logging_types.LogEntry.pb()
DEFAULT_PAGE, MAX_PAGE = 50, 1000
MAX_RESOURCES = 100  # "A maximum of 100 resources may be specified in a single request."
MAX_FILTER = 20_000  # "The maximum length of a filter is 20,000 characters."
MAX_ENTRY_BYTES = 256 * 1024  # https://cloud.google.com/logging/quotas (LogEntry size)
_LOG_NAME = re.compile(r"^projects/(?P<project>[^/]+)/logs/(?P<log_id>.+)$")
_LOG_ID_CHAR = re.compile(r"[A-Za-z0-9/_.\-]")
_RESOURCE = re.compile(
    r"^projects/(?P<project>[^/]+)(/locations/[^/]+/buckets/[^/]+/views/[^/]+)?$")
TOKEN_MISMATCH = "page_token doesn't match arguments from the request"
FilterCompiler = Callable[[str], tuple[str, list[object]]]


class PartialErrors(ApiError):
    """A refused write whose status carries WriteLogEntriesPartialErrors in its details."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 errors: dict[int, tuple[grpc.StatusCode, str]]) -> None:
        super().__init__(code, message)
        detail = WriteLogEntriesPartialErrors()
        for index, (c, m) in errors.items():
            detail.log_entry_errors[index].code = c.value[0]
            detail.log_entry_errors[index].message = m
        status = status_pb2.Status(code=code.value[0], message=message)
        status.details.add().Pack(detail)
        self.status_details = status.SerializeToString()


def denied(permission: str) -> str:
    return f"Permission '{permission}' denied on resource (or it may not exist)."


def log_project(log_name: str) -> str:
    """The project of a log name, or INVALID_ARGUMENT saying what is wrong with it."""
    m = _LOG_NAME.match(log_name)
    if not m:
        raise invalid(
            f'Invalid log name "{log_name}": a log name is "projects/PROJECT_ID/logs/LOG_ID", '
            'for example "projects/my-project/logs/my-log".')
    log_id = unquote(m["log_id"])
    for ch in log_id:
        if not _LOG_ID_CHAR.match(ch):
            # Google's words (manigandham/serilog-sinks-googlecloudlogging#4).
            raise invalid(f"Log name contains illegal character {ch}")
    if len(log_id) >= 512:
        raise invalid(f"Log ID of {log_name} is {len(log_id)} characters long: the limit is "
                      "511.")
    return m["project"]


class LoggingService:
    def __init__(self, logs: LogStore, authorizer: Authorizer,
                 compile_filter: FilterCompiler = compile_filter) -> None:
        self.logs = logs
        self.authorizer = authorizer
        self.compile_filter = compile_filter

    def register(self, router: GrpcRouter) -> None:
        router.add_all(SERVICE, self, {
            "WriteLogEntries": WriteLogEntriesRequest,
            "ListLogEntries": ListLogEntriesRequest,
        })

    # -- WriteLogEntries ---------------------------------------------------------------

    def WriteLogEntries(self, req: WriteLogEntriesRequest) -> WriteLogEntriesResponse:
        if not req.entries:
            raise invalid("entries is required: send at least one log entry.")
        now = now_us()
        member = self.authorizer.principal()
        rows: list[LogRow] = []
        errors: dict[int, tuple[grpc.StatusCode, str]] = {}
        for i, entry in enumerate(req.entries):
            try:
                rows.append(self._row(req, entry, i, now, member))
            except ApiError as e:
                errors[i] = (e.code, e.message)
        if errors and not req.partial_success:
            code, message = next(iter(errors.values()))
            raise ApiError(code, message)
        if not req.dry_run:
            self.logs.add(rows)
        if errors:
            code, message = next(iter(errors.values()))
            raise PartialErrors(code, message, errors)
        return WriteLogEntriesResponse()

    def _row(self, req: WriteLogEntriesRequest, given: LogEntry, index: int, now: int,
             member: str) -> LogRow:
        entry = LogEntry()
        entry.CopyFrom(given)
        if not entry.log_name:
            entry.log_name = req.log_name
        entry.log_name = entry.log_name.removeprefix("/")  # as Google ingests "/projects/..."
        if not entry.log_name:
            raise invalid(
                f"Log entry {index} has no log name: set log_name on the request or on the "
                'entry, as "projects/PROJECT_ID/logs/LOG_ID".')
        project = log_project(entry.log_name)
        permission = "logging.logEntries.create"
        if not self.authorizer.allows(member, permission, f"projects/{project}"):
            raise ApiError(grpc.StatusCode.PERMISSION_DENIED, denied(permission))
        if not entry.HasField("resource"):
            entry.resource.CopyFrom(req.resource)
        if not entry.resource.type:
            raise invalid(
                f"Log entry {index} has no monitored resource: set resource on the request "
                'or on the entry, for example {"type": "global"}.')
        for key, value in req.labels.items():
            entry.labels.setdefault(key, value)
        if not entry.HasField("timestamp"):
            entry.timestamp.FromMicroseconds(now)
        entry.receive_timestamp.FromMicroseconds(now)
        if not entry.insert_id:
            entry.insert_id = insert_id()
        size = entry.ByteSize()
        if size > MAX_ENTRY_BYTES:
            raise invalid(f"Log entry with size {size / 1024:.1f}K exceeds maximum size of "
                          "256.0K")
        try:
            text = json_format.MessageToJson(entry, indent=None)
        except (TypeError, KeyError, json_format.Error):
            raise invalid(
                f"Log entry {index}: protoPayload holds {entry.proto_payload.type_url}, a "
                "type the emulator does not know; use jsonPayload instead.") from None
        return entry.log_name, entry.timestamp.ToMicroseconds(), entry.severity, text

    # -- ListLogEntries ----------------------------------------------------------------

    def ListLogEntries(self, req: ListLogEntriesRequest) -> ListLogEntriesResponse:
        projects = self._projects(req.resource_names)
        if req.page_size < 0 or req.page_size > MAX_PAGE:
            raise invalid(f"page_size must be between 0 and {MAX_PAGE} (0 means the default, "
                          f"{DEFAULT_PAGE}); got {req.page_size}.")
        limit = req.page_size or DEFAULT_PAGE
        descending = _order(req.order_by)
        if len(req.filter) > MAX_FILTER:
            raise invalid(f"The filter is {len(req.filter)} characters long: the limit is "
                          f"{MAX_FILTER}.")
        where, params = "", []
        if req.filter.strip():
            try:
                where, params = self.compile_filter(req.filter)
            except FilterError as e:
                raise invalid(e.message) from None
        digest = request_digest(req.resource_names, req.filter, descending)
        after = None
        if req.page_token:
            after = Cursor.read(req.page_token, digest)
            if after is None:
                raise invalid(TOKEN_MISMATCH)
        rows = self.logs.list(projects, where, params, descending, after, limit + 1, now_us())
        page = rows[:limit]
        token = ""
        if len(rows) > limit:
            seq, ts, _ = page[-1]
            token = Cursor(ts, seq, digest).token()
        return ListLogEntriesResponse(entries=[to_proto(r[2]) for r in page],
                                      next_page_token=token)

    def _projects(self, names: list[str]) -> list[str]:
        if not names:
            raise invalid('resource_names is required: name the project whose logs to list, '
                          'as "projects/PROJECT_ID".')
        if len(names) > MAX_RESOURCES:
            raise invalid(f"At most {MAX_RESOURCES} resource names may be given; got "
                          f"{len(names)}.")
        projects: list[str] = []
        for name in names:
            m = _RESOURCE.match(name)
            if not m:
                raise invalid(
                    f'Invalid resource name "{name}": the emulator holds the logs of '
                    'projects, named "projects/PROJECT_ID" (or a view of one, '
                    '"projects/PROJECT_ID/locations/L/buckets/B/views/V").')
            permission = "logging.logEntries.list"
            self.authorizer.check(permission, f"projects/{m['project']}", denied(permission))
            if m["project"] not in projects:
                projects.append(m["project"])
        return projects


def _order(order_by: str) -> bool:
    """True for newest first."""
    text = " ".join(order_by.lower().split())
    if text in ("", "timestamp", "timestamp asc"):
        return False
    if text == "timestamp desc":
        return True
    raise invalid(f'Invalid order_by "{order_by}": the only permitted values are '
                  '"timestamp asc" (the default) and "timestamp desc".')
