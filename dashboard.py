"""Enqueuer's dashboard: `streamlit run dashboard.py` (the local stack serves it on 8501).

The entry is the gate and the router. Before any page runs it knows the visitor
(``DASHBOARD_AUTH``: ``oidc`` logs in with st.login, ``iap`` verifies IAP's signed header,
``none`` lets everyone in as allUsers under a red banner) and asks the access config whether
they may read at all; a visitor who is not logged in, not let in by IAP, or without a role
sees why and what to do, and no page. Then the sidebar shows who they are and their role,
and st.navigation runs the page, which acts as ``common.acting()``.

Each page is addressed by its file (`pages/queues.py`, for st.page_link and
AppTest.switch_page) and by its URL path (`/queues?queue=...&task=...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import streamlit as st
from streamlit.errors import StreamlitAuthError
from streamlit.navigation.page import StreamlitPage

from enqueuer_core.access import ALL_USERS, AccessPolicy, Action
from enqueuer_core.access.visitors import LoginNeeded, Visitor
from enqueuer_core.config import Settings
from enqueuer_core.errors import ConfigError, EnqueuerError, Forbidden
from pages import common

# What st.login needs under [auth] in .streamlit/secrets.toml (one provider, the default).
AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret",
             "server_metadata_url")
AUTH_EXAMPLE = """[auth]
redirect_uri = "https://DASHBOARD-URL/oauth2callback"
cookie_secret = "a long random string"   # python -c 'import secrets; print(secrets.token_hex(32))'
client_id = "NUMBER-xxxx.apps.googleusercontent.com"
client_secret = "GOCSPX-xxxx"
server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration\""""

st.set_page_config(page_title="Enqueuer", layout="wide", page_icon=":material/send:")

PAGES = [
    st.Page(common.OVERVIEW, title="Overview", icon=":material/dashboard:",
            url_path="overview", default=True),
    st.Page(common.ENQUEUE, title="Enqueue", icon=":material/send:", url_path="enqueue"),
    st.Page(common.QUEUES, title="Queues", icon=":material/view_list:", url_path="queues"),
    st.Page(common.DEAD_LETTERS, title="Dead letters", icon=":material/report:",
            url_path="dead-letters"),
    st.Page(common.ACTIVITY, title="Activity", icon=":material/history:", url_path="activity"),
    st.Page(common.DIAGNOSTICS, title="Diagnostics", icon=":material/stethoscope:",
            url_path="diagnostics"),
]


def shut(show: EnqueuerError | None = None) -> NoReturn:
    """End the run with no page (and none in the sidebar), after ``show``'s error."""
    navigate(None)
    if show is not None:
        common.show_error(show)
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises


def navigate(who: Visitor | None) -> StreamlitPage:
    """st.navigation, before anything is drawn; its pages in the sidebar only for a visitor
    let in. Always called, hidden too: without it Streamlit would serve pages/ on its own,
    and in a fresh process a widget drawn before it would lose its first click."""
    common.let_in(who)
    return st.navigation(PAGES, position="sidebar" if who else "hidden")


def missing_auth_keys() -> list[str]:
    """What st.login still needs under ``[auth]`` in the secrets."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets file at all
        section = None
    if not isinstance(section, Mapping):
        return list(AUTH_KEYS)
    return [k for k in AUTH_KEYS if k not in section]


def login_page() -> None:
    st.title("Enqueuer")
    st.markdown("Log in to see the queues and act on them. What you may do comes from your "
                "role in Enqueuer's access config: viewer, operator or admin.")
    missing = missing_auth_keys()
    if missing:
        st.error(
            "**The login is not configured** (DASHBOARD_AUTH=oidc): st.login needs "
            f"{', '.join(f'`{k}`' for k in missing)} under `[auth]` in "
            "`.streamlit/secrets.toml` (or the file `--secrets.files` names). With Google as "
            "the identity provider, create an OAuth client (type Web application) whose "
            "authorized redirect URI is the dashboard's address + `/oauth2callback`, then "
            "write:", icon=":material/settings:")
        st.code(AUTH_EXAMPLE, language="toml")
        st.caption("Then restart the dashboard. Or put IAP in front of it: DASHBOARD_AUTH=iap "
                   "with IAP_AUDIENCE.")
        return
    if st.button("Log in", key="login", type="primary", icon=":material/login:"):
        try:
            st.login()
        except StreamlitAuthError as e:
            st.error(f"The login could not start: {e}", icon=":material/error:")


def identity(who: Visitor, policy: AccessPolicy) -> None:
    """The sidebar: who the visitor is, their role, and how to log out."""
    role = policy.role_of(who.member)
    workers = policy.enqueues_to(who.member)
    what = role.label if role else (f"enqueuer of {', '.join(workers)}" if workers
                                     else "no role")
    with st.sidebar:
        st.markdown(f":material/account_circle: **{who.shown}**")
        st.caption(f"Role: **{what}**")
        if who.auth == "oidc" and st.button("Log out", key="logout", icon=":material/logout:"):
            st.logout()
        elif who.auth == "iap":
            # IAP's own address that ends its session (it is served by IAP, not the app).
            st.markdown("[Log out](/_gcp_iap/clear_login_cookie)")


def no_login_banner(policy: AccessPolicy) -> None:
    role = policy.role_of(ALL_USERS)
    st.error(f"**No login** (DASHBOARD_AUTH=none): every visitor acts as {ALL_USERS}, role "
             f"**{role.label if role else 'none'}**. Set DASHBOARD_AUTH=oidc (st.login) or "
             "iap (behind Identity-Aware Proxy) to know who acts.", icon=":material/lock_open:")


def no_role(who: Visitor, refusal: Forbidden) -> None:
    st.title("Enqueuer")
    st.warning(f"You are **{who.shown}** (`{who.member}`), and you may not see Enqueuer's "
               "pages.", icon=":material/lock:")
    st.markdown(refusal.message)
    st.code(f'[access]\n"{who.member}" = "{Action.READ.needs.label}"', language="toml")


def gate() -> None:
    """Run the page for a visitor who may read; anyone else sees why, and no page."""
    try:
        settings, policy, config_error = common.gate_config()
        settings.check_dashboard_auth()
    except ConfigError as e:
        shut(e)
    who: Visitor | None = None
    turned_away: EnqueuerError | None = None
    try:
        who = common.who_visits(settings)
    except LoginNeeded:
        pass
    except EnqueuerError as e:  # IAP refused, no email, IAP's keys unreachable
        turned_away = e
    if who is None:
        navigate(None)
        not_let_in(settings, turned_away)
        st.stop()
    try:
        policy.decide(who.member, Action.READ)
        refusal = None
    except Forbidden as e:
        refusal = e
    navigation = navigate(None if refusal else who)
    identity(who, policy)
    if who.auth == "none":
        no_login_banner(policy)
    if refusal:
        no_role(who, refusal)
        st.stop()
    # Settings that cannot work stop every page with the error and its fix, except
    # Diagnostics, which reads them leniently to report each as a failed check.
    if config_error is not None and navigation.url_path != "diagnostics":
        common.stop_with(config_error)
    navigation.run()


def not_let_in(settings: Settings, why: EnqueuerError | None) -> None:
    if why is None:
        login_page()
        return
    st.title("Enqueuer")
    st.error(f"**You are not let in.** {why.message}\n\n`{why.code}`", icon=":material/lock:")
    if settings.dashboard_auth == "oidc" and st.button("Log out", key="logout",
                                                       icon=":material/logout:"):
        st.logout()


gate()
