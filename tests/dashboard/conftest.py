"""AppTest against the real emulator: the dashboard reads its settings from the
environment, so each test sets it (its own queues, a receiver as every worker) before
``AppTest.from_file("dashboard.py")``, and starts from empty Streamlit caches (the cached
Enqueuer would otherwise keep the previous test's settings).

The dashboard logs its users in with st.login (``DASHBOARD_AUTH=oidc``); AppTest stands in
for the login with ``at.user``. Tests act as the local stack's admin unless they say whom
(``dash.app(page, user=VIEWER)``): the emulator's access config is ``LOCAL_USERS``.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from google.cloud import tasks_v2
from streamlit.testing.v1 import AppTest

from tests.emulator.harness import PARENT, RunningEmulator, fast_retry
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = str(ROOT / "dashboard.py")
CALLER_SA = "caller@test-project.iam.gserviceaccount.com"
PATHS = {"brain": "/process", "testimonios": "/generate-testimony",
         "transcripciones": "/api/transcribe"}
SHORT = {"brain": "BRAIN", "testimonios": "TESTI", "transcripciones": "TRANS"}
BRAIN_PAYLOAD = {"system_instructions_doc_id": "doc-sys", "base_prompt_doc_id": "doc-prompt",
                 "input_doc_id": "doc-in", "output_doc_id": "doc-out"}
TIMEOUT_S = 20  # one script run: far more than it takes, reached only on a hang
ADMIN, OPERATOR, VIEWER = ("admin@local-project.test", "operator@local-project.test",
                           "viewer@local-project.test")
_ids = itertools.count()


def logged_in(email: str | None) -> dict[str, Any]:
    """``at.user`` for a visitor logged in with st.login as ``email`` (None: logged out)."""
    if email is None:
        return {"is_logged_in": False}
    return {"is_logged_in": True, "email": email, "email_verified": True}


def audit_lines(out: str) -> list[dict[str, Any]]:
    """The audit lines among what was written to stdout (capsys' ``out``)."""
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return [x["audit"] for x in lines if "audit" in x]


@dataclass
class Dash:
    client: tasks_v2.CloudTasksClient
    receiver: Receiver
    queues: dict[str, str]  # service -> full queue name

    def app(self, page: str | None = None, user: str | None = ADMIN, **query: str) -> AppTest:
        """The dashboard as ``user`` (None: logged out), run once, then on ``page``
        (``pages/queues.py``) with ``query``."""
        at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
        at.user = logged_in(user)
        at.run()
        if page:
            at.switch_page(page)
            at.query_params.update(query)
            at.run()
        return at

    def tasks(self, service: str) -> list[tasks_v2.Task]:
        """The queue's tasks, bodies included (the FULL view)."""
        return list(self.client.list_tasks(request=tasks_v2.ListTasksRequest(
            parent=self.queues[service], response_view=tasks_v2.Task.View.FULL)))

    def state(self, service: str) -> str:
        return tasks_v2.Queue.State(self.client.get_queue(name=self.queues[service]).state).name


@pytest.fixture(autouse=True)
def empty_streamlit_caches() -> Iterator[None]:
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def make_dash(emulator: RunningEmulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
              paused: bool) -> Dash:
    client = emulator.client()
    run = f"d{next(_ids)}{uuid.uuid4().hex[:6]}"
    queues = {}
    for service, short in SHORT.items():
        name = f"{PARENT}/queues/{run}-{service}"
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name,
                                                                retry_config=fast_retry()))
        if paused:
            client.pause_queue(name=name)
        queues[service] = name
        monkeypatch.setenv(f"QUEUE_{short}", name.rsplit("/", 1)[1])
        monkeypatch.setenv(f"URL_{short}", receiver.url + PATHS[service])
        for var in (f"AUD_{short}", f"DEADLINE_{short}_S"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", emulator.target)
    monkeypatch.setenv("PROJECT_ID", "test-project")
    monkeypatch.setenv("TASKS_REGION", "us-central1")
    monkeypatch.setenv("CALLER_SA", CALLER_SA)
    monkeypatch.delenv("WORKERS_FILE", raising=False)
    monkeypatch.delenv("ENQUEUER_API_URL", raising=False)
    monkeypatch.setenv("DASHBOARD_AUTH", "oidc")
    for var in ("IAP_AUDIENCE", "EMULATOR_HTTP_URL"):
        monkeypatch.delenv(var, raising=False)
    return Dash(client, receiver, queues)


@pytest.fixture
def dash(emulator, receiver, monkeypatch) -> Dash:
    """The dashboard's environment over running queues: what they get reaches ``receiver``."""
    return make_dash(emulator, receiver, monkeypatch, paused=False)


@pytest.fixture
def idle_dash(emulator, receiver, monkeypatch) -> Dash:
    """The same over paused queues: what is enqueued stays there to be seen."""
    return make_dash(emulator, receiver, monkeypatch, paused=True)
