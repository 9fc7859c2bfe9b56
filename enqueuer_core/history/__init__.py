"""What happened to the jobs, from Cloud Logging: a task's attempts, a queue's dead letters,
who did what (the audit lines), attempts per minute, and replay of a dead job.

Every read is one ``ListLogEntries`` call per page through the official
``LoggingServiceV2Client`` (``enqueuer_core.clients.logging_client``); errors come back as
``EnqueuerError``s (``errors.translate_google_errors``).
"""

from __future__ import annotations

from enqueuer_core.history.jobs import task_for
from enqueuer_core.history.queries import (
    TASK_LOG_ID,
    actions,
    attempts_per_minute,
    cause_of,
    dead_letters,
    log_sampling,
    sampling_fix,
    task_attempts,
    task_log_name,
)
from enqueuer_core.history.records import (
    ActionRecord,
    AttemptRecord,
    DeadLetter,
    MinuteCount,
    Page,
)
from enqueuer_core.history.replay import ReplaySource, replay, replay_key, replay_source
from enqueuer_core.history.times import parse_since, rfc3339

__all__ = ["TASK_LOG_ID", "ActionRecord", "AttemptRecord", "DeadLetter", "MinuteCount", "Page",
           "ReplaySource", "actions", "attempts_per_minute", "cause_of", "dead_letters",
           "log_sampling", "parse_since", "replay", "replay_key", "replay_source", "rfc3339",
           "sampling_fix", "task_attempts", "task_for", "task_log_name"]
