"""Who may do what on the dashboard: the login gate, the role in the sidebar, buttons the role
cannot use disabled with the reason, the core refusing a forced action anyway, and one audit
line per action with the visitor as principal."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import (
    ADMIN,
    BRAIN_PAYLOAD,
    DASHBOARD,
    OPERATOR,
    VIEWER,
    Dash,
    audit_lines,
    logged_in,
)
from tests.dashboard.test_enqueue_page import ENQUEUE, fill, submit, typed_key
from tests.dashboard.test_queues_page import QUEUES, add_task, queue_page, select

STRANGER = "stranger@example.com"
AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "s" * 32,
        "client_id": "enqueuer-dashboard", "client_secret": "x",
        "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def sidebar(at: AppTest) -> str:
    return texts(at.sidebar.markdown) + "\n" + texts(at.sidebar.caption)


def no_page_ran(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert [t.value for t in at.title] in ([], ["Enqueuer"])
    assert not at.dataframe and not at.metric and not at.page_link


def disabled_saying(at: AppTest, key: str, *words: str) -> None:
    button = at.button(key=key)
    assert button.disabled, key
    for word in words:
        assert word in (button.help or ""), (key, button.help)


# -- the gate -------------------------------------------------------------------------------


def test_a_logged_out_visitor_sees_the_login_page_only(dash: Dash):
    at = AppTest.from_file(DASHBOARD, default_timeout=20)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False}
    at.run()
    no_page_ran(at)
    assert at.button(key="login").label == "Log in"
    assert not at.error
    # A deep link shows the same page.
    at.switch_page(QUEUES).run()
    no_page_ran(at)
    assert at.button(key="login")


def test_without_auth_secrets_the_login_page_says_how_to_configure_it(dash: Dash):
    at = dash.app(user=None)
    no_page_ran(at)
    message = texts(at.error)
    assert "The login is not configured" in message and "`client_id`" in message
    assert "server_metadata_url" in texts(at.code) and "/oauth2callback" in texts(at.code)
    assert not any(b.key == "login" for b in at.button)


def test_a_user_without_a_role_sees_who_they_are_and_the_line_that_grants_one(dash: Dash):
    at = dash.app(user=STRANGER)
    no_page_ran(at)
    assert STRANGER in texts(at.warning)
    assert "has no role" in texts(at.markdown)
    assert f'"user:{STRANGER}" = "viewer"' in texts(at.code)
    assert STRANGER in sidebar(at) and "no role" in sidebar(at)
    assert at.sidebar.button(key="logout")  # to log in as someone else


def test_no_login_shows_the_red_banner_and_nothing_else_for_all_users(dash: Dash, monkeypatch):
    monkeypatch.setenv("DASHBOARD_AUTH", "none")
    at = dash.app(user=ADMIN)  # whoever st.user says: without login, nobody is anybody
    no_page_ran(at)
    banner = texts(at.error)
    assert "No login" in banner and "allUsers" in banner and "role **none**" in banner
    assert '"allUsers" = "viewer"' in texts(at.code)


def test_no_login_with_a_role_for_all_users_shows_the_banner_on_every_page(
        dash: Dash, monkeypatch, tmp_path):
    (tmp_path / "workers.toml").write_text('[access]\n"allUsers" = "viewer"\n')
    monkeypatch.setenv("WORKERS_FILE", str(tmp_path / "workers.toml"))
    monkeypatch.setenv("DASHBOARD_AUTH", "none")
    at = dash.app(user=None)
    for page in ("pages/overview.py", ENQUEUE, QUEUES):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert "role **viewer**" in texts(at.error), page
    assert at.title[0].value == "Queues"
    disabled_saying(at, "queue_pause", "allUsers is a viewer")


def test_a_dashboard_behind_iap_without_its_audience_says_what_to_set(dash: Dash, monkeypatch):
    monkeypatch.setenv("DASHBOARD_AUTH", "iap")
    at = dash.app()
    no_page_ran(at)
    assert "set IAP_AUDIENCE" in texts(at.error)


def test_behind_iap_a_request_without_its_assertion_runs_no_page(dash: Dash, monkeypatch):
    # AppTest sends no headers: as a request that reached the dashboard around IAP.
    monkeypatch.setenv("DASHBOARD_AUTH", "iap")
    monkeypatch.setenv("IAP_AUDIENCE", "/projects/1/locations/us-central1/services/dash")
    at = dash.app()
    no_page_ran(at)
    assert "You are not let in" in texts(at.error)
    assert "x-goog-iap-jwt-assertion" in texts(at.error)


# -- roles ----------------------------------------------------------------------------------


def test_a_viewer_reads_every_page_and_every_action_is_disabled_saying_why(idle_dash: Dash):
    add_task(idle_dash, "brain", "seen")
    at = idle_dash.app(user=VIEWER)
    assert at.title[0].value == "Overview" and not at.error
    assert VIEWER in sidebar(at) and "Role: **viewer**" in sidebar(at)

    at.switch_page(ENQUEUE).run()
    fill(at, BRAIN_PAYLOAD)
    assert "Preview of the task" in [e.label for e in at.expander]  # reading is allowed
    disabled_saying(at, "submit", f"user:{VIEWER} is a viewer", "operator role",
                    f'"user:{VIEWER}" = "operator"')
    assert "enqueuing a job needs the operator role" in texts(at.caption)

    at = queue_page(idle_dash, "brain", user=VIEWER)
    select(at, [0])
    for key in ("queue_resume", "queue_purge"):  # pause is disabled anyway: it is paused
        disabled_saying(at, key, "admin role", f'"user:{VIEWER}" = "admin"')
    assert at.button(key="queue_pause").disabled
    disabled_saying(at, "run_now", "running a task now needs the operator role")
    disabled_saying(at, "delete", "deleting a task needs the operator role")
    assert next(c for c in at.checkbox if c.key.startswith("confirm_delete:")).disabled
    assert "needs the admin role" in texts(at.caption)


def forced_by_the_viewer(task: str, queue: str) -> None:
    """A script run that does what a viewer's disabled buttons would, through the pages'
    own action functions, as the viewer: what a forged click would reach."""
    import datetime as dt

    from enqueuer_core.access.visitors import Visitor
    from enqueuer_core.build import EnqueueRequest
    from enqueuer_core.inspect import queue_snapshot
    from enqueuer_core.preview import preview_task
    from pages import common, enqueue, queues

    common.let_in(Visitor("user:viewer@local-project.test", "oidc",
                          "viewer@local-project.test"))
    viewer, enqueuer, now = common.acting(), common.enqueuer(), dt.datetime.now(dt.UTC)
    request = EnqueueRequest(service="brain", idempotency_key="forced", payload={
        "system_instructions_doc_id": "a", "base_prompt_doc_id": "b", "input_doc_id": "c",
        "output_doc_id": "d"})
    enqueue.submit(enqueuer, request, preview_task(enqueuer, request, now), now, False, viewer)
    queues.run_now([task], viewer)
    queues.delete([task], viewer)
    queues.queue_action("purge", queue_snapshot(enqueuer.client, queue), viewer)


def test_a_forced_action_by_a_viewer_is_refused_by_the_core_and_changes_nothing(
        idle_dash: Dash, capsys):
    # Streamlit itself drops a click on a disabled button, even a forged one
    # (SessionState.register_widget): what is behind each button must refuse too.
    task = add_task(idle_dash, "brain", "kept")
    queue = idle_dash.queues["brain"]
    capsys.readouterr()
    at = AppTest.from_function(forced_by_the_viewer, args=(task, queue), default_timeout=20)
    at.user = logged_in(VIEWER)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 4, errors
    for error, doing in zip(errors, ("enqueuing a job", "running a task now",
                                     "deleting a task", "purging a queue"), strict=True):
        assert f"user:{VIEWER} is a viewer; {doing} needs the" in error
        assert "`forbidden`" in error
    assert not at.success
    assert [t.name for t in idle_dash.tasks("brain")] == [task]
    assert idle_dash.state("brain") == "PAUSED"
    assert idle_dash.receiver.requests == []
    lines = audit_lines(capsys.readouterr().out)
    assert [(x["principal"], x["via"], x["action"], x["outcome"], x["error_code"])
            for x in lines] == [(f"user:{VIEWER}", "dashboard", action, "refused", "forbidden")
                                for action in ("enqueue", "run", "delete", "purge")]
    assert len({x["request_id"] for x in lines}) == 1  # one script run


def test_an_operator_enqueues_but_may_not_pause_or_purge(dash: Dash, capsys):
    at = dash.app(ENQUEUE, user=OPERATOR)
    assert "Role: **operator**" in sidebar(at)
    fill(at, BRAIN_PAYLOAD)
    typed_key(at, "by-the-operator")
    assert not at.button(key="submit").disabled
    capsys.readouterr()
    submit(at)
    assert len(at.success) == 1, texts(at.error)
    got = dash.receiver.wait_for(lambda rs: any(r.path == "/process" for r in rs))
    assert got[0].header("X-Idempotency-Key") == "by-the-operator"
    (line,) = audit_lines(capsys.readouterr().out)
    assert (line["principal"], line["role"], line["action"], line["outcome"],
            line["idempotency_key"]) == (f"user:{OPERATOR}", "operator", "enqueue", "ok",
                                         "by-the-operator")
    assert line["task"] in at.success[0].value

    at = queue_page(dash, "brain", user=OPERATOR)
    for key in ("queue_pause", "queue_purge"):
        disabled_saying(at, key, f"user:{OPERATOR} is an operator", "admin role")


def test_an_operator_outside_a_workers_enqueuers_may_not_enqueue_to_it(
        dash: Dash, monkeypatch, tmp_path):
    (tmp_path / "workers.toml").write_text(
        f'[workers.brain]\nenqueuers = ["user:{ADMIN}"]\n')
    monkeypatch.setenv("WORKERS_FILE", str(tmp_path / "workers.toml"))
    at = dash.app(ENQUEUE, user=OPERATOR)
    disabled_saying(at, "submit", "only the enqueuers listed for brain",
                    f'enqueuers = ["user:{ADMIN}", "user:{OPERATOR}"]')
    at.selectbox(key="worker").set_value("testimonios").run()
    assert not at.button(key="submit").disabled  # the others take the operator's jobs


def test_an_admin_purges_and_the_audit_line_names_them(idle_dash: Dash, capsys):
    for i in range(2):
        add_task(idle_dash, "testimonios", f"purged-{i}")
    at = queue_page(idle_dash, "testimonios", user=ADMIN)
    assert "Role: **admin**" in sidebar(at)
    at.button(key="queue_purge").click().run()
    at.checkbox(key="confirm_queue_action:purge").check().run()
    capsys.readouterr()
    at.button(key="do_queue_action").click().run()
    assert not at.exception, at.exception
    assert "Purged queue" in texts(at.success)
    assert idle_dash.tasks("testimonios") == []
    (line,) = audit_lines(capsys.readouterr().out)
    assert (line["principal"], line["role"], line["via"], line["action"], line["target"],
            line["outcome"]) == (f"user:{ADMIN}", "admin", "dashboard", "purge",
                                 idle_dash.queues["testimonios"], "ok")


def test_each_script_run_acts_with_its_own_request_id(idle_dash: Dash, capsys):
    at = queue_page(idle_dash, "brain", user=ADMIN)
    capsys.readouterr()
    for action in ("resume", "pause"):
        at.button(key=f"queue_{action}").click().run()
        at.checkbox(key=f"confirm_queue_action:{action}").check().run()
        at.button(key="do_queue_action").click().run()
    lines = audit_lines(capsys.readouterr().out)
    assert [x["action"] for x in lines] == ["resume", "pause"]
    assert len({x["request_id"] for x in lines}) == 2
