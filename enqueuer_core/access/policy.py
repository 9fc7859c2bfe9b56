"""Who may do what: the access config, and the one function that decides.

The workers file's ``[access]`` maps principals, in IAM's member syntax, to roles::

    [access]
    "user:ana@example.com" = "admin"
    "domain:example.com" = "viewer"
    "serviceAccount:intake@acme.iam.gserviceaccount.com" = "operator"

    [workers.brain]
    enqueuers = ["serviceAccount:intake@acme.iam.gserviceaccount.com"]  # only these enqueue

``viewer`` reads every page and list; ``operator`` also enqueues, runs and deletes tasks
and probes the workers' doors (``diagnose --probe``: a signed GET to each worker);
``admin`` also pauses, resumes and purges queues and runs ``setup --apply``. A worker with
``enqueuers`` takes jobs from exactly those members (roles do not widen it), and each of
them may read what the API shows (``GET /workers``). A principal matched by several lines
(a user and their domain) has the highest of their roles.

Without ``[access]``, on Google nobody has a role (closed by default); on the emulator the
local stack's users have one each (``LOCAL_USERS``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import NoReturn

from enqueuer_core.config import LOCAL_USERS, Settings
from enqueuer_core.errors import ConfigError, Forbidden


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Action(StrEnum):
    READ = "read"
    ENQUEUE = "enqueue"
    RUN = "run"
    DELETE = "delete"
    PAUSE = "pause"
    RESUME = "resume"
    PURGE = "purge"
    SETUP = "setup_apply"
    PROBE = "probe"

    @property
    def needs(self) -> Role:
        return _NEEDS[self]

    @property
    def doing(self) -> str:
        """The action as the middle of a sentence: "pausing a queue"."""
        return _DOING[self]


_NEEDS = {Action.READ: Role.VIEWER, Action.ENQUEUE: Role.OPERATOR, Action.RUN: Role.OPERATOR,
          Action.DELETE: Role.OPERATOR, Action.PAUSE: Role.ADMIN, Action.RESUME: Role.ADMIN,
          Action.PURGE: Role.ADMIN, Action.SETUP: Role.ADMIN, Action.PROBE: Role.OPERATOR}
_DOING = {Action.READ: "reading Enqueuer's pages and lists", Action.ENQUEUE: "enqueuing a job",
          Action.RUN: "running a task now", Action.DELETE: "deleting a task",
          Action.PAUSE: "pausing a queue", Action.RESUME: "resuming a queue",
          Action.PURGE: "purging a queue", Action.SETUP: "applying `enqueuer setup`",
          Action.PROBE: "probing the workers' doors with a real request"}
ROLE_NAMES = {r.label: r for r in Role}

ALL_USERS, ALL_AUTHENTICATED = "allUsers", "allAuthenticatedUsers"
_EMAIL = re.compile(r"^[^@\s:]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_EXAMPLES = ("user:ana@example.com, serviceAccount:intake@PROJECT.iam.gserviceaccount.com, "
             "domain:example.com or allAuthenticatedUsers")


def check_member(member: str) -> str | None:
    """Why ``member`` is not a member Enqueuer can match, or None when it is."""
    if member in (ALL_USERS, ALL_AUTHENTICATED):
        return None
    kind, sep, value = member.partition(":")
    if not sep:
        if _EMAIL.match(member):
            return f"write it as user:{member} (or serviceAccount:{member} for an account)"
        return f"it is not an IAM member: write it as one of {_EXAMPLES}"
    if kind in ("user", "serviceAccount"):
        return None if _EMAIL.match(value) else f"{value!r} is not an email address"
    if kind == "domain":
        return None if _DOMAIN.match(value) else f"{value!r} is not a domain like example.com"
    if kind == "group":
        return ("Enqueuer sees only the email in a token, not group membership: list the "
                "group's users (user:...) or their domain (domain:...)")
    return f"{kind}: is not a kind of member Enqueuer matches: use one of {_EXAMPLES}"


def member_for_email(email: str) -> str:
    """The IAM member a verified token's email is: a service account, or a user."""
    kind = "serviceAccount" if email.endswith(".gserviceaccount.com") else "user"
    return f"{kind}:{email}"


def _matches(grant: str, member: str) -> bool:
    if grant in (member, ALL_USERS):
        return True
    if member == ALL_USERS:
        return False
    if grant == ALL_AUTHENTICATED:
        return True
    kind, _, email = member.partition(":")
    # IAM's domain: is a Google Workspace domain's users, not the accounts of a project.
    return kind == "user" and grant == f"domain:{email.rpartition('@')[2].lower()}"


@dataclass(frozen=True)
class AccessPolicy:
    grants: Mapping[str, Role]
    enqueuers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # worker -> members
    source: str = "the access config"  # where the grants come from, for messages
    file: Path | None = None  # the workers file an admin edits to change them

    def role_of(self, member: str) -> Role | None:
        roles = [r for g, r in self.grants.items() if _matches(g, member)]
        return max(roles) if roles else None

    def enqueues_to(self, member: str) -> list[str]:
        """The workers whose ``enqueuers`` list the member."""
        return [w for w, ms in self.enqueuers.items() if any(_matches(m, member) for m in ms)]

    def may(self, member: str, action: Action, worker: str | None = None) -> bool:
        try:
            self.decide(member, action, worker)
        except Forbidden:
            return False
        return True

    def decide(self, member: str, action: Action, worker: str | None = None) -> Role | None:
        """The member's role when it may do ``action`` (on ``worker``), else ``Forbidden``.

        The one place that decides: the API, the dashboard and the CLI only pass who acts.
        """
        role = self.role_of(member)
        if action is Action.ENQUEUE and worker in self.enqueuers:
            if worker in self.enqueues_to(member):
                return role
            listed = ", ".join(f'"{m}"' for m in self.enqueuers[worker])
            raise Forbidden(
                f"{self._who(member, role)}; only the enqueuers listed for {worker} may enqueue "
                f"to it ({listed}). An admin adds {member} in {self._where()}: "
                f"[workers.{worker}] enqueuers = [{listed}, \"{member}\"]")
        if action is Action.READ and role is None and self.enqueues_to(member):
            return None
        if role is not None and role >= action.needs:
            return role
        self._refuse(member, role, action)

    def _refuse(self, member: str, role: Role | None, action: Action) -> NoReturn:
        needed = action.needs
        higher = " (or admin)" if needed is Role.OPERATOR else ""
        raise Forbidden(
            f"{self._who(member, role)}; {action.doing} needs the {needed.label} role{higher}. "
            f"An admin grants it with this line under [access] in {self._where()}: "
            f'"{member}" = "{needed.label}"')

    def _who(self, member: str, role: Role | None) -> str:
        if role is None:
            return f"{member} has no role in Enqueuer's access config ({self.source})"
        return f"{member} is {'a' if role is Role.VIEWER else 'an'} {role.label}"

    def _where(self) -> str:
        return f"the workers file {self.file}" if self.file else "the workers file (WORKERS_FILE)"


def local_policy() -> AccessPolicy:
    return AccessPolicy({m: ROLE_NAMES[r] for m, r in LOCAL_USERS.items()},
                        source="the local stack's users, as no [access] is configured")


def load_access(settings: Settings, enqueuers: Mapping[str, Iterable[str]] | None = None,
                ) -> AccessPolicy:
    """The access config of the workers file (``[access]`` and each worker's ``enqueuers``).

    A malformed member or an unknown role is a ``ConfigError`` naming the line and the fix.
    """
    path = Path(settings.workers_file) if settings.workers_file else None
    text = path.read_text() if path and path.is_file() else ""
    data = tomllib.loads(text) if text else {}
    raw = data.get("access")
    where = f"WORKERS_FILE={path}" if path else "the workers file"
    narrowed: dict[str, tuple[str, ...]] = {}
    for worker, members in (enqueuers or {}).items():
        members = tuple(members)
        for m in members:
            _check(m, text, where, f"[workers.{worker}] enqueuers")
        narrowed[worker] = members
    if raw is None:
        if settings.on_emulator:
            return AccessPolicy(local_policy().grants, narrowed, local_policy().source, path)
        return AccessPolicy({}, narrowed, f"{where} has no [access] section, so nobody has a "
                            "role", path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [access] must be a table of member = role lines, like "
                          '"user:ana@example.com" = "operator"')
    grants: dict[str, Role] = {}
    for member, role in raw.items():
        _check(member, text, where, "[access]")
        if not isinstance(role, str) or role not in ROLE_NAMES:
            raise ConfigError(
                f"{where}{_line(text, member)}: {member} = {role!r}: {role!r} is not a role: "
                f"use viewer, operator or admin")
        grants[member] = ROLE_NAMES[role]
    return AccessPolicy(grants, narrowed, f"{where} [access]", path)


def _check(member: object, text: str, where: str, section: str) -> None:
    problem = (check_member(member) if isinstance(member, str)
               else "a member must be a string like \"user:ana@example.com\"")
    if problem:
        raise ConfigError(f"{where}{_line(text, str(member))}: {section} {member!r}: {problem}")


def _line(text: str, needle: str) -> str:
    """``, line N`` for the first line of the file that holds ``needle`` (tomllib keeps no
    positions), so that the message points where to edit."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return f", line {n} ({line.strip()})"
    return ""
