"""What the benchmarks share: starting the emulator, stopping the processes they start, and
the machine's pace at the moment (``pace_us``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"gRPC (?P<host>[\d.]+):(?P<port>\d+), HTTP (?P<http>http://[^,]+),")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, a grace period, then SIGKILL: no benchmark leaves a process behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_emulator(tmp: Path, config: str) -> tuple[subprocess.Popen, str]:
    """``python -m emulator`` on free ports with ``config`` and state in ``tmp``; the
    process and its gRPC target, once it is ready (stopped again if it never is)."""
    (tmp / "emulator.toml").write_text(config)
    log = tmp / "emulator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", "0", "--http-port", "0",
             "--db", str(tmp / "emulator.db"), "--config", str(tmp / "emulator.toml"),
             "--log-level", "WARNING"],
            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = READY.search(log.read_text())
        if found:
            return proc, f"{found['host']}:{found['port']}"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"the emulator did not start (exit code {proc.poll()}):\n"
                       f"{log.read_text()[-3000:]}")


def pace_us() -> float:
    """Microseconds for a fixed piece of pure Python (``sum(range(1000))``), best of five: how
    fast this machine runs Python at the moment. On a shared or throttled machine it varies by
    2x within minutes, and every CPU figure with it: print it beside them."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
