"""``python -m emulator`` as a user starts it: flags, config, ready line, clean stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from tests.emulator.harness import PARENT, ROOT, queue_name, start_emulator, wait_until

CONFIG = """
task_name_reservation_s = 1

[[queues]]
name = "queue-brain"
rate_limits = { max_dispatches_per_second = 5, max_concurrent_dispatches = 10 }
retry_config = { max_attempts = 5, min_backoff_s = 1, max_backoff_s = 60, max_doublings = 3 }
"""


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_config_creates_queues_and_sigint_stops_cleanly(tmp_path):
    em = start_emulator(tmp_path, CONFIG)
    try:
        client = em.client()
        (q,) = client.list_queues(parent=PARENT)
        assert q.name == queue_name("queue-brain")
        assert q.rate_limits.max_dispatches_per_second == 5
        assert q.rate_limits.max_concurrent_dispatches == 10
        assert q.retry_config.max_attempts == 5 and q.retry_config.max_doublings == 3
        assert q.retry_config.max_backoff.total_seconds() == 60
    finally:
        assert em.stop(signal.SIGINT) == 0
    assert "Traceback" not in "".join(em.stderr)


def test_task_name_reservation_is_configurable(tmp_path):
    em = start_emulator(tmp_path, CONFIG)
    try:
        client = em.client()
        q = queue_name("queue-brain")
        client.pause_queue(name=q)
        task = tasks_v2.Task(name=f"{q}/tasks/again", http_request={"url": "http://x.invalid/"})
        client.create_task(parent=q, task=task)
        client.delete_task(name=task.name)
        with pytest.raises(gexc.AlreadyExists, match="existed too recently"):
            client.create_task(parent=q, task=task)

        # Reserved for one second here, then free again.
        def free_again() -> bool:
            try:
                client.create_task(parent=q, task=task)
            except gexc.AlreadyExists:
                return False
            return True

        wait_until(free_again, timeout=10, interval=0.2, what="name free after its reservation")
    finally:
        em.stop()


def test_bad_config_is_refused_with_the_reason(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[[queues]]\nname = "has_underscore"\n'
        "rate_limits = { max_dispatches_per_second = 900 }\n"
    )
    out = run("--config", str(cfg), "--db", ":memory:", "--port", "0", "--http-port", "0")
    assert out.returncode == 2
    assert "queues.0.name" in out.stderr and "max_dispatches_per_second" in out.stderr
    assert "Traceback" not in out.stderr
    missing = run("--config", str(tmp_path / "nope.toml"), "--db", ":memory:")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_port_in_use_is_reported(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("--port", str(port), "--http-port", "0", "--db", ":memory:")
    assert out.returncode == 2
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
