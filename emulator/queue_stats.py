"""Queue statistics, which Cloud Tasks serves only in v2beta3 (``Queue.stats`` by read_mask).

The v2beta3 GetQueue and ListQueues answer from the same queues as v2, with the stats
computed from the store (tasks, earliest schedule) and the dispatcher (in flight, executed
in the last minute).
"""

from __future__ import annotations

from google.cloud import tasks_v2beta3

from emulator.clock import duration, to_timestamp
from emulator.queues import RUNNING, Queue
from emulator.tasks_service import CloudTasksService

QueueB3 = tasks_v2beta3.Queue.pb()
QueueStatsB3 = tasks_v2beta3.QueueStats.pb()
GetQueueRequestB3 = tasks_v2beta3.GetQueueRequest.pb()
ListQueuesRequestB3 = tasks_v2beta3.ListQueuesRequest.pb()
ListQueuesResponseB3 = tasks_v2beta3.ListQueuesResponse.pb()
TASK_TTL_S = 31 * 24 * 3600  # how long Cloud Tasks keeps a task that is never done


class QueueStatsService:
    def __init__(self, tasks: CloudTasksService) -> None:
        self.tasks = tasks

    def stats(self, queue: Queue) -> QueueStatsB3:
        count, oldest = self.tasks.store.queue_counts(queue.name)
        runner = self.tasks.dispatcher.runners.get(queue.name)
        stats = QueueStatsB3(
            tasks_count=count,
            executed_last_minute_count=runner.executed_last_minute() if runner else 0,
            concurrent_dispatches_count=len(runner.inflight) if runner else 0,
            effective_execution_rate=(
                queue.rate_limits.max_dispatches_per_second if queue.state == RUNNING else 0.0
            ),
        )
        if oldest is not None:
            stats.oldest_estimated_arrival_time.CopyFrom(to_timestamp(oldest))
        return stats

    def _beta(self, queue: Queue, read_mask: list[str]) -> QueueB3:
        # RateLimits and RetryConfig have the same fields in both versions.
        out = QueueB3(name=queue.name, state=queue.state, type_=QueueB3.PUSH)
        out.rate_limits.MergeFromString(queue.rate_limits.SerializeToString())
        out.retry_config.MergeFromString(queue.retry_config.SerializeToString())
        if queue.HasField("purge_time"):
            out.purge_time.CopyFrom(queue.purge_time)
        out.tombstone_ttl.CopyFrom(duration(self.tasks.limits.task_name_reservation_s))
        out.task_ttl.CopyFrom(duration(TASK_TTL_S))
        if "stats" in read_mask:
            out.stats.CopyFrom(self.stats(queue))
        return out

    def GetQueue(self, req: GetQueueRequestB3) -> QueueB3:
        return self._beta(self.tasks.queue(req.name), list(req.read_mask.paths))

    def ListQueues(self, req: ListQueuesRequestB3) -> ListQueuesResponseB3:
        queues, token = self.tasks.list_queues(
            req.parent, req.filter, req.page_size, req.page_token
        )
        paths = list(req.read_mask.paths)
        return ListQueuesResponseB3(
            queues=[self._beta(q, paths) for q in queues], next_page_token=token
        )
