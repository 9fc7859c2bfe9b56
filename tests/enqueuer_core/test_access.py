"""Who may do what, decided once in the core: the access config, each role against each
action through the real library and emulator, and the audit line every change leaves."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from enqueuer_core.access import AccessPolicy, Acting, Action, Role, audit, check_member
from enqueuer_core.actions import delete_tasks, pause_queue, purge_queue, resume_queue, run_task
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import ConfigError, Forbidden, InvalidRequest
from tests.emulator.harness import PARENT, PROJECT, http_task

ANA, BOB, CAROL, DAN = ("user:ana@example.com", "user:bob@example.com",
                        "user:carol@example.com", "user:dan@elsewhere.org")
INTAKE = "serviceAccount:intake@p.iam.gserviceaccount.com"
ACCESS = f'''
[access]
"{ANA}" = "admin"
"{BOB}" = "operator"
"domain:example.com" = "viewer"
"{INTAKE}" = "viewer"

[workers.brain]
enqueuers = ["{INTAKE}", "{ANA}"]
'''
_ids = itertools.count()


def policy_from(tmp_path: Path, text: str, on_emulator: bool = True) -> AccessPolicy:
    path = tmp_path / f"workers-{next(_ids)}.toml"
    path.write_text(text)
    base = ({"cloud_tasks_emulator_host": "127.0.0.1:1"} if on_emulator else {
        "project_id": "p", "tasks_region": "us-central1",
        "caller_sa": "c@p.iam.gserviceaccount.com",
        **{f"url_{s}": "https://w.example.com/x" for s in ("brain", "testi", "trans")}})
    settings = load_settings(workers_file=path, **base)
    return Enqueuer(settings).access


# -- the config ------------------------------------------------------------------------------


def test_roles_come_from_members_users_and_their_domain_taking_the_highest(tmp_path):
    policy = policy_from(tmp_path, ACCESS)
    assert policy.role_of(ANA) is Role.ADMIN  # her own line beats her domain's
    assert policy.role_of(BOB) is Role.OPERATOR
    assert policy.role_of(CAROL) is Role.VIEWER  # through domain:example.com
    assert policy.role_of(DAN) is None
    # A domain is its Workspace users, not the service accounts of a project in it.
    assert policy.role_of("serviceAccount:x@example.com") is None
    assert policy.role_of("allUsers") is None


@pytest.mark.parametrize("line, expected", [
    ('"user:ana@example.com" = "owner"', r"line 3 .*'owner' is not a role: use viewer, "
                                         "operator or admin"),
    ('"ana@example.com" = "viewer"', r"line 3 .*write it as user:ana@example.com"),
    ('"group:ops@example.com" = "viewer"', r"line 3 .*list the group's users"),
    ('"user:not-an-email" = "viewer"', r"line 3 .*'not-an-email' is not an email address"),
    ('"domain:localhost" = "viewer"', r"line 3 .*not a domain like example.com"),
])
def test_a_bad_access_line_stops_the_start_naming_the_line_and_the_fix(tmp_path, line,
                                                                       expected):
    with pytest.raises(ConfigError, match=expected):
        policy_from(tmp_path, f"\n[access]\n{line}\n")


def test_a_bad_enqueuer_of_a_worker_is_refused_too(tmp_path):
    with pytest.raises(ConfigError, match=r"\[workers.brain\] enqueuers 'intake@p.iam"):
        policy_from(tmp_path, '[workers.brain]\nenqueuers = ["intake@p.iam.gserviceaccount.com"]')


def test_members_follow_iams_syntax():
    assert check_member("allAuthenticatedUsers") is None
    assert check_member(INTAKE) is None
    assert "not an IAM member" in (check_member("everyone") or "")
    assert "not a kind of member" in (check_member("principal:ana@example.com") or "")


def test_without_access_google_is_closed_and_the_emulator_has_its_local_users(tmp_path):
    closed = policy_from(tmp_path, "", on_emulator=False)
    with pytest.raises(Forbidden, match=r"has no \[access\] section, so nobody has a role"):
        closed.decide(ANA, Action.READ)
    local = policy_from(tmp_path, "")
    assert local.role_of("user:viewer@local-project.test") is Role.VIEWER
    assert local.role_of("user:admin@local-project.test") is Role.ADMIN


def test_a_refusal_names_the_role_needed_and_the_line_that_grants_it(tmp_path):
    policy = policy_from(tmp_path, ACCESS)
    with pytest.raises(Forbidden) as e:
        policy.decide(BOB, Action.PURGE)
    assert e.value.http_status == 403 and e.value.exit_code == 11
    assert "user:bob@example.com is an operator; purging a queue needs the admin role" in (
        e.value.message)
    assert f'"{BOB}" = "admin"' in e.value.message and "workers-" in e.value.message
    with pytest.raises(Forbidden, match=r'has no role .* "user:dan@elsewhere.org" = "viewer"'):
        policy.decide(DAN, Action.READ)


def test_a_worker_with_enqueuers_takes_jobs_from_exactly_those(tmp_path):
    policy = policy_from(tmp_path, ACCESS)
    assert policy.decide(INTAKE, Action.ENQUEUE, "brain") is Role.VIEWER
    assert policy.may(ANA, Action.ENQUEUE, "brain")
    # An operator elsewhere is not one of brain's enqueuers...
    with pytest.raises(Forbidden, match=r'only the enqueuers listed for brain .* enqueuers = '
                                        r'\["serviceAccount:intake@p.iam.gserviceaccount.com", '
                                        r'"user:ana@example.com", "user:bob@example.com"\]'):
        policy.decide(BOB, Action.ENQUEUE, "brain")
    # ...and brain's enqueuer is only a viewer everywhere else.
    assert policy.may(BOB, Action.ENQUEUE, "testimonios")
    assert not policy.may(INTAKE, Action.ENQUEUE, "testimonios")


def test_an_enqueuer_without_a_role_may_read_what_it_enqueues_to(tmp_path):
    policy = policy_from(tmp_path, f'[access]\n"{ANA}" = "admin"\n'
                                   f'[workers.brain]\nenqueuers = ["{INTAKE}"]\n')
    assert policy.decide(INTAKE, Action.READ) is None
    assert not policy.may(INTAKE, Action.RUN)


# -- every role against every action, through the library and the emulator -------------------

MATRIX = {  # action -> the roles that may
    Action.ENQUEUE: {"operator", "admin"},
    Action.RUN: {"operator", "admin"},
    Action.DELETE: {"operator", "admin"},
    Action.PAUSE: {"admin"},
    Action.RESUME: {"admin"},
    Action.PURGE: {"admin"},
}
WHO = {"nobody": DAN, "viewer": CAROL, "operator": BOB, "admin": ANA}


@pytest.fixture(scope="module")
def world(emulator, tmp_path_factory):
    """One Enqueuer on the emulator, its testimonios queue paused (nothing runs away)."""
    tmp = tmp_path_factory.mktemp("access")
    path = tmp / "workers.toml"
    path.write_text(ACCESS)
    queue = f"access-testi-{next(_ids)}"
    client = emulator.client()
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/{queue}"))
    client.pause_queue(name=f"{PARENT}/queues/{queue}")
    settings = load_settings(cloud_tasks_emulator_host=emulator.target, project_id=PROJECT,
                             tasks_region="us-central1", caller_sa="c@p.iam.gserviceaccount.com",
                             queue_testi=queue, workers_file=path)
    return Enqueuer(settings), f"{PARENT}/queues/{queue}", client


def attempt(action: Action, acting: Acting, enqueuer: Enqueuer, queue: str, client) -> None:
    task = client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/x")).name
    if action is Action.ENQUEUE:
        enqueuer.enqueue(EnqueueRequest(service="testimonios", payload={"n": 1}), acting)
    elif action is Action.RUN:
        run_task(enqueuer.client, task, acting)
    elif action is Action.DELETE:
        failed = delete_tasks(enqueuer.client, [task], acting)
        assert failed == {task: None}
    else:
        {Action.PAUSE: pause_queue, Action.RESUME: resume_queue,
         Action.PURGE: purge_queue}[action](enqueuer.client, queue, acting)


def state(client, queue: str) -> tuple[str, list[str]]:
    listed = [t.name for t in client.list_tasks(parent=queue)]
    return tasks_v2.Queue.State(client.get_queue(name=queue).state).name, sorted(listed)


@pytest.mark.parametrize("action", list(MATRIX), ids=lambda a: a.value)
@pytest.mark.parametrize("role", list(WHO))
def test_each_role_may_do_exactly_its_actions(world, action, role, capfd):
    enqueuer, queue, client = world
    acting = Acting(WHO[role], enqueuer.access, "dashboard")
    if role in MATRIX[action]:
        attempt(action, acting, enqueuer, queue, client)
        outcome = "ok"
    else:
        task = client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/x")).name
        before = state(client, queue)
        with pytest.raises(Forbidden) as refused:
            attempt_on(action, acting, enqueuer, queue, task)
        assert state(client, queue) == before  # nothing changed
        assert f"needs the {action.needs.label} role" in refused.value.message
        outcome = "refused"
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()
             if line.startswith("{")]
    assert len(lines) == 1, lines
    audit = lines[0]["audit"]
    assert (audit["principal"], audit["action"], audit["outcome"], audit["via"]) == (
        WHO[role], action.value, outcome, "dashboard")
    assert lines[0]["severity"] == ("NOTICE" if outcome == "ok" else "WARNING")
    assert lines[0]["logging.googleapis.com/labels"]["action"] == action.value
    if outcome == "ok" and action is Action.RESUME:
        client.pause_queue(name=queue)  # nothing of this module's runs away


def attempt_on(action: Action, acting: Acting, enqueuer: Enqueuer, queue: str,
               task: str) -> None:
    """The action, on an existing task (the refused case: nothing may be created first)."""
    if action is Action.ENQUEUE:
        enqueuer.enqueue(EnqueueRequest(service="testimonios", payload={"n": 1}), acting)
    elif action is Action.RUN:
        run_task(enqueuer.client, task, acting)
    elif action is Action.DELETE:
        delete_tasks(enqueuer.client, [task], acting)
    else:
        {Action.PAUSE: pause_queue, Action.RESUME: resume_queue,
         Action.PURGE: purge_queue}[action](enqueuer.client, queue, acting)


def test_an_enqueue_line_carries_key_task_and_payload_hash_never_the_payload(world, capfd):
    enqueuer, queue, _ = world
    secret = "do-not-log-me"
    result = enqueuer.enqueue(EnqueueRequest(service="testimonios", payload={"s": secret},
                                             idempotency_key="audit-key-1"),
                              Acting(BOB, enqueuer.access, "api", request_id="req-1"))
    out = capfd.readouterr().out
    assert secret not in out
    (line,) = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    audit = line["audit"]
    assert audit["idempotency_key"] == "audit-key-1" and audit["task"] == result.task
    assert audit["request_id"] == "req-1" and audit["role"] == "operator"
    assert audit["target"] == queue and audit["worker"] == "testimonios"
    assert audit["payload"]["bytes"] == len(json.dumps({"s": secret}, separators=(",", ":")))
    assert len(audit["payload"]["sha256"]) == 64
    assert line["message"] == "enqueue testimonios by user:bob@example.com: ok"
    assert line["time"].endswith("Z")


def test_an_allowed_change_that_fails_is_on_record_with_its_code(world, capfd):
    enqueuer, _, _ = world
    with pytest.raises(InvalidRequest):
        enqueuer.enqueue(EnqueueRequest(service="brain", payload={}),
                         Acting(ANA, enqueuer.access, "api"))
    (line,) = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    assert (line["audit"]["outcome"], line["audit"]["error_code"], line["severity"]) == (
        "failed", "invalid_request", "ERROR")


def test_an_audit_line_is_one_compact_json_line_with_text_as_written():
    """What Cloud Logging parses: one line, compact JSON, text as UTF-8 (not \\u escapes), and
    anything JSON has no type for written as its text."""
    entry = audit.audit_line(principal="user:ñandú@example.com", role="operator", via="api",
                             action="enqueue", target="projects/p/locations/l/queues/q",
                             outcome="ok", request_id="r", worker="brain",
                             payload={"content": {"when": dt.date(2026, 12, 2), "☃": 1.5}},
                             now=dt.datetime(2026, 12, 2, 10, 0, 0, 5, tzinfo=dt.UTC))
    out = io.StringIO()
    audit.write(entry, out)
    assert out.getvalue() == json.dumps(entry, ensure_ascii=False, separators=(",", ":"),
                                        default=str) + "\n"
    assert '"time":"2026-12-02T10:00:00.000005Z"' in out.getvalue()
    assert '"☃":1.5' in out.getvalue() and '"when":"2026-12-02"' in out.getvalue()
