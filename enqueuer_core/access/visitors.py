"""Who is visiting the dashboard: the IAM member its login says, or why there is none.

UI-free, so that every case is tested without a browser. The dashboard passes its settings,
Streamlit's user mapping (``st.user.to_dict()``) and the request's headers
(``st.context.headers``); the answer is a ``Visitor`` whose ``member`` the access config
decides on, or ``Unauthenticated`` saying what to do:

    DASHBOARD_AUTH   the visitor                                 no visitor
    oidc             user:EMAIL of the st.login user             LoginNeeded: offer "Log in"
    iap              user:EMAIL of x-goog-iap-jwt-assertion      Unauthenticated: why not
    none             allUsers (every visitor, a red banner)      -

Never the plain ``X-Goog-Authenticated-User-Email`` header: anyone can send it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enqueuer_core.access import iap
from enqueuer_core.access.policy import ALL_USERS, member_for_email
from enqueuer_core.config import Settings
from enqueuer_core.errors import Unauthenticated


class LoginNeeded(Unauthenticated):
    """``oidc``: nobody is logged in in this browser; the dashboard offers to log in."""


@dataclass(frozen=True)
class Visitor:
    member: str  # the IAM member the access config decides on: user:..., allUsers
    auth: str  # how it is known: "oidc", "iap" or "none"
    email: str | None = None
    name: str | None = None

    @property
    def shown(self) -> str:
        """How the dashboard names the visitor: the email, else the member (allUsers)."""
        return self.email or self.member


def visitor(settings: Settings, user: Mapping[str, Any], headers: iap.Headers) -> Visitor:
    """The visitor of this request, by ``settings.dashboard_auth``.

    ``user``: Streamlit's user mapping (``is_logged_in`` and the id_token's claims);
    ``headers``: the request's headers (a mapping, or ``(name, value)`` pairs).
    """
    mode = settings.dashboard_auth
    if mode == "none":
        return Visitor(ALL_USERS, "none")
    if mode == "iap":
        if not settings.iap_audience:
            settings.check_dashboard_auth()  # ConfigError: set IAP_AUDIENCE
        claims = iap.verify_assertion(iap.assertion_in(headers), str(settings.iap_audience),
                                      settings.iap_keys_url)
        email = str(claims["email"])
        return Visitor(member_for_email(email), "iap", email)
    if mode == "oidc":
        return _logged_in(user)
    raise ValueError(f"unknown DASHBOARD_AUTH {mode!r}")  # Settings accepts no other


def _logged_in(user: Mapping[str, Any]) -> Visitor:
    if user.get("is_logged_in") is not True:
        raise LoginNeeded("Log in to see Enqueuer's queues and act on them.")
    email = user.get("email")
    if not isinstance(email, str) or not email:
        raise Unauthenticated(
            "The identity provider logged you in without an email, so Enqueuer cannot tell "
            "who you are: its id_token must carry the email claim (Google's does, for the "
            "openid email scopes that st.login asks for). Log out and log in again with an "
            "account that has an email.")
    if user.get("email_verified") is False:  # absent: the provider does not say
        raise Unauthenticated(
            f"The identity provider says the email {email} is not verified: verify it with "
            "the provider, then log out and log in again.")
    name = user.get("name")
    return Visitor(member_for_email(email), "oidc", email, name if isinstance(name, str)
                   else None)
