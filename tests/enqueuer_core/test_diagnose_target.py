"""Where a worker's tasks really go once the queue's http_target has had its say: the pure
``effective_target``, and the ``queue_target`` check against a real emulator, each broken
queue caught, then repaired by running the check's own gcloud fix against the emulator."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from emulator import http_target as emulated
from enqueuer_core import clients
from enqueuer_core.config import load_settings
from enqueuer_core.diagnose import diagnose
from enqueuer_core.diagnose.target import effective_target, override_url
from enqueuer_core.gcloud_env import gcloud_env
from enqueuer_core.workers import WorkerSpec
from tests.emulator.harness import start_emulator

PROJECT, REGION = "local-project", "us-central1"
CALLER = f"enqueuer-caller@{PROJECT}.iam.gserviceaccount.com"
OTHER = f"other@{PROJECT}.iam.gserviceaccount.com"
URL, AUD = "http://127.0.0.1:8081/process", "http://127.0.0.1:8081"
SPEC = WorkerSpec(name="brain", queue="queue-brain", url=URL, audience=AUD, deadline_s=700)
U = tasks_v2.UriOverride
IF_NOT_EXISTS = U.UriOverrideEnforceMode.IF_NOT_EXISTS


def queue(**target: object) -> tasks_v2.Queue:
    return tasks_v2.Queue(name="q", http_target=tasks_v2.HttpTarget(**target))


# -- effective_target, pure ------------------------------------------------------------------

def test_without_queue_routing_the_task_is_sent_as_built():
    for q in (None, tasks_v2.Queue(name="q")):
        t = effective_target(SPEC, CALLER, q)
        assert (t.url, t.method, t.audience, t.account, t.token, t.overrides) == (
            URL, "POST", AUD, CALLER, "oidc", ())


def test_a_uri_override_changes_the_url_and_says_how():
    t = effective_target(SPEC, CALLER, queue(uri_override={"host": "w.example", "port": 0}))
    assert t.url == "http://w.example/process"
    assert t.overrides == (f"uri_override (ALWAYS): {URL} -> http://w.example/process",)
    assert (t.audience, t.account) == (AUD, CALLER)  # the task's token is kept
    # IF_NOT_EXISTS: the worker's URL has a host, a port and a path; only a query is added.
    t = effective_target(SPEC, CALLER, queue(uri_override={
        "host": "w.example", "port": 1, "path_override": {"path": "/x"},
        "query_override": {"query_params": "a=1"}, "uri_override_enforce_mode": IF_NOT_EXISTS}))
    assert t.url == f"{URL}?a=1"


def test_the_queue_token_and_method_win():
    t = effective_target(SPEC, CALLER, queue(
        oidc_token={"service_account_email": OTHER, "audience": "https://aud.example"},
        http_method=tasks_v2.HttpMethod.GET,
        header_overrides=[{"header": {"key": "X-Tenant", "value": "t"}}]))
    assert (t.method, t.account, t.audience, t.token) == (
        "GET", OTHER, "https://aud.example", "oidc")
    assert t.overrides == (
        "http_method: POST -> GET", "header_overrides: X-Tenant",
        f"oidc_token: {CALLER} -> {OTHER}, audience {AUD} -> https://aud.example")
    # A queue token without an audience gets the URL the task is sent to (OidcToken's rule).
    t = effective_target(SPEC, CALLER, queue(oidc_token={"service_account_email": OTHER}))
    assert t.audience == URL
    t = effective_target(SPEC, CALLER, queue(oauth_token={
        "service_account_email": OTHER, "scope": "https://www.googleapis.com/auth/cloud-platform"}))
    assert (t.token, t.account, t.audience) == ("oauth", OTHER, None)


@pytest.mark.parametrize("uri", [
    {"host": "h.example"}, {"port": 0}, {"port": 9}, {"scheme": U.Scheme.HTTPS},
    {"path_override": {"path": ""}}, {"path_override": {"path": "job"}},
    {"query_override": {"query_params": "?a=1"}},
    {"port": 9, "path_override": {"path": "/j"}, "query_override": {"query_params": "b=2"},
     "uri_override_enforce_mode": IF_NOT_EXISTS},
])
@pytest.mark.parametrize("url", [URL, "https://h.example", "https://h.example/?q=1",
                                 "https://u@[::1]:8/p?q#f"])
def test_the_same_rules_as_the_emulator(url, uri):
    """Enqueuer cannot import the emulator's rules (nor the emulator Enqueuer's): the two
    copies must give the same URL."""
    pb = U.pb(U(**uri))
    assert override_url(url, pb) == emulated.override_url(url, pb)


# -- the queue_target check against the emulator ------------------------------------------------

@pytest.fixture(scope="module")
def em(tmp_path_factory):
    em = start_emulator(tmp_path_factory.mktemp("target"), '[[queues]]\nname = "queue-brain"\n',
                        project=PROJECT)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def settings(em):
    return load_settings(lenient=True, cloud_tasks_emulator_host=em.target,
                         emulator_http_url=em.http_url, project_id=PROJECT,
                         tasks_region=REGION, caller_sa=CALLER, url_brain=URL, aud_brain=AUD)


@pytest.fixture
def route(settings):
    """Set the queue's http_target through the official client; cleared after the test."""
    tasks = clients.tasks_client(settings)
    name = settings.queue_path("queue-brain")

    def set_target(**target: object) -> None:
        tasks.update_queue(queue=tasks_v2.Queue(name=name, http_target=target),
                           update_mask=field_mask_pb2.FieldMask(paths=["http_target"]))

    yield set_target
    tasks.update_queue(queue=tasks_v2.Queue(name=name),
                       update_mask=field_mask_pb2.FieldMask(paths=["http_target"]))


def check(settings):
    (result,) = [r for r in diagnose(settings, ["brain"]) if r.check == "queue_target"]
    return result


def run_fix(settings, fix: str, alternative: bool = False) -> None:
    """Run the fix's gcloud command (or the one after "or,") against the emulator."""
    first, _, other = fix.partition(" (or, to keep queue-level routing, ")
    command = other.removesuffix(")") if alternative else first
    assert command.startswith("gcloud tasks queues update queue-brain ")
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **gcloud_env(settings)})
    assert done.returncode == 0, done.stderr


def test_no_routing_passes_and_names_url_audience_and_account(settings):
    got = check(settings)
    assert got.status == "pass" and got.fix is None
    assert got.evidence == (f"no queue-level routing: tasks go to {URL} (POST) with an OIDC "
                            f"token for {CALLER}, audience {AUD}")


def test_a_uri_override_to_another_host_fails_until_cleared(settings, route):
    route(uri_override={"host": "other.example"})
    got = check(settings)
    assert got.status == "fail"
    assert "tasks go to http://other.example:8081/process (POST)" in got.evidence
    assert f"another host than the worker's {URL}" in got.evidence
    assert got.fix == (
        f"gcloud tasks queues update queue-brain --clear-http-uri-override "
        f"--location={REGION} --project={PROJECT} (or, to keep queue-level routing, gcloud "
        f"tasks queues update queue-brain --http-uri-override=scheme:http,host:127.0.0.1,"
        f"port:8081,path:/process --location={REGION} --project={PROJECT})")
    run_fix(settings, got.fix)
    got = check(settings)
    assert (got.status, got.evidence.split(":")[0]) == ("pass", "no queue-level routing")


def test_an_override_set_to_the_workers_own_url_passes(settings, route):
    route(uri_override={"port": 1})
    assert check(settings).status == "fail"
    run_fix(settings, check(settings).fix, alternative=True)
    got = check(settings)
    assert got.status == "pass"
    assert got.evidence.startswith(f"the queue's http_target changes nothing: tasks go to {URL}")


def test_a_queue_oidc_token_for_another_account_fails_until_cleared(settings, route):
    route(oidc_token={"service_account_email": OTHER, "audience": AUD})
    got = check(settings)
    assert got.status == "fail"
    assert f"an OIDC token for {OTHER}, audience {AUD}" in got.evidence
    assert f"mints the tokens for {OTHER}, not CALLER_SA {CALLER}" in got.evidence
    assert got.fix.startswith(
        "gcloud tasks queues update queue-brain --clear-http-oidc-service-account-email-override"
        f" --clear-http-oidc-token-audience-override --location={REGION} --project={PROJECT}")
    run_fix(settings, got.fix)
    assert check(settings).status == "pass"
    assert "http_target" not in clients.tasks_client(settings).get_queue(
        name=settings.queue_path("queue-brain"))


def test_another_audience_an_oauth_token_and_a_get_fail(settings, route):
    route(oidc_token={"service_account_email": CALLER, "audience": "https://elsewhere"})
    got = check(settings)
    assert got.status == "fail" and "audience https://elsewhere is not the worker's" in got.evidence
    assert f"--http-oidc-token-audience-override={AUD}" in got.fix
    route(oauth_token={"service_account_email": CALLER, "scope": "https://x.example/s"},
          http_method=tasks_v2.HttpMethod.GET)
    got = check(settings)
    assert got.status == "fail"
    assert "OAuth access token, which Cloud Run refuses (401)" in got.evidence
    assert "sends GET where the worker takes POST (and drops the body)" in got.evidence
    assert ("--clear-http-method-override --clear-http-oauth-service-account-email-override "
            "--clear-http-oauth-token-scope-override") in got.fix
    run_fix(settings, got.fix)
    assert check(settings).status == "pass"


def test_a_changed_query_warns_and_headers_pass(settings, route):
    route(uri_override={"query_override": {"query_params": "v=2"}})
    got = check(settings)
    assert got.status == "warn" and f"({URL}?v=2)" in got.evidence
    route(header_overrides=[{"header": {"key": "X-Tenant", "value": "t"}}])
    got = check(settings)
    assert got.status == "pass" and "header_overrides: X-Tenant" in got.evidence
