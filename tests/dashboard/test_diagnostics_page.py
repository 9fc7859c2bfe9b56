"""The Diagnostics page: diagnose's checks as a matrix over the emulator's queues.

The session emulator serves no Cloud Run services, so the Cloud Run and IAM checks are not
passing here: these tests assert on the configuration and queue checks, which it can answer.
"""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import Dash

DIAGNOSTICS = "pages/diagnostics.py"
WORKERS = ["brain", "testimonios", "transcripciones"]
LOCAL_CHECKS = ["caller_sa", "url_scheme", "audience", "deadline", "queue"]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def page(dash: Dash, **query: str) -> AppTest:
    at = dash.app(DIAGNOSTICS, **query)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)  # diagnose ran; failed checks are not st.error
    return at


def cell(at: AppTest, worker: str, check: str) -> str:
    return at.dataframe[0].value.loc[worker, check]


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
        assert [cell(at, worker, c) for c in LOCAL_CHECKS] == ["✅"] * len(LOCAL_CHECKS)
    assert "Worst:" in texts(at.markdown)
    assert at.dataframe[0].value.isin(["✅", "⚠️", "❌", "❔"]).all().all()


def test_another_audience_warns_with_its_fix_and_the_link_opens_it(dash: Dash, monkeypatch):
    # Not the URL's base: it works only as one of the service's custom audiences.
    monkeypatch.setenv("AUD_TESTI", "https://elsewhere.example.com")
    at = page(dash, check="audience")
    assert cell(at, "testimonios", "audience") == "⚠️"
    assert cell(at, "brain", "audience") == "✅"
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
    assert cell(at, "brain", "audience") == "❌"
    box = details(at, "brain", "audience")
    assert box.proto.expanded  # a failure is open
    assert "has a path" in texts(box.markdown)
    assert f"AUD_BRAIN={dash.receiver.url}" in texts(box.code)


def test_a_paused_queue_warns_then_passes_after_resume_and_re_run(dash: Dash):
    dash.client.pause_queue(name=dash.queues["transcripciones"])
    at = page(dash, check="queue")
    assert cell(at, "transcripciones", "queue") == "⚠️"
    fix = texts(details(at, "transcripciones", "queue").code)
    assert "resume" in fix and dash.queues["transcripciones"].rsplit("/", 1)[1] in fix

    dash.client.resume_queue(name=dash.queues["transcripciones"])
    at.button(key="diagnostics_rerun").click().run()
    assert not at.exception, at.exception
    assert cell(at, "transcripciones", "queue") == "✅"


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
