"""``enqueuer dev``: the whole product on one machine, with no Google account.

It starts the emulator (Cloud Tasks, the three workers as Cloud Run services behind their
front door, IAM with the bindings a correct setup has, and the identity provider the local
users log in with), then the API (callers send an ID token from the emulator's issuer) and
the dashboard (users log in with ``st.login`` against the emulator) pointed at it; waits
until each answers; prints where everything is;
and on Ctrl-C or SIGTERM stops every process it started. State (tasks, keys) persists in a
folder across runs. The settings it gives the API are kept in that folder as a profile,
which ``enqueuer --local ...`` reads, so every other command talks to the same stack.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from enqueuer_core.access import load_access
from enqueuer_core.config import (
    LOCAL_ADMIN,
    LOCAL_API_CALLER,
    LOCAL_CALLER_SA,
    LOCAL_PRINCIPAL,
    LOCAL_PROJECT,
    LOCAL_REGION,
    LOCAL_USERS,
    load_settings,
)
from enqueuer_core.errors import ConfigError
from enqueuer_core.setup.desired import desired_state
from enqueuer_core.workers import load_registry

ROOT = Path(__file__).resolve().parent.parent  # where app.py and dashboard.py live
# Each built-in worker: its settings suffix, its path, its dispatch deadline and the
# request timeout its Cloud Run service has (longer than the deadline, as it must be).
WORKERS = {
    "brain": ("BRAIN", "/process", 700, 900),
    "testimonios": ("TESTI", "/generate-testimony", 390, 600),
    "transcripciones": ("TRANS", "/api/transcribe", 880, 1200),
}
QUEUES = {"brain": "queue-brain", "testimonios": "queue-testimonios",
          "transcripciones": "queue-transcripciones"}
# The dashboard's OAuth client at the emulator's identity provider.
DASHBOARD_CLIENT_ID = "enqueuer-dashboard"
DASHBOARD_CLIENT_SECRET = "local-dashboard-secret"  # a local stand-in: no Google account
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
class DevPorts:
    emulator: int = 8123
    emulator_http: int = 8124
    api: int = 8080
    dashboard: int = 8501
    workers: dict[str, int] = field(default_factory=lambda: {
        "brain": 8081, "testimonios": 8082, "transcripciones": 8083})

    @classmethod
    def ephemeral(cls) -> DevPorts:
        """Free ports everywhere: for tests, and beside a stack already running."""
        return cls(0, 0, free_port(), free_port(), dict.fromkeys(WORKERS, 0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_config(ports: DevPorts) -> str:
    """The dev stack's Google: queues, the workers' services, and IAM exactly as
    ``enqueuer setup --apply`` leaves it (``enqueuer --local setup``: nothing to change), plus
    an operator who may make or repair every part of it."""
    # The stack's own settings, whatever the shell exports (the URLs play no part here).
    env = api_environment("dev-stack", dict.fromkeys(WORKERS, "http://127.0.0.1:1"))
    settings = load_settings(**{k.lower(): v for k, v in env.items()}, workers_file=None,
                             api_sa=LOCAL_PRINCIPAL, dashboard_sa=LOCAL_PRINCIPAL)
    services = {w: f"projects/{LOCAL_PROJECT}/locations/{LOCAL_REGION}/services/{w}"
                for w in WORKERS}
    state = desired_state(settings, load_registry(settings), services, list(WORKERS))
    granted: dict[tuple[str, str], dict[str, list[str]]] = {}
    for g in state.grants:
        granted.setdefault((g.scope, g.resource), {}).setdefault(g.role, []).append(g.member)

    def bindings(scope: str, resource: str) -> str:
        roles = granted.get((scope, resource), {})
        return "[" + ", ".join(f'{{ role = "{r}", members = {json.dumps(m)} }}'
                               for r, m in roles.items()) + "]"

    operator = [{"role": r, "members": [LOCAL_ADMIN]} for r in (
        "roles/cloudtasks.admin", "roles/iam.serviceAccountAdmin",
        "roles/resourcemanager.projectIamAdmin", "roles/run.admin")]
    project = [{"role": r, "members": m}
               for r, m in granted.get(("project", f"projects/{LOCAL_PROJECT}"), {}).items()]
    lines = [
        "# Written by `enqueuer dev` at each start; edit enqueuer_core/devstack.py instead.",
        f'project = "{LOCAL_PROJECT}"', f'location = "{LOCAL_REGION}"', "",
        "[iam]", "enforce = true", f'principal = "serviceAccount:{LOCAL_PRINCIPAL}"',
        # The operator is a platform engineer: it may create queues, accounts and every
        # binding `enqueuer setup --apply` makes (and break and repair a setup on purpose).
        "bindings = [", *(f'  {{ role = "{b["role"]}", members = {json.dumps(b["members"])} }},'
                         for b in project + operator), "]",
    ]
    for account in state.accounts:
        resource = f"projects/{LOCAL_PROJECT}/serviceAccounts/{account.email}"
        lines += ["", "[[service_accounts]]", f'email = "{account.email}"',
                  f"bindings = {bindings('service_account', resource)}"]
    for queue in state.queues:
        lines += ["", "[[queues]]", f'name = "{queue.queue_id}"',
                  f"bindings = {bindings('queue', queue.path)}"]
    for worker, (_, path, _, timeout) in WORKERS.items():
        invokers = granted.get(("run_service", services[worker]), {}).get(
            "roles/run.invoker", [])
        lines += ["", "[[services]]", f'name = "{worker}"', f"port = {ports.workers[worker]}",
                  f'paths = ["{path}"]', f"timeout_s = {timeout}",
                  f"invokers = {json.dumps(invokers)}"]
    # Who can log in: the users of the access config, each shown with their role.
    policy = load_access(settings)
    users = [f'{{ email = "{m.split(":", 1)[1]}", name = "Local {role.label}" }}'
             for m, role in policy.grants.items() if m.startswith("user:")]
    lines += ["", "[oidc]", f"users = [{', '.join(users)}]", "", "[[oidc.clients]]",
              f'client_id = "{DASHBOARD_CLIENT_ID}"',
              f'client_secret = "{DASHBOARD_CLIENT_SECRET}"',
              f'redirect_uris = ["{dashboard_url(ports)}/oauth2callback"]']
    return "\n".join(lines) + "\n"


def dashboard_url(ports: DevPorts) -> str:
    # 127.0.0.1, never localhost: the login's redirect must come back to the very origin the
    # browser is on, and the two are different origins to it.
    return f"http://127.0.0.1:{ports.dashboard}"


def dashboard_secrets(state: Path, emulator_http: str, url: str) -> Path:
    """The dashboard's ``[auth]`` for ``st.login`` against the emulator's identity provider.

    The cookie secret is kept in the state folder, so a restart does not log everyone out.
    """
    keep = state / "cookie-secret"
    if not keep.is_file():
        keep.write_text(secrets.token_hex(32))
    path = state / "dashboard-secrets.toml"
    path.write_text("\n".join([
        "# Written by `enqueuer dev` at each start: st.login against the emulator.",
        "[auth]", f'redirect_uri = "{url}/oauth2callback"',
        f'cookie_secret = "{keep.read_text().strip()}"',
        f'client_id = "{DASHBOARD_CLIENT_ID}"', f'client_secret = "{DASHBOARD_CLIENT_SECRET}"',
        f'server_metadata_url = "{emulator_http}/.well-known/openid-configuration"', ""]))
    return path


def api_environment(grpc_target: str, services: dict[str, str], emulator_http: str | None = None,
                    api_url: str | None = None) -> dict[str, str]:
    """The settings the API (and ``--local``) use to reach the dev stack."""
    env = {"CLOUD_TASKS_EMULATOR_HOST": grpc_target, "PROJECT_ID": LOCAL_PROJECT,
           "TASKS_REGION": LOCAL_REGION, "CALLER_SA": LOCAL_CALLER_SA, "API_AUTH": "google"}
    if emulator_http:
        env["EMULATOR_HTTP_URL"] = emulator_http
    if api_url:
        env["API_AUDIENCE"] = api_url
    for worker, (short, path, deadline, _) in WORKERS.items():
        base = services[worker]
        env |= {f"URL_{short}": base + path, f"AUD_{short}": base,
                f"QUEUE_{short}": QUEUES[worker], f"DEADLINE_{short}_S": str(deadline)}
    return env


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
        self.profile: DevProfile | None = None

    # -- processes --------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
               ) -> subprocess.Popen[bytes]:
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=subprocess.PIPE if name == "emulator" else log,
                stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.procs.append((name, proc))
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
        """Stop every process, last started first; none is left behind."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        profile = self.state / "profile.json"
        if profile.exists():
            profile.unlink()

    def dead(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return name
        return None


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
    lines.append(f"  {'Cloud Tasks':<15} {profile.emulator_grpc} (gRPC), OIDC certs "
                 f"{profile.emulator_http}/oauth2/v1/certs")
    lines.append(f"  {'sign-in':<15} {profile.emulator_http}/.well-known/openid-configuration "
                 "(the local users' identity provider)")
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
