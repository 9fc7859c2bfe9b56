"""Every Google error code Enqueuer relies on, translated in one place."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from enqueuer_core import errors as e

QUEUE = "projects/acme/locations/europe-west1/queues/queue-brain"
CALLER = "caller@acme.iam.gserviceaccount.com"
PRINCIPAL = "enqueuer@acme.iam.gserviceaccount.com"


def translated(exc: Exception) -> e.EnqueuerError:
    with pytest.raises(e.EnqueuerError) as info, e.translate_google_errors(
        queue=QUEUE, caller=CALLER, principal=PRINCIPAL, task=f"{QUEUE}/tasks/abc-key"
    ):
        raise exc
    return info.value


@pytest.mark.parametrize(("exc", "cls", "status", "exit_code"), [
    (gexc.AlreadyExists("Requested entity already exists"), e.DuplicateTask, 409, 3),
    (gexc.PermissionDenied("denied"), e.PermissionDenied, 403, 4),
    (gexc.NotFound("Queue does not exist. If you just created the queue, wait at least a "
                   "minute for the queue to initialize."), e.QueueNotFound, 502, 5),
    (gexc.ServiceUnavailable("connection refused"), e.Unavailable, 503, 6),
    (gexc.DeadlineExceeded("Deadline Exceeded"), e.Unavailable, 503, 6),
    (gexc.InvalidArgument("Task size too large"), e.InvalidRequest, 422, 2),
    (gexc.InternalServerError("boom"), e.EnqueuerError, 502, 1),
    (gexc.ResourceExhausted("quota"), e.EnqueuerError, 502, 1),
])
def test_each_code(exc, cls, status, exit_code):
    err = translated(exc)
    assert type(err) is cls
    assert (err.http_status, err.exit_code) == (status, exit_code)
    assert err.to_dict() == {"code": err.code, "message": err.message}


def test_duplicate_names_the_task_and_says_live_or_recent():
    live = translated(gexc.AlreadyExists("Requested entity already exists"))
    assert f"{QUEUE}/tasks/abc-key" in live.message and "already queued" in live.message
    recent = translated(gexc.AlreadyExists(
        "The task cannot be created because a task with this name existed too recently."))
    assert "existed recently" in recent.message


def test_act_as_denied_names_the_role_and_the_command():
    err = translated(gexc.PermissionDenied(
        'The principal (user or service account) lacks IAM permission '
        f'"iam.serviceAccounts.actAs" for the resource "{CALLER}" (or the resource may not '
        'exist).'))
    assert "iam.serviceAccounts.actAs" in err.message
    assert "roles/iam.serviceAccountUser" in err.message
    assert (f"gcloud iam service-accounts add-iam-policy-binding {CALLER} "
            f"--member=serviceAccount:{PRINCIPAL} --role=roles/iam.serviceAccountUser "
            "--project=acme") in err.message


def test_create_denied_names_the_enqueuer_role():
    err = translated(gexc.PermissionDenied(
        'The principal (user or service account) lacks IAM permission '
        f'"cloudtasks.tasks.create" for the resource "{QUEUE}" (or the resource may not '
        'exist).'))
    assert "roles/cloudtasks.enqueuer" in err.message
    assert ("gcloud tasks queues add-iam-policy-binding queue-brain --location=europe-west1 "
            f"--member=serviceAccount:{PRINCIPAL}") in err.message


def test_missing_queue_gives_the_command_that_creates_it():
    err = translated(gexc.NotFound("Queue does not exist. If you just created the queue, ..."))
    assert "gcloud tasks queues create queue-brain --location=europe-west1 --project=acme" in (
        err.message)


def test_non_google_errors_pass_through():
    with pytest.raises(KeyError), e.translate_google_errors(queue=QUEUE):
        raise KeyError("not ours")


def test_missing_task_is_its_own_error():
    err = translated(gexc.NotFound("Requested entity was not found."))
    assert type(err) is e.TaskNotFound and err.http_status == 404 and err.exit_code == 7
    assert f"{QUEUE}/tasks/abc-key" in err.message


def test_unavailable_says_nothing_was_enqueued_only_for_creates():
    assert "Nothing was enqueued" in translated(gexc.ServiceUnavailable("down")).message
    with pytest.raises(e.Unavailable) as info, e.translate_google_errors(queue=QUEUE):
        raise gexc.ServiceUnavailable("down")
    assert "Nothing was enqueued" not in info.value.message
