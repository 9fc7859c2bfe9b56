"""The Diagnostics page: diagnose's checks as a matrix over the emulator's queues.

The session emulator serves no Cloud Run services, so the Cloud Run and IAM checks are not
passing here: these tests assert on the configuration and queue checks, which it can answer,
and on the Fix of a missing queue (``enqueuer setup`` creates it). The marks are words and
the UI font's symbols in cells, Material icons in Markdown: never an emoji (which renders as
an empty box without a colour-emoji font; tests/browser/test_diagnostics.py looks at them).
"""

from __future__ import annotations

import re

import pytest
from google.api_core.exceptions import NotFound
from google.cloud import tasks_v2
from streamlit.testing.v1 import AppTest

from enqueuer_core.config import LOCAL_PRINCIPAL
from tests.dashboard.conftest import ADMIN, CALLER_SA, OPERATOR, VIEWER, Dash, audit_lines
from tests.dashboard.test_pages import slow_retries
from tests.dashboard.test_queues_page import add_task, queue_page
from tests.emulator.harness import start_emulator, wait_until

DIAGNOSTICS = "pages/diagnostics.py"
WORKERS = ["brain", "testimonios", "transcripciones"]
LOCAL_CHECKS = ["caller_sa", "url_scheme", "audience", "deadline", "queue"]
PASS, WARN, FAIL, UNKNOWN = "✓ pass", "! warn", "✗ fail", "? unknown"
# Emoji, their variation selector, and the symbol blocks the UI font lacks (⚠ ❔ ✅ ❌ ✖ 🔎).
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u26FF\u2B00-\u2BFF\uFE0F"
                   "\u2700-\u2712\u2714-\u2716\u2718-\u27BF]")


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def page(dash: Dash, **query: str) -> AppTest:
    at = dash.app(DIAGNOSTICS, **query)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)  # diagnose ran; failed checks are not st.error
    return at


def cell(at: AppTest, worker: str, check: str) -> str:
    return at.dataframe[0].value.loc[worker, check]


def everything_shown(at: AppTest) -> str:
    """Every text the page shows: Markdown, captions, alerts, labels, and the matrix."""
    parts = [texts(getattr(at, kind)) for kind in
             ("markdown", "caption", "info", "warning", "error", "success", "title")]
    parts += [e.label for e in at.expander] + [b.label for b in at.button]
    parts += [str(v) for v in at.dataframe[0].value.to_numpy().ravel()] if at.dataframe else []
    return "\n".join(parts)


def details(at: AppTest, worker: str, check: str):
    """The expander of ``worker``'s ``check`` (only checks that do not pass have one)."""
    box = next(c for c in at.main.children.values()
               if c.type == "flex_container" and f"#### {worker} " in texts(c.markdown))
    return next(e for e in box.expander if f"`{check}`" in e.label)


def test_the_matrix_shows_every_check_for_the_three_workers(dash: Dash):
    at = page(dash)
    matrix = at.dataframe[0].value
    assert list(matrix.index) == WORKERS
    assert set(LOCAL_CHECKS) <= set(matrix.columns)
    for worker in WORKERS:
        assert [cell(at, worker, c) for c in LOCAL_CHECKS] == [PASS] * len(LOCAL_CHECKS)
    assert "Worst:" in texts(at.markdown)
    assert at.dataframe[0].value.isin([PASS, WARN, FAIL, UNKNOWN]).all().all()
    # Marks are Material icons in Markdown and the UI font's symbols in cells: no emoji.
    shown = everything_shown(at)
    assert ":material/check_circle:" in shown and ":material/" in texts(at.markdown)
    assert not EMOJI.findall(shown), EMOJI.findall(shown)


def test_another_audience_warns_with_its_fix_and_the_link_opens_it(dash: Dash, monkeypatch):
    # Not the URL's base: it works only as one of the service's custom audiences.
    monkeypatch.setenv("AUD_TESTI", "https://elsewhere.example.com")
    at = page(dash, check="audience")
    assert cell(at, "testimonios", "audience") == WARN
    assert cell(at, "brain", "audience") == PASS
    box = details(at, "testimonios", "audience")
    assert box.proto.expanded  # a warning is closed, unless it is the check linked here
    assert "elsewhere.example.com" in texts(box.markdown)
    assert dash.receiver.url in texts(box.code)  # the fix names the right audience
    assert "testimonios" in texts(at.info)  # ?check=audience: where it does not pass


def test_an_audience_with_a_path_is_a_failed_check_not_a_refusal(dash: Dash, monkeypatch):
    # Every other page refuses such settings with the configuration error; Diagnostics reads
    # them leniently, as `enqueuer diagnose` does, and reports each as a failed check.
    monkeypatch.setenv("AUD_BRAIN", dash.receiver.url + "/process")
    overview = dash.app()
    assert "Configuration error" in texts(overview.error)
    at = page(dash)
    assert cell(at, "brain", "audience") == FAIL
    box = details(at, "brain", "audience")
    assert box.proto.expanded  # a failure is open
    assert "has a path" in texts(box.markdown)
    assert f"AUD_BRAIN={dash.receiver.url}" in texts(box.code)


def test_a_paused_queue_warns_then_passes_after_resume_and_re_run(dash: Dash):
    dash.client.pause_queue(name=dash.queues["transcripciones"])
    at = page(dash, check="queue")
    assert cell(at, "transcripciones", "queue") == WARN
    fix = texts(details(at, "transcripciones", "queue").code)
    assert "resume" in fix and dash.queues["transcripciones"].rsplit("/", 1)[1] in fix

    dash.client.resume_queue(name=dash.queues["transcripciones"])
    at.button(key="diagnostics_rerun").click().run()
    assert not at.exception, at.exception
    assert cell(at, "transcripciones", "queue") == PASS


def test_the_filter_shows_only_the_chosen_workers_without_running_again(dash: Dash):
    at = page(dash)
    ran = texts(at.caption)
    at.multiselect(key="diagnostics_workers").set_value(["brain"]).run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value.index) == ["brain"]
    assert texts(at.caption) == ran  # same run: a filter is not a reason to call Google


def test_settings_diagnose_cannot_read_are_an_error_not_a_traceback(dash: Dash, monkeypatch):
    dash.app()  # the dashboard running; then its environment is broken
    monkeypatch.setenv("DEADLINE_BRAIN_S", "soon")
    at = dash.app(DIAGNOSTICS)
    assert not at.exception, at.exception
    assert "The checks could not run" in texts(at.error)
    assert "DEADLINE_BRAIN_S" in texts(at.error)


# -- Fix and Probe --------------------------------------------------------------------------


def missing_queue(dash: Dash, monkeypatch) -> str:
    """Point transcripciones at a queue that does not exist yet; its full name."""
    name = dash.queues["transcripciones"] + "-new"
    monkeypatch.setenv("QUEUE_TRANS", name.rsplit("/", 1)[1])
    return name


def test_an_admin_fixes_a_missing_queue_seeing_the_change_first(dash: Dash, monkeypatch,
                                                                capsys):
    name = missing_queue(dash, monkeypatch)
    at = page(dash, user=ADMIN)
    assert cell(at, "transcripciones", "queue") == FAIL
    at.button(key="fix:transcripciones:queue").click().run()
    assert not at.exception, at.exception
    box = details(at, "transcripciones", "queue")
    change = texts(box.code)
    assert f"gcloud tasks queues create {name.rsplit('/', 1)[1]}" in change
    with pytest.raises(NotFound):  # shown, not made
        dash.client.get_queue(name=name)
    capsys.readouterr()
    at.button(key="fix_apply:transcripciones:queue").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert "Fixed `queue` for transcripciones" in texts(at.success)
    assert "it passes now" in texts(at.success)
    assert cell(at, "transcripciones", "queue") == PASS  # the checks ran again
    queue = dash.client.get_queue(name=name)
    assert tasks_v2.Queue.State(queue.state) == tasks_v2.Queue.State.RUNNING
    lines = [x for x in audit_lines(capsys.readouterr().out) if x["action"] == "setup_apply"]
    assert [(x["principal"], x["outcome"], x["worker"], x["fix"]) for x in lines] == [
        (f"user:{ADMIN}", "ok", "transcripciones", "queue")]
    assert "fix:transcripciones:queue" not in [b.key for b in at.button]  # nothing to fix


def test_only_an_admin_gets_fix_and_a_viewer_may_not_probe(dash: Dash, monkeypatch):
    missing_queue(dash, monkeypatch)
    at = page(dash, user=OPERATOR)
    assert cell(at, "transcripciones", "queue") == FAIL
    assert not any(b.key and b.key.startswith("fix:") for b in at.button)
    assert "gcloud tasks queues create" in texts(details(at, "transcripciones", "queue").code)
    assert not at.button(key="diagnostics_probe").disabled  # an operator may probe

    at = page(dash, user=VIEWER)
    assert not any(b.key and b.key.startswith("fix:") for b in at.button)
    probe = at.button(key="diagnostics_probe")
    assert probe.disabled and "operator role" in (probe.help or ""), probe.help


def test_an_operators_probe_fills_the_probe_column_for_the_chosen_workers(dash: Dash, capsys):
    # The session emulator has no account CALLER_SA: no token can be minted as it, so the
    # probe fails, saying so, with the fix (a correct stack's probe: tests/browser).
    at = page(dash, user=OPERATOR)
    assert "probe" not in at.dataframe[0].value.columns  # probed on request only
    at.multiselect(key="diagnostics_workers").set_value(["brain", "testimonios"]).run()
    capsys.readouterr()
    at.button(key="diagnostics_probe").click().run()
    assert not at.exception, at.exception
    matrix = at.dataframe[0].value
    assert list(matrix.index) == ["brain", "testimonios"]
    assert matrix["probe"].to_list() == [FAIL, FAIL]
    assert "none proven reachable" in texts(at.warning)
    box = details(at, "brain", "probe")
    assert "does not exist" in texts(box.markdown) and CALLER_SA in texts(box.markdown)
    assert f"gcloud iam service-accounts create {CALLER_SA.split('@')[0]}" in texts(box.code)
    lines = [x for x in audit_lines(capsys.readouterr().out) if x["action"] == "probe"]
    assert [(x["principal"], x["workers"]) for x in lines] == [
        (f"user:{OPERATOR}", ["brain", "testimonios"])]
    at.button(key="diagnostics_rerun").click().run()  # a re-run does not probe again
    assert "probe" not in at.dataframe[0].value.columns


def test_a_429_on_the_queues_page_links_to_the_capacity_check(dash: Dash):
    slow_retries(dash, "brain")  # the failed task stays, to be explained
    dash.receiver.respond("/process", [429])
    task = add_task(dash, "brain", "crowded", in_s=0)
    wait_until(lambda: dash.client.get_task(name=task).response_count >= 1, timeout=10,
               what="the first attempt was answered 429")
    at = queue_page(dash, "brain", task=task)
    assert "overloaded or scaling (429)" in texts(at.error)
    link = next(p for p in at.page_link if "Diagnostics" in p.label)
    assert link.proto.query_string == "check=capacity"

    at = page(dash, check="capacity")  # where the link leads: the capacity check, focused
    assert "capacity" in at.dataframe[0].value.columns
    assert "Linked check: **The queue cannot push more" in texts(at.info)
    assert "No check is called" not in texts(at.warning)


def test_a_fix_google_refuses_is_an_error_naming_the_role_not_a_traceback(
        dash: Dash, monkeypatch, tmp_path, capsys):
    # A project where the platform engineer the dashboard applies setup as (EMULATOR_OPERATOR)
    # may read the queues but not create one.
    reader = "user:reader@test-project.test"
    em = start_emulator(tmp_path, f"""
[iam]
enforce = true
principal = "serviceAccount:{LOCAL_PRINCIPAL}"

[[iam.bindings]]
role = "roles/cloudtasks.viewer"
members = ["serviceAccount:{LOCAL_PRINCIPAL}", "{reader}"]
""")
    try:
        monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", em.target)
        monkeypatch.setenv("EMULATOR_OPERATOR", reader)
        at = page(dash)  # none of the queues exists on this emulator
        assert cell(at, "brain", "queue") == FAIL
        at.button(key="fix:brain:queue").click().run()
        capsys.readouterr()
        at.button(key="fix_apply:brain:queue").click().run()
        assert not at.exception, at.exception
        refusal = texts(at.error)
        assert "cloudtasks.queues.create" in refusal and "roles/cloudtasks.admin" in refusal
        assert not at.success
        assert cell(at, "brain", "queue") == FAIL  # nothing changed
    finally:
        em.stop()
    lines = [x for x in audit_lines(capsys.readouterr().out) if x["action"] == "setup_apply"]
    assert [(x["outcome"], x["fix"]) for x in lines] == [("failed", "queue")]
