"""``enqueuer deploy``: the exact commands that build the image and deploy both services to Cloud
Run from these settings, as a bash script to read and run.

Closed by default: the API is private (Cloud Run lets in only callers holding
``roles/run.invoker``, with an ID token for its URL, and the API checks that token again,
``API_AUTH=google``), the dashboard sits behind Identity-Aware Proxy and checks IAP's signed
assertion (``DASHBOARD_AUTH=iap``), and each runs as its own service account (``API_SA``,
``DASHBOARD_SA``), which ``enqueuer setup --apply`` has granted what it needs. Who may do
what inside comes from the workers file's ``[access]``: a deployment without an admin there
is one nobody can use, and is refused. Both scale to zero. Service URLs are Cloud Run's
deterministic ones, ``https://SERVICE-PROJECT_NUMBER.REGION.run.app``, so the API's audience
is known before its first deploy.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from enqueuer_core.access import Role, load_access
from enqueuer_core.config import Settings
from enqueuer_core.errors import ConfigError, InvalidRequest
from enqueuer_core.iam_policies import member
from enqueuer_core.workers import load_registry

API_SERVICE = "enqueuer-api"
DASHBOARD_SERVICE = "enqueuer-dashboard"
REPOSITORY = "enqueuer"
APP_DIR = "/app"  # where the Dockerfile puts the build context
# What IAP signs its assertions for, in front of a Cloud Run service (the script's variables).
IAP_AUDIENCE = ("/projects/${PROJECT_NUMBER}/locations/${REGION}/services/"
                + DASHBOARD_SERVICE)
# The Google APIs the deployment uses.
SERVICES = ("run.googleapis.com", "cloudtasks.googleapis.com", "cloudbuild.googleapis.com",
            "artifactregistry.googleapis.com", "iam.googleapis.com", "iap.googleapis.com",
            "cloudresourcemanager.googleapis.com")
# The settings both processes read (Settings' fields, by their environment names).
_SETTINGS = ("PROJECT_ID", "TASKS_REGION", "CALLER_SA", "API_SA", "DASHBOARD_SA",
             "QUEUE_BRAIN", "QUEUE_TESTI", "QUEUE_TRANS", "URL_BRAIN", "URL_TESTI", "URL_TRANS",
             "AUD_BRAIN", "AUD_TESTI", "AUD_TRANS", "DEADLINE_BRAIN_S", "DEADLINE_TESTI_S",
             "DEADLINE_TRANS_S")


@dataclass(frozen=True)
class Command:
    """One gcloud call: ``path`` (``run deploy``…) then its arguments. An argument may hold
    ``${VAR}`` of the script's own variables, left for bash to expand.

    ``unless`` runs first, and this command only when it fails (create what is missing);
    an ``example`` is printed commented out, for the reader to fill in.
    """

    comment: str
    path: tuple[str, ...]
    args: tuple[str, ...]
    unless: Command | None = None
    example: bool = False

    def words(self) -> list[str]:
        return ["gcloud", *self.path, *self.args]

    def render(self) -> str:
        head = " ".join(["gcloud", *self.path,
                         *(_quote(a) for a in self.args if not a.startswith("-"))])
        flags = [_quote(a) for a in self.args if a.startswith("-")]
        one_line = " ".join([head, *flags])
        text = one_line if len(one_line) <= 100 else " \\\n    ".join([head, *flags])
        if self.unless is not None:
            text = f"{self.unless.render()} >/dev/null 2>&1 ||\n  {text}"
        if self.example:
            text = "\n".join(f"# {line}" for line in text.splitlines())
        return text


def _quote(arg: str) -> str:
    """Shell-quote, keeping ``${VAR}`` expandable (double quotes) where it appears; a flag's
    value is quoted alone (``--region="${REGION}"``)."""
    flag, eq, value = arg.partition("=")
    if arg.startswith("--") and eq:
        return f"{flag}={_quote(value)}" if value else arg
    if "${" not in arg:
        return shlex.quote(arg)
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    escaped = escaped.replace("$", "\\$").replace("\\${", "${")
    return f'"{escaped}"'


@dataclass
class DeployPlan:
    project: str
    region: str
    image: str
    api_sa: str
    dashboard_sa: str
    variables: list[tuple[str, str]]  # name, value as bash reads it (quoted already)
    commands: list[Command] = field(default_factory=list)

    def script(self) -> str:
        head = [
            "#!/usr/bin/env bash",
            *_comment(f"Enqueuer on Cloud Run: project {self.project}, region {self.region}. "
                      "Written by `enqueuer deploy` from the settings. Run `enqueuer setup "
                      "--apply` first: it creates the queues and the accounts "
                      f"({self.api_sa}, {self.dashboard_sa}) and grants what they need. Run "
                      "this from the repository's root, where the Dockerfile is."),
            "set -euo pipefail",
            "",
            *(f"{k}={v}" for k, v in self.variables),
            "",
        ]
        body = []
        for n, c in enumerate(self.commands, 1):
            body += [*_comment(f"{n}. {c.comment}"), c.render(), ""]
        tail = ['echo "API:       ${API_URL}"', 'echo "Dashboard: ${DASHBOARD_URL}"']
        return "\n".join(head + body + tail) + "\n"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ",
                         break_on_hyphens=False, break_long_words=False)


def _env_flag(env: dict[str, str]) -> str:
    # gcloud's own escaping: `^|^` makes `|` the separator, so values may hold commas.
    return "--set-env-vars=^|^" + "|".join(f"{k}={v}" for k, v in env.items())


def process_env(settings: Settings, workers_file: str | None) -> dict[str, str]:
    """The settings both services run with, as environment variables."""
    env = {}
    for name in _SETTINGS:
        value = getattr(settings, name.lower())
        if value is not None:
            env[name] = str(value)
    if workers_file:
        env["WORKERS_FILE"] = workers_file
    # Both services enqueue (the API, the dashboard's form): the same audit payloads. Left out
    # when it is the default and was not asked for, so that plans stay as they were.
    if settings.audit_payloads != "hash" or "audit_payloads" in settings.model_fields_set:
        env["AUDIT_PAYLOADS"] = settings.audit_payloads
    return env


def image_path(workers_file: Path | None, root: Path) -> str | None:
    """Where the workers file is inside the image: the image holds the build context, less
    what ``.dockerignore`` leaves out."""
    if workers_file is None:
        return None
    try:
        inside = workers_file.resolve().relative_to(root.resolve())
    except ValueError:
        raise ConfigError(
            f"WORKERS_FILE={workers_file} is outside the repository ({root}), so the image "
            "would not hold it: move it (and its schema files) into the repository"
        ) from None
    # The schema files it names travel with it, relative to its folder.
    data = tomllib.loads(workers_file.read_text())
    schemas = [posixpath.normpath((inside.parent / w["schema_file"]).as_posix())
               for w in (data.get("workers") or {}).values()
               if isinstance(w, dict) and w.get("schema_file")]
    for path in [inside.as_posix(), *schemas]:
        if path.startswith("../"):
            raise ConfigError(f"the schema file {path} of WORKERS_FILE={workers_file} is "
                              "outside the repository, so the image would not hold it")
        pattern = docker_ignored(path, root / ".dockerignore")
        if pattern:
            raise ConfigError(
                f"{path} (WORKERS_FILE={workers_file}) is left out of the image by the line "
                f"{pattern!r} of .dockerignore: keep the workers file and its schemas "
                "elsewhere in the repository, e.g. in deploy/")
    return f"{APP_DIR}/{inside.as_posix()}"


def docker_ignored(path: str, dockerignore: Path) -> str | None:
    """The ``.dockerignore`` line that leaves ``path`` (relative, posix) out, if one does.

    Docker's rules: a pattern matches the path or one of its parent folders; ``**`` matches
    any number of folders; the last matching line wins, ``!`` bringing a path back.
    """
    if not dockerignore.is_file():
        return None
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = None
    for raw in dockerignore.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            verdict = None if keep else line
    return verdict


def check_access(settings: Settings, admins_hint: list[str] | None = None) -> None:
    """Refuse a deployment nobody could use: on Google, without ``[access]`` nobody has a
    role, so the workers file must name at least one admin. ``ConfigError`` showing the lines
    to add (for the first ``user:`` of ``admins_hint`` when there is one); a malformed
    ``[access]`` is refused by ``load_access`` naming its line."""
    who = next((m for m in admins_hint or [] if m.startswith("user:")), "user:YOU@example.com")
    lines = f'[access]\n"{who}" = "admin"'
    why = ("on Google nobody has a role in Enqueuer without one, so nobody could use what "
           "this deploys")
    if settings.workers_file is None:
        raise ConfigError(
            f"enqueuer deploy needs a workers file with an [access] section naming an admin: "
            f"{why}. Create one in the repository (it is built into the image), e.g. "
            f"deploy/workers.toml, with these lines, and set WORKERS_FILE=deploy/workers.toml:"
            f"\n\n{lines}\n")
    registry = load_registry(settings)
    policy = load_access(settings, {w.name: w.enqueuers for w in registry
                                    if w.enqueuers is not None})
    text = Path(settings.workers_file).read_text()
    if "access" not in tomllib.loads(text):
        raise ConfigError(
            f"WORKERS_FILE={settings.workers_file} has no [access] section: {why}. Add these "
            f"lines to it (and more members: viewer, operator or admin):\n\n{lines}\n")
    if not any(role is Role.ADMIN for role in policy.grants.values()):
        granted = ", ".join(f"{m} = {r.label}" for m, r in policy.grants.items()) or "nobody"
        raise ConfigError(
            f"WORKERS_FILE={settings.workers_file}: [access] names no admin ({granted}), so "
            "nobody could pause, resume or purge a queue or run `enqueuer setup --apply`. "
            f"Add this line under [access]:\n\n{lines.split(chr(10))[1]}\n")


_MEMBER = re.compile(r"^(user|serviceAccount|group|domain):[^\s:]+$")


def checked_member(value: str, flag: str) -> str:
    """An IAM member from ``user:…``/``serviceAccount:…``/``group:…``/``domain:…`` or an email."""
    value = value.strip()
    candidate = member(value) if "@" in value and ":" not in value else value
    if not _MEMBER.match(candidate):
        raise InvalidRequest(
            f"{flag} {value!r} is not an IAM member: write user:ana@example.com, "
            "serviceAccount:intake@PROJECT.iam.gserviceaccount.com, group:ops@example.com or "
            "domain:example.com (an email alone is taken as a user or service account)")
    return candidate


def deploy_plan(settings: Settings, root: Path, image: str | None = None,
                api_callers: list[str] | None = None,
                dashboard_users: list[str] | None = None) -> DeployPlan:
    """The commands that deploy this configuration. ``root``: the build context."""
    if settings.on_emulator:
        raise ConfigError(
            "enqueuer deploy prints the commands for Google, and these settings point at the "
            "emulator: unset CLOUD_TASKS_EMULATOR_HOST (and leave out --local), and set "
            "PROJECT_ID, TASKS_REGION, CALLER_SA and URL_BRAIN, URL_TESTI, URL_TRANS")
    api_callers = [checked_member(m, "--api-caller") for m in api_callers or []]
    dashboard_users = [checked_member(m, "--dashboard-user") for m in dashboard_users or []]
    project, region = settings.project_id or "", settings.tasks_region or ""
    image = image or f"{region}-docker.pkg.dev/{project}/{REPOSITORY}/enqueuer:latest"
    api_sa, dashboard_sa = settings.api_sa or "", settings.dashboard_sa or ""
    variables = [
        ("PROJECT", shlex.quote(project)), ("REGION", shlex.quote(region)),
        ("IMAGE", shlex.quote(image)),
        ("PROJECT_NUMBER", '"$(gcloud projects describe "${PROJECT}" '
                           """--format='value(projectNumber)')\""""),
        # Cloud Run's deterministic URLs: known before the first deploy.
        ("API_URL", f'"https://{API_SERVICE}-${{PROJECT_NUMBER}}.${{REGION}}.run.app"'),
        ("DASHBOARD_URL",
         f'"https://{DASHBOARD_SERVICE}-${{PROJECT_NUMBER}}.${{REGION}}.run.app"'),
    ]
    where = ("--region=${REGION}", "--project=${PROJECT}")
    env = process_env(settings, image_path(settings.workers_file, root))
    check_access(settings, dashboard_users)
    # The API checks each caller's ID token again (Cloud Run checked it at the door): its
    # audience is the API's URL, and its email must hold a role in [access].
    api_env = {**env, "API_AUTH": "google", "API_AUDIENCE": "${API_URL}"}
    # The dashboard knows its user from IAP's signed assertion, for this very service.
    dashboard_env = {**env, "ENQUEUER_API_URL": "${API_URL}", "DASHBOARD_AUTH": "iap",
                     "IAP_AUDIENCE": IAP_AUDIENCE}
    iap_agent = "serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-iap.iam.gserviceaccount.com"
    commands = [
        Command("The Google APIs Enqueuer uses (once per project; harmless to repeat).",
                ("services", "enable"), (*SERVICES, "--project=${PROJECT}")),
        Command("A Docker repository in Artifact Registry for the image, unless it exists.",
                ("artifacts", "repositories", "create"),
                (REPOSITORY, "--repository-format=docker", "--location=${REGION}",
                 "--project=${PROJECT}"),
                unless=Command("", ("artifacts", "repositories", "describe"),
                               (REPOSITORY, "--location=${REGION}", "--project=${PROJECT}"))),
        Command("Build the image from this folder's Dockerfile with Cloud Build.",
                ("builds", "submit"), ("--tag=${IMAGE}", "--project=${PROJECT}", ".")),
        Command(f"The API: private (Cloud Run lets in only callers with roles/run.invoker and "
                f"an ID token for its URL), running as {api_sa}.",
                ("run", "deploy"),
                (API_SERVICE, "--image=${IMAGE}", *where, f"--service-account={api_sa}",
                 "--no-allow-unauthenticated", "--ingress=all", "--min-instances=0",
                 "--max-instances=10", "--cpu-boost", _env_flag(api_env))),
    ]
    for caller in api_callers or []:
        commands.append(Command(
            f"{caller} may call the API.", ("run", "services", "add-iam-policy-binding"),
            (API_SERVICE, *where, f"--member={caller}", "--role=roles/run.invoker")))
    if not api_callers:
        commands.append(Command(
            "Nobody may call the API yet: give each client program's account the invoker "
            "role (or pass --api-caller to enqueuer deploy). For example:",
            ("run", "services", "add-iam-policy-binding"),
            (API_SERVICE, *where, f"--member=serviceAccount:CLIENT@{project}"
             ".iam.gserviceaccount.com", "--role=roles/run.invoker"), example=True))
    commands += [
        Command(f"The dashboard: behind Identity-Aware Proxy (Google sign-in), running as "
                f"{dashboard_sa}. Streamlit keeps a websocket per browser tab: session "
                "affinity and a one-hour request timeout keep it.",
                ("beta", "run", "deploy"),
                (DASHBOARD_SERVICE, "--image=${IMAGE}", "--args=dashboard", *where,
                 f"--service-account={dashboard_sa}", "--no-allow-unauthenticated", "--iap",
                 "--ingress=all", "--session-affinity", "--timeout=3600", "--min-instances=0",
                 "--max-instances=3", "--cpu-boost", _env_flag(dashboard_env))),
        Command("IAP's service agent (created if missing) calls the dashboard for the signed-"
                "in user.", ("beta", "services", "identity", "create"),
                ("--service=iap.googleapis.com", "--project=${PROJECT}")),
        Command("IAP's service agent may invoke the dashboard.",
                ("run", "services", "add-iam-policy-binding"),
                (DASHBOARD_SERVICE, *where, f"--member={iap_agent}",
                 "--role=roles/run.invoker")),
    ]
    for user in dashboard_users or []:
        commands.append(Command(
            f"{user} may open the dashboard.", ("beta", "iap", "web", "add-iam-policy-binding"),
            ("--resource-type=cloud-run", f"--service={DASHBOARD_SERVICE}", *where,
             f"--member={user}", "--role=roles/iap.httpsResourceAccessor")))
    if not dashboard_users:
        commands.append(Command(
            "Nobody may open the dashboard yet: give each operator IAP's accessor role (or "
            "pass --dashboard-user to enqueuer deploy). For example:",
            ("beta", "iap", "web", "add-iam-policy-binding"),
            ("--resource-type=cloud-run", f"--service={DASHBOARD_SERVICE}", *where,
             "--member=user:OPERATOR@example.com", "--role=roles/iap.httpsResourceAccessor"),
            example=True))
    return DeployPlan(project, region, image, api_sa, dashboard_sa, variables, commands)
