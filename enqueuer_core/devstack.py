"""``enqueuer dev``: the whole product on one machine, with no Google account.

It starts the emulator (Cloud Tasks, the three workers as Cloud Run services behind their
front door, IAM with the bindings a correct setup has, and the identity provider the local
users log in with), then the API (callers send an ID token from the emulator's issuer) and
the dashboard (users log in with ``st.login`` against the emulator) pointed at it; waits
until each answers; prints where everything is;
and on Ctrl-C or SIGTERM stops every process it started. The API's and the dashboard's stdout
go to the emulator's Cloud Logging as Cloud Run ships them (``log_shipping``), and to their
log files; the queues log every task's operations, as with ``--log-sampling-ratio=1.0``.
State (tasks, keys) persists in a
folder across runs. The settings it gives the API are kept in that folder as a profile,
which ``enqueuer --local ...`` reads, so every other command talks to the same stack.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from enqueuer_core.clients import logging_client
from enqueuer_core.config import LOCAL_ADMIN as LOCAL_ADMIN  # re-exported, as before
from enqueuer_core.config import (
    LOCAL_API_CALLER,
    LOCAL_PROJECT,
    LOCAL_REGION,
    LOCAL_USERS,
    load_settings,
)
from enqueuer_core.dev_config import (  # re-exported: callers import them from here
    QUEUES as QUEUES,
)
from enqueuer_core.dev_config import (
    SERVICES,
    WORKERS,
    DevPorts,
    api_environment,
    dashboard_secrets,
    dashboard_url,
    emulator_config,
)
from enqueuer_core.dev_config import free_port as free_port
from enqueuer_core.errors import ConfigError
from enqueuer_core.log_shipping import LogShipper

ROOT = Path(__file__).resolve().parent.parent  # where app.py and dashboard.py live
_READY = re.compile(r"gRPC (?P<host>[\d.]+):(?P<port>\d+), HTTP (?P<http>http://[^,\s]+)")
_SERVICE = re.compile(r"\b(?P<name>[a-z][-a-z0-9]*)=(?P<url>http://[^\s,]+)")
START_TIMEOUT_S = 60.0


def default_state_dir() -> Path:
    env = os.environ.get("ENQUEUER_STATE")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "enqueuer" / "dev"


@dataclass
class DevProfile:
    """Where the running stack is; written to the state folder for ``--local``."""

    settings: dict[str, str]
    api: str | None
    dashboard: str | None
    emulator_grpc: str
    emulator_http: str
    services: dict[str, str]

    def save(self, state: Path) -> None:
        (state / "profile.json").write_text(json.dumps(asdict(self), indent=2))


def local_settings(state: Path | None = None) -> dict[str, str]:
    """The settings of the dev stack: those it wrote, or those it uses on its usual ports."""
    path = (state or default_state_dir()) / "profile.json"
    if path.is_file():
        return dict(json.loads(path.read_text())["settings"])
    ports = DevPorts()
    return api_environment(f"127.0.0.1:{ports.emulator}",
                           {w: f"http://127.0.0.1:{p}" for w, p in ports.workers.items()},
                           f"http://127.0.0.1:{ports.emulator_http}",
                           f"http://127.0.0.1:{ports.api}")


class DevStack:
    def __init__(self, state: Path, ports: DevPorts, api: bool = True,
                 dashboard: bool = True, say: Callable[[str], None] = print) -> None:
        self.state = state
        self.ports = ports
        self.with_api = api
        self.with_dashboard = dashboard
        self.say = say
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.shippers: list[LogShipper] = []
        self.profile: DevProfile | None = None

    # -- processes --------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
               ) -> subprocess.Popen[bytes]:
        """Start ``name``; its output goes to ``logs/NAME.log``, and the API's and the
        dashboard's stdout to the emulator's Logging too (``env``: their settings)."""
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        shipped = name in SERVICES
        with (logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=subprocess.PIPE if name == "emulator" or shipped
                else log, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.procs.append((name, proc))
        if shipped and proc.stdout is not None:
            settings = load_settings(**{k.lower(): v for k, v in (env or {}).items()})
            service = SERVICES[name]
            self.shippers.append(LogShipper(
                proc.stdout, logs / f"{name}.log", logging_client(settings),
                project=settings.project_id or LOCAL_PROJECT,
                location=settings.tasks_region or LOCAL_REGION, service=service,
                revision=f"{service}-00001-dev",
                target=f"the emulator's Logging ({settings.cloud_tasks_emulator_host})",
                warn=lambda text: print(f"warning: {text}", file=sys.stderr, flush=True),
            ).start())
        return proc

    def _log_tail(self, name: str) -> str:
        path = self.state / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def _failed(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"the {name} did not start: {why}\n{self._log_tail(name)}")

    def start(self) -> DevProfile:
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> DevProfile:
        config = self.state / "emulator.toml"
        config.write_text(emulator_config(self.ports))
        emulator = self._spawn("emulator", [
            sys.executable, "-m", "emulator", "--config", str(config),
            "--db", str(self.state / "emulator.db"),
            "--port", str(self.ports.emulator), "--http-port", str(self.ports.emulator_http)])
        line = _read_line(emulator, START_TIMEOUT_S)
        ready = _READY.search(line or "")
        if not ready:
            raise self._failed("emulator", f"no ready line ({line!r})")
        services = {m["name"]: m["url"] for m in _SERVICE.finditer(line[ready.end():])}
        missing = [w for w in WORKERS if w not in services]
        if missing:
            raise self._failed("emulator", f"it serves no {', '.join(missing)} ({line!r})")
        for worker, url in services.items():
            _wait_http(f"{url}/_requests", f"the {worker} service", emulator)
        grpc_target = f"{ready['host']}:{ready['port']}"
        api_url = f"http://127.0.0.1:{self.ports.api}" if self.with_api else None
        settings = api_environment(grpc_target, services, ready["http"], api_url)

        if api_url:
            api = self._spawn("api", [sys.executable, "-m", "uvicorn", "app:app", "--host",
                                      "127.0.0.1", "--port", str(self.ports.api)], settings)
            _wait_http(f"{api_url}/readyz", "the API", api, self._log_tail)

        dashboard_at = None
        if self.with_dashboard and (ROOT / "dashboard.py").is_file():
            url = dashboard_url(self.ports)
            dash = self._spawn("dashboard", [
                sys.executable, "-m", "streamlit", "run", "dashboard.py",
                "--server.port", str(self.ports.dashboard), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--server.fileWatcherType", "none",
                "--browser.gatherUsageStats", "false",
                "--secrets.files", str(dashboard_secrets(self.state, ready["http"], url))],
                {**settings, "ENQUEUER_API_URL": api_url or "", "DASHBOARD_AUTH": "oidc"})
            _wait_http(f"{url}/_stcore/health", "the dashboard", dash, self._log_tail)
            dashboard_at = url

        self.profile = DevProfile(settings, api_url, dashboard_at, grpc_target,
                                  ready["http"], services)
        self.profile.save(self.state)
        return self.profile

    def stop(self) -> None:
        """Stop every process, last started first; none is left behind. The emulator goes
        last, once the others' last log lines have reached its Logging."""
        emulator = [p for p in self.procs if p[0] == "emulator"]
        _terminate([p for _, p in reversed(self.procs) if (_, p) not in emulator])
        for shipper in self.shippers:
            shipper.close(timeout=5)
        _terminate([p for _, p in emulator])
        self.procs.clear()
        self.shippers.clear()
        profile = self.state / "profile.json"
        if profile.exists():
            profile.unlink()

    def dead(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return name
        return None


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if got and got[0]:
        # Keep reading so that a full pipe never blocks the emulator.
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()  # type: ignore[union-attr]
        return got[0].decode(errors="replace")
    return None


def _wait_http(url: str, what: str, proc: subprocess.Popen[bytes],
               tail: Callable[[str], str] | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"{what} exited ({proc.returncode}) before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise ConfigError(f"{what} did not answer {url} within {START_TIMEOUT_S:.0f} s")


def enqueuer_command(state: Path) -> str:
    """How to call ``enqueuer --local`` from this shell so that it finds this stack: the
    console script as the shell finds it, and ``ENQUEUER_STATE`` when the state is not in
    the usual folder."""
    exe = Path(sys.executable).with_name("enqueuer")
    if shutil.which("enqueuer") == str(exe):
        command = "enqueuer"
    else:
        try:
            command = str(exe.relative_to(Path.cwd()))
        except ValueError:
            command = str(exe)
    usual = (Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
             / "enqueuer" / "dev")
    prefix = "" if state.resolve() == usual.resolve() else (
        f"ENQUEUER_STATE={shlex.quote(str(state))} ")
    return f"{prefix}{shlex.quote(command)} --local"


def describe(profile: DevProfile, state: Path) -> list[str]:
    local = enqueuer_command(state)
    lines = [f"Enqueuer dev stack is up (state in {state}):"]
    if profile.api:
        lines.append(f"  {'API':<15} {profile.api}   (docs: {profile.api}/docs)")
        # Callers authenticate as on Google: an ID token for the API's URL, here from the
        # emulator's issuer (inner quotes: the line is pasted into a shell as it is).
        lines.append(f"  {'':<15} callers send an ID token: curl -H \"Authorization: Bearer "
                     f"$({local} token)\" {profile.api}/workers")
        lines.append(f"  {'':<15} (a token for {LOCAL_API_CALLER}, an operator; "
                     "`token --as EMAIL` for another user)")
    dashboard = profile.dashboard or (
        "left out" if (ROOT / "dashboard.py").is_file() else "not part of Enqueuer yet")
    lines.append(f"  {'dashboard':<15} {dashboard}")
    if profile.dashboard:
        users = ", ".join(f"{m.split(':', 1)[1]} ({r})" for m, r in LOCAL_USERS.items())
        lines.append(f"  {'':<15} log in as {users}")
    lines.append(f"  {'Cloud Tasks':<15} {profile.emulator_grpc} (gRPC), {profile.emulator_http} "
                 f"(REST), OIDC certs {profile.emulator_http}/oauth2/v1/certs")
    # gcloud reaches the emulator's REST port with these variables (gcloud_env.py); the
    # command finds this stack as `--local` does (ENQUEUER_STATE for a --state elsewhere).
    lines.append(f"  {'gcloud':<15} eval \"$({local} gcloud-env)\"   then: gcloud tasks queues "
                 f"list --location={LOCAL_REGION}")
    lines.append(f"  {'sign-in':<15} {profile.emulator_http}/.well-known/openid-configuration "
                 "(the local users' identity provider)")
    lines.append(f"  {'Cloud Logging':<15} {profile.emulator_grpc} (gRPC): the queues' task "
                 "logs and the API's and dashboard's stdout (audit lines, payloads included: "
                 "AUDIT_PAYLOADS=full); files in "
                 f"{state / 'logs'}")
    for worker, url in profile.services.items():
        path = WORKERS[worker][1] if worker in WORKERS else ""
        lines.append(f"  {worker:<15} {url}{path}   (what it received: {url}/_requests)")
    lines.append(f"Other commands reach it with `{local} ...`. Ctrl-C stops everything.")
    return lines


def run(state: Path, ports: DevPorts, api: bool, dashboard: bool) -> int:
    """Start the stack, wait for Ctrl-C or SIGTERM (or a process dying), stop it."""
    stack = DevStack(state, ports, api=api, dashboard=dashboard)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        profile = stack.start()
        for line in describe(profile, state):
            print(line, flush=True)
        while not stop.wait(0.5):
            dead = stack.dead()
            if dead:
                print(f"the {dead} stopped unexpectedly; stopping the stack. Its log:\n"
                      f"{stack._log_tail(dead)}", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        stack.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        print("Enqueuer dev stack stopped.", flush=True)
