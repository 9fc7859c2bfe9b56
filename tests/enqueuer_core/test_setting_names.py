"""A fix names the setting that really holds the value: the built-in workers' variables
(``AUD_TESTI``), a workers file's field for the workers (and fields) it sets; and a
Diagnostics link's cause names the checks that confirm it."""

from __future__ import annotations

from pathlib import Path

from enqueuer_core.config import load_settings
from enqueuer_core.diagnose.links import CAUSES, focused_checks, known_checks
from enqueuer_core.explain import explain_failure
from enqueuer_core.setting_names import setting_name
from enqueuer_core.workers import load_registry

WORKERS_FILE = """
[workers.brain]
url = "https://brain-abc123-uc.a.run.app/process"

[workers.resumenes]
url = "https://resumenes-abc123-uc.a.run.app/summarize"
deadline_s = 300
"""


def settings(tmp_path: Path | None = None):
    extra = {}
    if tmp_path is not None:
        (tmp_path / "workers.toml").write_text(WORKERS_FILE)
        extra["workers_file"] = tmp_path / "workers.toml"
    return load_settings(lenient=True, project_id="p", tasks_region="us-central1",
                         caller_sa="c@p.iam.gserviceaccount.com",
                         url_testi="https://testimonios-abc-uc.a.run.app/generate-testimony",
                         url_brain="https://brain-env-uc.a.run.app/process",
                         url_trans="https://trans-abc-uc.a.run.app/api/transcribe", **extra)


def test_built_in_workers_name_their_variables():
    s = settings()
    testimonios = load_registry(s).get("testimonios")
    assert str(setting_name(testimonios, "audience", s)) == "AUD_TESTI"
    assert setting_name("transcripciones", "deadline_s").assign(880) == "DEADLINE_TRANS_S=880"
    e = explain_failure("401", None, testimonios, settings=s)
    assert e.fix.startswith("Set AUD_TESTI to https://testimonios-abc-uc.a.run.app ")
    assert "Set URL_TESTI to" in explain_failure("404", None, testimonios).fix


def test_workers_from_the_file_name_its_fields(tmp_path):
    s = settings(tmp_path)
    registry = load_registry(s)
    resumenes, brain = registry.get("resumenes"), registry.get("brain")
    assert (str(setting_name(resumenes, "url", s))
            == "url in [workers.resumenes] of the workers file")
    assert (setting_name(resumenes, "deadline_s", s).assign(300)
            == "deadline_s = 300 in [workers.resumenes] of the workers file")
    # The file sets brain's URL, so its audience (derived from that URL) is the file's too;
    # its deadline still comes from the environment.
    assert (str(setting_name(brain, "audience", s))
            == "audience in [workers.brain] of the workers file")
    assert str(setting_name(brain, "deadline_s", s)) == "DEADLINE_BRAIN_S"
    e = explain_failure("404", None, resumenes, settings=s)
    assert "Set url in [workers.resumenes] of the workers file to" in e.fix
    assert "URL_" not in e.fix
    assert "DEADLINE_BRAIN_S" in explain_failure("504", None, brain, settings=s).fix


def test_a_cause_focuses_the_checks_that_confirm_it():
    known = set(known_checks())
    assert focused_checks("deadline") == ("deadline", "deadline_vs_timeout")
    assert focused_checks("invoker")[0] == "invoker"
    assert focused_checks("queue") == ("queue",)  # a check's own id
    assert focused_checks("nonsense") == () and focused_checks(None) == ()
    # A 429 links with check=capacity; a queue's http_target can cause a 401, 403 or 404.
    assert focused_checks("capacity") == ("capacity",)
    assert focused_checks("audience") == ("audience", "audience_accepted", "queue_target")
    assert all(c in known for cause in CAUSES for c in focused_checks(cause))
