"""Settings: the original defaults, and start-up refusals that say what to set."""

from __future__ import annotations

import pytest

from enqueuer_core.config import load_settings
from enqueuer_core.errors import ConfigError

GOOGLE = {
    "project_id": "acme", "tasks_region": "europe-west1",
    "caller_sa": "caller@acme.iam.gserviceaccount.com",
    "url_brain": "https://brain-abc-ew.a.run.app/process",
    "url_testi": "https://testi-abc-ew.a.run.app/generate-testimony",
    "url_trans": "https://trans-abc-ew.a.run.app/api/transcribe",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("PROJECT_ID", "TASKS_REGION", "CALLER_SA", "CLOUD_TASKS_EMULATOR_HOST",
                 "WORKERS_FILE", "URL_BRAIN", "URL_TESTI", "URL_TRANS", "AUD_BRAIN",
                 "AUD_TESTI", "AUD_TRANS", "DEADLINE_BRAIN_S", "DEADLINE_TESTI_S",
                 "DEADLINE_TRANS_S", "QUEUE_BRAIN", "QUEUE_TESTI", "QUEUE_TRANS", "API_AUTH",
                 "API_AUDIENCE", "DASHBOARD_AUTH", "IAP_AUDIENCE", "EMULATOR_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)


def test_original_defaults():
    s = load_settings(**GOOGLE)
    assert (s.queue_brain, s.queue_testi, s.queue_trans) == (
        "queue-brain", "queue-testimonios", "queue-transcripciones")
    assert (s.deadline_brain_s, s.deadline_testi_s, s.deadline_trans_s) == (700, 390, 880)
    assert s.aud_brain == "https://brain-abc-ew.a.run.app"  # scheme + host of the URL
    assert s.queue_path("queue-brain") == (
        "projects/acme/locations/europe-west1/queues/queue-brain")


def test_environment_names_of_the_original_service(monkeypatch):
    for k, v in GOOGLE.items():
        monkeypatch.setenv(k.upper(), v)
    monkeypatch.setenv("DEADLINE_BRAIN_S", "120")
    monkeypatch.setenv("AUD_TESTI", "https://custom.example.com")
    monkeypatch.setenv("QUEUE_TRANS", "q-trans")
    s = load_settings()
    assert s.deadline_brain_s == 120 and s.aud_testi == "https://custom.example.com"
    assert s.queue_trans == "q-trans"


@pytest.mark.parametrize("audience", ["https://x.run.app/process", "https://x.run.app/",
                                      "https://x.run.app?a=1"])
def test_audience_must_be_the_base_url(audience):
    with pytest.raises(ConfigError) as e:
        load_settings(**GOOGLE, aud_brain=audience)
    assert "AUD_BRAIN" in e.value.message and "'https://x.run.app'" in e.value.message


@pytest.mark.parametrize("deadline", [14, 1801])
def test_deadline_within_15s_and_30min(deadline):
    with pytest.raises(ConfigError, match="DEADLINE_TESTI_S"):
        load_settings(**GOOGLE, deadline_testi_s=deadline)


def test_missing_google_settings_are_named():
    with pytest.raises(ConfigError) as e:
        load_settings(url_brain=GOOGLE["url_brain"])
    for name in ("PROJECT_ID", "TASKS_REGION", "CALLER_SA", "URL_TESTI", "URL_TRANS"):
        assert name in e.value.message
    assert "CLOUD_TASKS_EMULATOR_HOST" in e.value.message


def test_caller_must_be_an_email():
    with pytest.raises(ConfigError, match="CALLER_SA"):
        load_settings(**{**GOOGLE, "caller_sa": "caller"})


def test_on_the_emulator_nothing_is_required():
    s = load_settings(cloud_tasks_emulator_host="127.0.0.1:8123")
    assert s.on_emulator and s.project_id == "local-project"
    assert s.url_brain == "http://127.0.0.1:8081/process"
    assert s.aud_brain == "http://127.0.0.1:8081"


def test_the_deployments_accounts_default_per_project_and_are_checked(monkeypatch):
    for name in ("API_SA", "DASHBOARD_SA", "EMULATOR_OPERATOR"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings(**GOOGLE)
    assert s.api_sa == "enqueuer-api@acme.iam.gserviceaccount.com"
    assert s.dashboard_sa == "enqueuer-dashboard@acme.iam.gserviceaccount.com"
    local = load_settings(cloud_tasks_emulator_host="127.0.0.1:8123")
    assert local.api_sa == local.dashboard_sa == "enqueuer@local-project.iam.gserviceaccount.com"
    with pytest.raises(ConfigError, match="API_SA='enqueuer' must be a service account email"):
        load_settings(**GOOGLE, api_sa="enqueuer")
    with pytest.raises(ConfigError, match=r"EMULATOR_OPERATOR='ops@x\.test' must be an IAM member"):
        load_settings(cloud_tasks_emulator_host="127.0.0.1:8123", emulator_operator="ops@x.test")


def test_google_is_closed_by_default_and_says_what_the_api_and_dashboard_need():
    s = load_settings(**GOOGLE)
    assert (s.api_auth, s.dashboard_auth) == ("google", "iap")
    assert s.id_token_certs_url == "https://www.googleapis.com/oauth2/v1/certs"
    assert s.iap_keys_url == "https://www.gstatic.com/iap/verify/public_key"
    with pytest.raises(ConfigError, match=r"set API_AUDIENCE to the API's own URL .*"
                                          "API_AUTH=none instead opens the API"):
        s.check_api_auth()
    with pytest.raises(ConfigError, match=r"set IAP_AUDIENCE .*/projects/NUMBER/locations/"
                                          r"REGION/services/NAME .* or DASHBOARD_AUTH=oidc"):
        s.check_dashboard_auth()
    ready = load_settings(**GOOGLE, api_audience="https://enqueuer-api-x.a.run.app",
                          iap_audience="/projects/123/locations/europe-west1/services/d")
    ready.check_api_auth()
    ready.check_dashboard_auth()
    load_settings(**GOOGLE, api_auth="none").check_api_auth()  # open only when asked


@pytest.mark.parametrize("field, value, expected", [
    ("api_audience", "enqueuer-api", "API_AUDIENCE='enqueuer-api' is not an http"),
    ("iap_audience", "enqueuer-dashboard", "IAP_AUDIENCE='enqueuer-dashboard' is not an IAP "
                                           "audience: use /projects/NUMBER"),
    ("dashboard_auth", "password", "DASHBOARD_AUTH: Input should be 'oidc', 'iap' or 'none'"),
])
def test_auth_settings_that_cannot_work_are_refused(field, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(**GOOGLE, **{field: value})


def test_on_the_emulator_tokens_and_keys_come_from_its_http_port():
    s = load_settings(cloud_tasks_emulator_host="127.0.0.1:9123")
    assert s.emulator_http_url == "http://127.0.0.1:9124"
    assert s.id_token_certs_url == "http://127.0.0.1:9124/oauth2/v1/certs"
    assert s.iap_keys_url == "http://127.0.0.1:9124/iap/verify/public_key"
    assert (s.api_audience, s.dashboard_auth) == ("http://127.0.0.1:8080", "none")
    told = load_settings(cloud_tasks_emulator_host="127.0.0.1:9123",
                         emulator_http_url="http://127.0.0.1:7000")
    assert told.id_token_certs_url == "http://127.0.0.1:7000/oauth2/v1/certs"
