"""Why a task's last attempt failed, in words an operator acts on.

``explain_failure`` reads what Cloud Tasks recorded (``TaskSnapshot.last_response_code``:
an HTTP status such as ``"401"``, or a gRPC code name such as ``"DEADLINE_EXCEEDED"`` when
no HTTP answer came) and names the likely cause, the fix, and the Diagnostics check that
would confirm it.
"""

from __future__ import annotations

from dataclasses import dataclass

from enqueuer_core.config import Settings, base_url
from enqueuer_core.setting_names import Field, setting_name
from enqueuer_core.workers import WorkerSpec

# gRPC code names Cloud Tasks records, and the HTTP status each stands for when the worker
# did answer (Cloud Tasks writes the HTTP status into the message; the code alone is kept
# when only the code is known).
_GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNIMPLEMENTED": 501,
}
_UNREACHABLE = ("connection refused", "connect call failed", "cannot connect",
                "name or service not known", "no route to host", "failed to establish")


@dataclass(frozen=True)
class Explanation:
    headline: str  # one line: what is wrong
    detail: str  # why, with the values involved
    fix: str  # what to change, a command when there is one
    # The Diagnostics check that confirms it: audience, invoker, url, deadline, capacity.
    check: str | None


def _success(code: str) -> bool:
    return code == "OK" or (code.isdigit() and 200 <= int(code) < 300)


def _status(code: str, message: str) -> int | str:
    """An HTTP status when one is known, else the gRPC code name (upper case).

    UNAVAILABLE without an HTTP status means no HTTP answer came at all (a worker's own
    503 is recorded as "503"): the worker could not be reached.
    """
    if code.isdigit():
        return int(code)
    name = code.upper()
    if name == "UNAVAILABLE" or any(s in message.lower() for s in _UNREACHABLE):
        return "UNREACHABLE"
    return _GRPC_TO_HTTP.get(name, name)


def _service_name(worker: WorkerSpec | None) -> str:
    # The worker's name is usually its Cloud Run service's name too.
    return worker.name if worker else "SERVICE"


def _setting(worker: WorkerSpec | None, field: Field, settings: Settings | None,
             unknown: str) -> str:
    """The variable (AUD_TESTI) or workers file field holding the worker's value."""
    return str(setting_name(worker, field, settings)) if worker else unknown


def explain_failure(code: str | None, message: str | None, worker: WorkerSpec | None,
                    caller: str | None = None, final: bool = False,
                    settings: Settings | None = None) -> Explanation | None:
    """The likely cause of a failed attempt; None when there was no attempt or it succeeded.

    ``worker`` (the task's worker, when known) and ``caller`` (the account the task's
    token is minted for, ``CALLER_SA``) make the fix concrete. ``final``: it was the last
    attempt (a dead letter), so no retry is left to wait for. ``settings`` tell when the
    workers file sets a built-in worker's value (the fix names the setting holding it).
    """
    if not code or _success(code):
        return None
    message = message or ""
    status = _status(code, message)
    name = worker.name if worker else "the worker"
    title = f"Worker {worker.name}" if worker else "The worker"
    url = worker.url if worker else "the worker's URL"
    said = f" Cloud Tasks recorded: {message}" if message else ""
    url_setting = _setting(worker, "url", settings, "URL_*")

    if status == 401:
        if worker:
            expected = base_url(worker.url)
            mismatch = (f"The task's token is for the audience {worker.audience}; Cloud Run "
                        f"expects {expected} (scheme and host of {worker.url})."
                        if worker.audience != expected else
                        f"The audience {worker.audience} matches {worker.url}, so the token "
                        "was probably missing, expired or not signed by Google.")
        else:
            mismatch = "The token's audience must be the scheme and host of the worker's URL."
        return Explanation(
            headline=f"{title} refused the token (401)",
            detail="The worker did not accept the OIDC token: its audience does not match "
                   f"the worker's URL, or the token is missing or invalid. {mismatch}{said}",
            fix=(f"Set {_setting(worker, 'audience', settings, 'AUD_*')} to "
                 f"{base_url(worker.url)} (scheme and host of the URL of {name}, no path), "
                 "or leave it unset to get that default."
                 if worker else "Set AUD_* to the scheme and host of the worker's URL (no "
                 "path), or leave it unset to get that default."),
            check="audience",
        )
    if status == 403:
        account = caller or "CALLER_SA"
        command = (f"gcloud run services add-iam-policy-binding {_service_name(worker)} "
                   f"--member=serviceAccount:{account} --role=roles/run.invoker "
                   "--region=REGION --project=PROJECT")
        return Explanation(
            headline=f"{title} refused the caller account (403)",
            detail=f"The token was valid, but its account ({account}) lacks "
                   f"roles/run.invoker on the Cloud Run service behind {url}.{said}",
            fix=f"Grant the caller account run.invoker on the service: {command}",
            check="invoker",
        )
    if status == 404:
        return Explanation(
            headline=f"{title} has no such path (404)",
            detail=f"The worker answered 404 for {url}: the URL's path is wrong, or the "
                   f"service at that host is not the worker.{said}",
            fix=f"Set {url_setting} to the real endpoint of {name}, path included "
                "(for example https://brain-abc123-uc.a.run.app/process).",
            check="url",
        )
    if status in (504, "DEADLINE_EXCEEDED"):
        deadline = (f"The dispatch deadline for {name} is {worker.deadline_s}s"
                    if worker else "The dispatch deadline")
        return Explanation(
            headline=f"{title} did not answer in time ({code})",
            detail=f"{deadline}; the attempt ended before the worker answered, either "
                   "because the job takes longer than the deadline or because the worker's "
                   f"Cloud Run request timeout is shorter than it.{said}",
            fix=f"Set {_setting(worker, 'deadline_s', settings, 'DEADLINE_*_S')} "
                f"(15 to 1800 s) above the real duration of a job of {name}, "
                "and the Cloud Run service's request timeout (`gcloud run services update "
                "SERVICE --timeout=SECONDS`) at least as long as the deadline.",
            check="deadline",
        )
    if status in (429, 503):
        # Cloud Run's 429 is "no available instance": more requests in flight than max
        # instances x concurrency, which the capacity check compares with the queue's limits.
        # A 503 may be the worker's own, or an instance not ready yet: no one check says.
        full = status == 429
        return Explanation(
            headline=f"{title} is overloaded or scaling ({code})",
            detail="The worker (or Cloud Run in front of it) turned the request away: too "
                   "many requests at once, or no instance ready yet. Cloud Tasks retries "
                   + ("with backoff, and the retries ran out." if final else
                      "with backoff, so this often clears by itself.") + said,
            fix=("Raise" if final else "Wait for the retries. If it persists, raise")
                + " the service's max instances or concurrency, or lower the queue's max "
                "dispatches per second / concurrent dispatches"
                + (": the capacity check in Diagnostics compares them and gives both "
                   "commands with the numbers." if full else "."),
            check="capacity" if full else None,
        )
    if status == "UNREACHABLE":
        return Explanation(
            headline=f"{title} cannot be reached",
            detail=f"Cloud Tasks could not connect to {url}: wrong host or port, the "
                   f"service is down or deleted, or DNS does not resolve it.{said}",
            fix=f"Check {url_setting} ({url}) and that the service is running "
                f"(`gcloud run services describe {_service_name(worker)}`).",
            check="url",
        )
    if status in (400, 422, "INVALID_ARGUMENT"):
        return Explanation(
            headline=f"{title} refused the payload ({code})",
            detail="The worker answered that the request is invalid: the payload does not "
                   f"have the fields or values it expects.{said}",
            fix=f"Compare the payload with {name}'s contract (its schema in the workers "
                "file); fix the job and enqueue it again with a new idempotency key. "
                "Retrying the same payload will fail the same way.",
            check=None,
        )
    if (isinstance(status, int) and 500 <= status < 600) or status in ("INTERNAL", "UNKNOWN"):
        return Explanation(
            headline=f"{title} failed ({code})",
            detail=f"The worker took the request and failed while handling it.{said}",
            fix=f"Look at {name}'s logs for this request (Cloud Run > {_service_name(worker)} "
                "> Logs, or `gcloud run services logs read SERVICE`)"
                + (", fix it, then replay the job." if final else "; Cloud Tasks retries "
                   "meanwhile."),
            check=None,
        )
    return Explanation(
        headline=f"The last attempt failed ({code})",
        detail=f"The worker at {url} did not accept the request.{said}",
        fix=f"Look at {name}'s logs for this request, and at its answer above.",
        check=None,
    )
