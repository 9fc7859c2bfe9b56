"""Who visits the dashboard: IAP assertions from the emulator (signed with the keys it
publishes where Google publishes IAP's), st.login's user, and no login at all."""

from __future__ import annotations

import pytest

from enqueuer_core.access import iap
from enqueuer_core.access.policy import ALL_USERS
from enqueuer_core.access.visitors import LoginNeeded, Visitor, visitor
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.errors import ConfigError, Unauthenticated
from tests.emulator.harness import RunningEmulator
from tests.tokens import iap_assertion

AUD = "/projects/123456789/locations/us-central1/services/enqueuer-dashboard"
ANA = "ana@example.com"


def settings(em: RunningEmulator, auth: str, **more: object) -> Settings:
    return load_settings(cloud_tasks_emulator_host=em.target, emulator_http_url=em.http_url,
                         dashboard_auth=auth, workers_file=None, **more)


@pytest.fixture(scope="module")
def behind_iap(emulator: RunningEmulator) -> Settings:
    return settings(emulator, "iap", iap_audience=AUD)


def assertion(em: RunningEmulator, email: str = ANA, audience: str = AUD, **claims) -> str:
    return iap_assertion(em.http_url, email, audience, **claims)


def refused(s: Settings, headers: dict[str, str]) -> str:
    with pytest.raises(Unauthenticated) as e:
        visitor(s, {}, headers)
    assert e.value.http_status == 401
    return e.value.message


# -- iap ------------------------------------------------------------------------------------


def test_a_valid_iap_assertion_is_its_user(emulator, behind_iap):
    who = visitor(behind_iap, {}, {iap.ASSERTION_HEADER: assertion(emulator)})
    assert who == Visitor(f"user:{ANA}", "iap", ANA)
    # Headers as a browser's request has them: any case, as (name, value) pairs.
    pairs = [("X-Goog-Iap-Jwt-Assertion", assertion(emulator, "ops@example.com"))]
    assert visitor(behind_iap, {}, pairs).member == "user:ops@example.com"


def test_a_service_account_behind_iap_is_a_service_account_member(emulator, behind_iap):
    email = "intake@acme.iam.gserviceaccount.com"
    who = visitor(behind_iap, {}, {iap.ASSERTION_HEADER: assertion(emulator, email)})
    assert who.member == f"serviceAccount:{email}"


def test_an_assertion_for_another_audience_is_refused_naming_both(emulator, behind_iap):
    other = "/projects/123456789/global/backendServices/42"
    message = refused(behind_iap, {iap.ASSERTION_HEADER: assertion(emulator, audience=other)})
    assert other in message and f"IAP_AUDIENCE={AUD!r}" in message


def test_an_assertion_not_issued_by_iap_is_refused(emulator, behind_iap):
    forged = assertion(emulator, issuer="https://accounts.google.com")
    message = refused(behind_iap, {iap.ASSERTION_HEADER: forged})
    assert "not by IAP (https://cloud.google.com/iap)" in message


def test_an_expired_assertion_is_refused_saying_when_it_expired(emulator, behind_iap):
    stale = assertion(emulator, expires_in_s=-120)
    message = refused(behind_iap, {iap.ASSERTION_HEADER: stale})
    assert "expired at" in message and "Reload the page" in message
    assert stale not in message  # never echoed back


def test_no_assertion_is_refused_with_what_to_do(behind_iap):
    message = refused(behind_iap, {"host": "dashboard.example.com"})
    assert "x-goog-iap-jwt-assertion" in message and "DASHBOARD_AUTH=oidc" in message


def test_the_plain_email_header_is_never_trusted(emulator, behind_iap):
    forged = {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{ANA}",
              "X-Goog-Authenticated-User-Id": "accounts.google.com:1234"}
    refused(behind_iap, forged)
    # Beside a valid assertion, the assertion's user wins, whatever the plain header says.
    real = {iap.ASSERTION_HEADER: assertion(emulator, "viewer@example.com"),
            "X-Goog-Authenticated-User-Email": "accounts.google.com:admin@example.com"}
    assert visitor(behind_iap, {}, real).member == "user:viewer@example.com"


def test_an_assertion_altered_after_signing_is_refused(emulator, behind_iap):
    header, _, signature = assertion(emulator).split(".")
    other_payload = assertion(emulator, "admin@example.com").split(".")[1]
    message = refused(behind_iap, {iap.ASSERTION_HEADER: f"{header}.{other_payload}.{signature}"})
    assert "signature does not verify" in message
    assert "is not a JWT" in refused(behind_iap, {iap.ASSERTION_HEADER: "not-a-jwt"})


def test_a_token_of_another_algorithm_is_refused(emulator, behind_iap):
    from tests.tokens import id_token

    # A Google ID token (RS256, from the emulator's OIDC issuer) is not an IAP assertion.
    rs256 = id_token(emulator.http_url, ANA, "https://dashboard.example.com")
    assert "ES256 only" in refused(behind_iap, {iap.ASSERTION_HEADER: rs256})


def test_iap_without_its_audience_is_a_configuration_error(emulator):
    s = settings(emulator, "iap")
    with pytest.raises(ConfigError, match="set IAP_AUDIENCE"):
        s.check_dashboard_auth()
    with pytest.raises(ConfigError, match="set IAP_AUDIENCE"):
        visitor(s, {}, {iap.ASSERTION_HEADER: assertion(emulator)})


# -- oidc (st.login) ------------------------------------------------------------------------


def test_oidc_the_logged_in_users_email(emulator):
    s = settings(emulator, "oidc")
    user = {"is_logged_in": True, "email": ANA, "email_verified": True, "name": "Ana"}
    assert visitor(s, user, {}) == Visitor(f"user:{ANA}", "oidc", ANA, "Ana")


def test_oidc_nobody_logged_in_asks_to_log_in_and_ignores_headers(emulator):
    s = settings(emulator, "oidc")
    for user in ({}, {"is_logged_in": False}, {"email": ANA}):  # AppTest's default: no flag
        with pytest.raises(LoginNeeded):
            visitor(s, user, {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{ANA}",
                              iap.ASSERTION_HEADER: assertion(emulator)})


def test_oidc_without_a_verified_email_is_refused(emulator):
    s = settings(emulator, "oidc")
    with pytest.raises(Unauthenticated, match="without an email"):
        visitor(s, {"is_logged_in": True, "sub": "123"}, {})
    with pytest.raises(Unauthenticated, match="not verified"):
        visitor(s, {"is_logged_in": True, "email": ANA, "email_verified": False}, {})


# -- none -----------------------------------------------------------------------------------


def test_no_login_makes_every_visitor_all_users_whatever_they_send(emulator):
    s = settings(emulator, "none")
    headers = {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{ANA}",
               iap.ASSERTION_HEADER: assertion(emulator)}
    assert visitor(s, {"is_logged_in": True, "email": ANA}, headers) == Visitor(ALL_USERS,
                                                                                 "none")
