"""Every failure Enqueuer reports, and the one place Google's errors are translated.

    EnqueuerError                 502  exit 1   an upstream failure nothing below explains
    ├── InvalidRequest            422  exit 2   bad input: the message says what to change
    │   └── UnknownService        422  exit 2   the message lists the valid services
    ├── PayloadTooLarge           413  exit 2   the task would exceed Cloud Tasks' size limit
    ├── DuplicateTask             409  exit 3   a task with this key exists or existed recently
    ├── PermissionDenied          403  exit 4   names the permission, the principal and the fix
    │   └── setup.SetupRefused    403  exit 4   `enqueuer setup --apply` stopped: what was done
    ├── QueueNotFound             502  exit 5   names the queue and the command that creates it
    ├── TaskNotFound              404  exit 7   the task ran or was deleted already
    ├── Unavailable               503  exit 6   Cloud Tasks unreachable or too slow: retry
    ├── verify.RequestNotVerified 401  exit 8   a worker got no valid token for its audience
    ├── verify.CallerNotAllowed   403  exit 9   a valid token, of an account not allowed
    ├── verify.CertsUnavailable   503  exit 6   Google's certificates could not be fetched
    ├── Forbidden                 403  exit 11  Enqueuer's access config does not let this
    │                                           principal do this: names the role needed and
    │                                           the [access] line that would grant it
    ├── Unauthenticated           401  exit 12  no valid identity (an API caller's ID token, a
    │   │                                       dashboard user's IAP assertion, the CLI's
    │   │                                       credentials without an email): says what to send
    │   └── access.visitors.LoginNeeded         a dashboard visitor who has not logged in yet
    └── ConfigError               500  exit 2   settings refused at start-up (no client sees it)

Each class carries its HTTP status (the API), its exit code (the CLI) and a stable
``code`` string that both print.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc


class EnqueuerError(Exception):
    http_status = 502
    exit_code = 1
    code = "upstream_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidRequest(EnqueuerError):
    http_status = 422
    exit_code = 2
    code = "invalid_request"


class UnknownService(InvalidRequest):
    code = "unknown_service"


class PayloadTooLarge(EnqueuerError):
    http_status = 413
    exit_code = 2
    code = "payload_too_large"


class DuplicateTask(EnqueuerError):
    http_status = 409
    exit_code = 3
    code = "duplicate"


class PermissionDenied(EnqueuerError):
    http_status = 403
    exit_code = 4
    code = "permission_denied"


class QueueNotFound(EnqueuerError):
    http_status = 502
    exit_code = 5
    code = "queue_not_found"


class TaskNotFound(EnqueuerError):
    http_status = 404
    exit_code = 7
    code = "task_not_found"


class Unavailable(EnqueuerError):
    http_status = 503
    exit_code = 6
    code = "unavailable"


class Forbidden(EnqueuerError):
    """Refused by Enqueuer itself (``enqueuer_core.access``), before Google is asked."""

    http_status = 403
    exit_code = 11
    code = "forbidden"


class Unauthenticated(EnqueuerError):
    http_status = 401
    exit_code = 12
    code = "unauthenticated"


class ConfigError(EnqueuerError):
    http_status = 500
    exit_code = 2
    code = "config_error"


# The permissions Enqueuer's calls need (CreateTask's, the FULL view's), and the role that
# grants each.
_FIXES = {
    "iam.serviceAccounts.actAs": (
        "roles/iam.serviceAccountUser",
        "gcloud iam service-accounts add-iam-policy-binding {account} "
        "--member={member} --role=roles/iam.serviceAccountUser --project={project}",
        "on the caller account {account}",
    ),
    "cloudtasks.tasks.create": (
        "roles/cloudtasks.enqueuer",
        "gcloud tasks queues add-iam-policy-binding {queue_id} --location={location} "
        "--member={member} --role=roles/cloudtasks.enqueuer --project={project}",
        "on the queue {queue}",
    ),
    # ListLogEntries (the history); Google's refusal often names only the log view.
    "logging.logEntries.list": (
        "roles/logging.viewer",
        "gcloud projects add-iam-policy-binding {project} --member={member} "
        "--role=roles/logging.viewer",
        "on the project {project}",
    ),
    # The FULL view: tasks with their bodies (payload search, bulk filters on payloads).
    "cloudtasks.tasks.fullView": (
        "roles/cloudtasks.viewer",
        "gcloud tasks queues add-iam-policy-binding {queue_id} --location={location} "
        "--member={member} --role=roles/cloudtasks.viewer --project={project}",
        "on the queue {queue} (reading its tasks' payloads, the FULL view, needs it)",
    ),
}
_PERMISSION = re.compile(r"([a-z]+(?:\.[A-Za-z]+){2,})")


def permissions_named(message: str) -> list[str]:
    """The IAM permissions (``service.resource.verb``) a Google message names."""
    return list(dict.fromkeys(p for p in _PERMISSION.findall(message)
                              if not p.endswith((".com", ".test", ".org", ".net"))))


@contextmanager
def translate_google_errors(
    *, queue: str, caller: str | None = None, principal: str | None = None,
    task: str | None = None, api: str = "Cloud Tasks", needs: str | None = None,
) -> Iterator[None]:
    """Run a Cloud Tasks call; turn whatever Google raises into an ``EnqueuerError``.

    ``queue`` is the full queue name the call is about, ``caller`` the service account the
    task's token is minted for, ``principal`` who is calling Google (when known), ``task``
    the task name being created. Another API's call (``api="Cloud Logging"``) passes its
    project as ``queue`` and the permission it ``needs``, named when Google's refusal does
    not name one this module knows.
    """
    try:
        yield
    except gexc.AlreadyExists as e:
        recently = "existed too recently" in e.message
        what = "existed recently (it ran or was deleted)" if recently else "is already queued"
        raise DuplicateTask(
            f"A task with this idempotency key {what}: {task or 'see the queue'}. "
            "Send a new idempotency key to enqueue the job again."
        ) from None
    except gexc.PermissionDenied as e:
        raise _permission_denied(e.message, queue, caller, principal, needs) from None
    except gexc.NotFound as e:
        parts = queue.split("/")
        if "Queue does not exist" in e.message and len(parts) == 6:
            project, location, queue_id = parts[1], parts[3], parts[5]
            raise QueueNotFound(
                f"The queue {queue} does not exist. Create it with: gcloud tasks queues "
                f"create {queue_id} --location={location} --project={project}"
            ) from None
        if task:
            raise TaskNotFound(
                f"The task {task} does not exist: it may have run or been deleted already. "
                f"({e.message})"
            ) from None
        raise EnqueuerError(f"{api} answered NOT_FOUND: {e.message}") from None
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
        raise Unavailable(
            f"{api} is unreachable or too slow ({type(e).__name__}: {e.message}). "
            + ("Nothing was enqueued; retry later." if task else "Retry later.")
        ) from None
    except gexc.InvalidArgument as e:
        what = "the task" if api == "Cloud Tasks" else "the request"
        raise InvalidRequest(f"{api} refused {what}: {e.message}") from None
    except gexc.GoogleAPICallError as e:
        raise EnqueuerError(
            f"{api} failed: {e.code.name if e.code else 'error'}: {e.message}"
        ) from None


def _permission_denied(
    message: str, queue: str, caller: str | None, principal: str | None,
    needs: str | None = None,
) -> PermissionDenied:
    found = [p for p in _PERMISSION.findall(message) if p in _FIXES]
    permission = found[0] if found else needs if needs in _FIXES else None
    who = principal or "the account running the enqueuer"
    if permission is None:
        return PermissionDenied(f"Google refused the request for {who}: {message}")
    role, command, where = _FIXES[permission]
    parts = queue.split("/")
    project, location, queue_id = (parts[1], parts[3], parts[5]) if len(parts) == 6 else (
        parts[1] if len(parts) == 2 else "PROJECT", "LOCATION", queue)
    kind = "serviceAccount" if (principal or "").endswith(".gserviceaccount.com") else "user"
    member = f"{kind}:{principal}" if principal else "PRINCIPAL"
    account = caller or "CALLER_SA"
    fix = command.format(account=account, member=member, project=project, queue_id=queue_id,
                         location=location)
    return PermissionDenied(
        f"{who} lacks the permission {permission} "
        f"{where.format(account=account, queue=queue, project=project)}. "
        f"Grant it {role}: {fix}"
    )
