"""What the benchmarks share: stopping the processes they start."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, a grace period, then SIGKILL: no benchmark leaves a process behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
