"""What ``enqueuer dev`` runs: its workers, ports and settings, and the local Google it
configures: the emulator's config (queues, the workers' services, IAM as ``enqueuer setup``
leaves it, who reads and writes the logs, the local users) and the dashboard's login secrets.
``devstack`` starts the processes with them.
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from enqueuer_core.access import load_access
from enqueuer_core.config import (
    LOCAL_ADMIN,
    LOCAL_CALLER_SA,
    LOCAL_PRINCIPAL,
    LOCAL_PROJECT,
    LOCAL_REGION,
    load_settings,
)
from enqueuer_core.setup.desired import desired_state
from enqueuer_core.workers import load_registry

# Each built-in worker: its settings suffix, its path, its dispatch deadline and the
# request timeout its Cloud Run service has (longer than the deadline, as it must be).
WORKERS = {
    "brain": ("BRAIN", "/process", 700, 900),
    "testimonios": ("TESTI", "/generate-testimony", 390, 600),
    "transcripciones": ("TRANS", "/api/transcribe", 880, 1200),
}
QUEUES = {"brain": "queue-brain", "testimonios": "queue-testimonios",
          "transcripciones": "queue-transcripciones"}
# The Cloud Run services the API and the dashboard are on Google (enqueuer_core/deploy.py).
SERVICES = {"api": "enqueuer-api", "dashboard": "enqueuer-dashboard"}
# Who reads history on the local stack: the local users, and the accounts the API and the
# dashboard run as (which also write their stdout's entries, as Cloud Run does for them).
LOG_READER, LOG_WRITER = "roles/logging.viewer", "roles/logging.logWriter"
# The local project's number: the emulator answers it (Resource Manager's GetProject), and it
# names the project's Cloud Tasks service agent in the bindings `enqueuer setup` makes. The
# emulator would derive this very number from the ID; it is written out so that this module
# can name the agent without importing the emulator.
PROJECT_NUMBER = "217212046978"
# The dashboard's OAuth client at the emulator's identity provider.
DASHBOARD_CLIENT_ID = "enqueuer-dashboard"
DASHBOARD_CLIENT_SECRET = "local-dashboard-secret"  # a local stand-in: no Google account


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
    state = desired_state(settings, load_registry(settings), services, list(WORKERS),
                          PROJECT_NUMBER)
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
    policy = load_access(settings)
    on_project = granted.get(("project", f"projects/{LOCAL_PROJECT}"), {})
    readers = on_project.setdefault(LOG_READER, [])
    readers += [m for m in policy.grants if m.startswith("user:") and m not in readers]
    on_project[LOG_WRITER] = [f"serviceAccount:{LOCAL_PRINCIPAL}"]
    project = [{"role": r, "members": m} for r, m in on_project.items()]
    lines = [
        "# Written by `enqueuer dev` at each start; edit enqueuer_core/dev_config.py instead.",
        f'project = "{LOCAL_PROJECT}"', f'project_number = "{PROJECT_NUMBER}"',
        f'location = "{LOCAL_REGION}"', "",
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
                  f"bindings = {bindings('queue', queue.path)}",
                  # Every task's operations in Logging: the dashboard's history reads them.
                  "log_sampling_ratio = 1.0"]
    for worker, (_, path, _, timeout) in WORKERS.items():
        invokers = granted.get(("run_service", services[worker]), {}).get(
            "roles/run.invoker", [])
        lines += ["", "[[services]]", f'name = "{worker}"', f"port = {ports.workers[worker]}",
                  f'paths = ["{path}"]', f"timeout_s = {timeout}",
                  f"invokers = {json.dumps(invokers)}"]
    # Who can log in: the users of the access config, each shown with their role.
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
    # Payloads in the audit lines: the local stack holds no real data, and with them a job
    # that failed for good can be replayed as it was (production keeps the hash by default).
    env = {"CLOUD_TASKS_EMULATOR_HOST": grpc_target, "PROJECT_ID": LOCAL_PROJECT,
           "TASKS_REGION": LOCAL_REGION, "CALLER_SA": LOCAL_CALLER_SA, "API_AUTH": "google",
           "AUDIT_PAYLOADS": "full"}
    if emulator_http:
        env["EMULATOR_HTTP_URL"] = emulator_http
    if api_url:
        env["API_AUDIENCE"] = api_url
    for worker, (short, path, deadline, _) in WORKERS.items():
        base = services[worker]
        env |= {f"URL_{short}": base + path, f"AUD_{short}": base,
                f"QUEUE_{short}": QUEUES[worker], f"DEADLINE_{short}_S": str(deadline)}
    return env
