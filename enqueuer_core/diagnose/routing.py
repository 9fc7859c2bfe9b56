"""The ``queue_target`` check: does the queue's ``http_target`` (queue-level routing) leave
the worker's URL and token alone?

A queue-level override is silent: every task still shows the URL and token it was created
with (``gcloud tasks describe``, the Queues page), while Cloud Tasks sends it elsewhere, with
another token, also tasks created before the override was set. So the evidence always names
what is actually sent (``target.effective_target``), and the check fails when that is not the
worker: another scheme, host, port or path; a method other than the POST the worker serves;
a token for another account than ``CALLER_SA`` (the one the worker's ``roles/run.invoker``
binding lets in) or for another audience; or an OAuth access token, which Cloud Run refuses
(it accepts ID tokens only). The fix is the ``gcloud tasks queues update`` that clears the
override (flags as gcloud 528 spells them), or the one that sets it to the worker's values.
"""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from enqueuer_core.diagnose.gather import Diagnosis
from enqueuer_core.diagnose.result import Status
from enqueuer_core.diagnose.target import EffectiveTarget
from enqueuer_core.workers import WorkerSpec

Verdict = tuple[Status, str, str | None]
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def queue_target(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    got = d.queues[spec.queue]
    if got.missing is not None:
        return "unknown", "needs: queue", None
    if got.error:
        return "unknown", got.error, None
    t = d.target(spec)
    sent = _sent(t)
    if not t.overrides:
        had = "http_target" in got.value
        return "pass", (f"the queue's http_target changes nothing: {sent}" if had
                        else f"no queue-level routing: {sent}"), None
    failures: list[str] = []
    warnings: list[str] = []
    clear: list[str] = []
    keep: list[str] = []
    where = _where(t.url, spec.url)
    if where == "query":
        warnings.append(f"its uri_override changes the query the worker gets ({t.url})")
        clear.append("--clear-http-uri-override")
    elif where:
        failures.append(f"its uri_override sends them to another {where} than the worker's "
                        f"{spec.url}")
        clear.append("--clear-http-uri-override")
        keep.append(f"--http-uri-override={_uri_flag(spec.url)}")
    if t.method != "POST":
        failures.append(f"its http_method sends {t.method} where the worker takes POST"
                        + (" (and drops the body)" if t.method not in ("PUT", "PATCH") else ""))
        clear.append("--clear-http-method-override")
        keep.append("--http-method-override=POST")
    caller = d.s.caller_sa or "CALLER_SA"
    if t.token == "oauth":
        failures.append("its oauth_token replaces the OIDC token with an OAuth access token, "
                        "which Cloud Run refuses (401): it accepts ID tokens only")
        clear += ["--clear-http-oauth-service-account-email-override",
                  "--clear-http-oauth-token-scope-override"]
        keep += [f"--http-oidc-service-account-email-override={caller}",
                 f"--http-oidc-token-audience-override={spec.audience}"]
    elif t.token == "oidc" and any(o.startswith("oidc_token:") for o in t.overrides):
        wrong_account = (t.account or "").lower() != caller.lower()
        if wrong_account:
            failures.append(f"its oidc_token mints the tokens for {t.account}, not CALLER_SA "
                            f"{caller}: the worker's service may not let that account in (403)")
        if t.audience != spec.audience:
            failures.append(f"its oidc_token's audience {t.audience} is not the worker's "
                            f"{spec.audience}: Cloud Run answers 401")
        if wrong_account or t.audience != spec.audience:
            clear += ["--clear-http-oidc-service-account-email-override",
                      "--clear-http-oidc-token-audience-override"]
            keep += [f"--http-oidc-service-account-email-override={caller}",
                     f"--http-oidc-token-audience-override={spec.audience}"]
    evidence = f"{sent}; the queue overrides {'; '.join(t.overrides)}"
    if not failures and not warnings:
        return "pass", evidence, None
    status: Status = "fail" if failures else "warn"
    evidence += ": " + "; ".join(failures + warnings)
    return status, evidence, _fix(d, spec, clear, keep)


def _sent(t: EffectiveTarget) -> str:
    if t.token == "oidc":
        how = f"an OIDC token for {t.account or 'no account'}, audience {t.audience}"
    elif t.token == "oauth":
        how = f"an OAuth access token for {t.account}"
    else:
        how = "no token"
    return f"tasks go to {t.url} ({t.method}) with {how}"


def _where(sent: str, worker: str) -> str:
    """What part of the URL the tasks are sent to differs from the worker's ("" if none)."""
    a, b = urlsplit(sent), urlsplit(worker)
    if a.scheme.lower() != b.scheme.lower():
        return "scheme"
    if (a.hostname or "") != (b.hostname or ""):
        return "host"
    if _port(a.port, a.scheme) != _port(b.port, b.scheme):
        return "port"
    if (a.path or "/") != (b.path or "/"):
        return "path"
    return "query" if a.query != b.query else ""


def _port(port: int | None, scheme: str) -> str:
    return str(port) if port is not None else _DEFAULT_PORTS.get(scheme.lower(), "")


def _uri_flag(url: str) -> str:
    """gcloud's --http-uri-override value that sends every task to ``url``."""
    p = urlsplit(url)
    parts = [f"scheme:{p.scheme}", f"host:{p.hostname}"]
    if p.port is not None:
        parts.append(f"port:{p.port}")
    parts.append(f"path:{p.path or '/'}")
    if p.query:
        parts.append(f"query:{p.query}")
    return shlex.quote(",".join(parts))


def _fix(d: Diagnosis, spec: WorkerSpec, clear: list[str], keep: list[str]) -> str:
    loc = f"--location={d.s.tasks_region} --project={d.s.project_id}"
    cmd = f"gcloud tasks queues update {spec.queue} {' '.join(clear)} {loc}"
    if not keep:
        return cmd
    return (f"{cmd} (or, to keep queue-level routing, gcloud tasks queues update {spec.queue} "
            f"{' '.join(keep)} {loc})")
