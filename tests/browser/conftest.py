"""Browser tests: the whole local stack (``enqueuer dev``) driven by the system Chromium.

One stack per session (emulator, the three local workers, the API and the dashboard, all
on ephemeral ports, state in a temporary folder), one Chromium per session, a fresh
browser context per test. Nothing waits for time: every step waits for the app to say it
is connected and idle (the idea of streamlit's ``e2e_playwright`` ``wait_for_app_run``)
or for the element the test expects, with a timeout.

The dashboard logs its users in (st.login against the emulator's identity provider). Each
user logs in once per session, for real (``login``: "Log in", then their button on the
emulator's "Choose an account" page); each test's fresh context starts with that login's
cookies. ``page`` is the local admin's; ``visit(email)`` gives another user's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.harness import wait_until

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - a setup problem, said in one line
    raise pytest.UsageError(
        "the browser tests need Playwright's Python package: "
        ".venv/bin/pip install playwright (never `playwright install`: they use "
        "the system Chromium)") from None

ROOT = Path(__file__).resolve().parents[2]
ENQUEUER = str(Path(sys.executable).with_name("enqueuer"))
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STACK_START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
TIMEOUT_MS = 20_000  # any one wait in a page: generous, only ever reached on a failure
expect.set_options(timeout=TIMEOUT_MS)

# Streamlit publishes its state on its root element (data-test-* attributes): the
# websocket is up, and the script is not running (initial -> running -> notRunning).
_CONNECTED = "[data-testid='stApp'][data-test-connection-state='CONNECTED']"
_IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
ADMIN, OPERATOR, VIEWER = ("admin@local-project.test", "operator@local-project.test",
                           "viewer@local-project.test")
IAP_AUDIENCE = "/projects/123456789/locations/us-central1/services/enqueuer-dashboard"


def chromium_path() -> str:
    found = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which(
        "chromium")
    if not found:
        pytest.fail("the browser tests need Chromium: sudo apt-get install -y chromium "
                    "(`make test` installs it when run as root)")
    return found


@dataclass
class Stack:
    """The running ``enqueuer dev``: where each part answers, and its output so far."""

    proc: subprocess.Popen[str]
    state: Path
    dashboard: str
    api: str
    services: dict[str, str]
    output: list[str]
    emulator_http: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # the API's (and --local's)

    @property
    def api_audience(self) -> str:
        """What callers' ID tokens must be for: the API's URL."""
        return self.settings.get("API_AUDIENCE") or self.api

    def env(self) -> dict[str, str]:
        """The environment for ``enqueuer --local ...`` against this stack."""
        return {**os.environ, "ENQUEUER_STATE": str(self.state)}

    def logs(self) -> str:
        folder = self.state / "logs"
        parts = ["".join(self.output)]
        for log in sorted(folder.glob("*.log")) if folder.is_dir() else []:
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT (what Ctrl-C sends), a grace period, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# Package scope: torn down right after the browser tests, so that Playwright's event
# loop does not outlive them (tests after them call asyncio.run).
@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (ROOT / "dashboard.py").is_file():
        pytest.fail("there is no dashboard.py: the browser tests have nothing to open")
    state = tmp_path_factory.mktemp("browser") / "state"
    proc = subprocess.Popen(
        [ENQUEUER, "dev", "--ephemeral-ports", "--state", str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    # Read all output as it comes, so that a full pipe never blocks the stack.
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    try:
        wait_until(lambda: proc.poll() is not None or any(
            "Ctrl-C stops everything" in line for line in output),
            timeout=STACK_START_TIMEOUT_S, interval=0.1, what="`enqueuer dev` is up")
        if proc.poll() is not None:
            pytest.fail(f"`enqueuer dev` exited ({proc.returncode}):\n{''.join(output)}")
        profile = json.loads((state / "profile.json").read_text())
        if not profile.get("dashboard") or not profile.get("api"):
            pytest.fail(f"`enqueuer dev` started no dashboard or no API: {profile}")
        running = Stack(proc, state, profile["dashboard"], profile["api"],
                        profile["services"], output, profile["emulator_http"],
                        profile["settings"])
    except BaseException:
        _stop(proc)
        raise
    try:
        yield running
    finally:
        _stop(proc)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_context(browser: Browser, base_url: str, **options: Any) -> BrowserContext:
    context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1400},
                                  **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def login(page: Page, email: str) -> None:
    """Log in as ``email`` the way a user does: "Log in" on the dashboard, then the user's
    button on the emulator's "Choose an account" page, and back on the dashboard."""
    open_page(page, "/")
    page.get_by_role("button", name="Log in").click()
    page.locator(f"button[data-email='{email}']").click()  # on the emulator's page
    expect(page.get_by_test_id("stSidebarUserContent")).to_contain_text(email)
    wait_for_app_run(page)


@pytest.fixture(scope="package")
def logins(browser: Browser, stack: Stack) -> Callable[[str], dict[str, Any]]:
    """``logins(email)``: the cookies of ``email``'s login, logging in the first time."""
    states: dict[str, dict[str, Any]] = {}

    def state(email: str) -> dict[str, Any]:
        if email not in states:
            context = new_context(browser, stack.dashboard)
            try:
                login(context.new_page(), email)
                states[email] = dict(context.storage_state())
            finally:
                context.close()
        return states[email]

    return state


class Visits:
    """Fresh browser contexts, each logged in as someone; all closed at the end."""

    def __init__(self, browser: Browser, base_url: str,
                 logins: Callable[[str], dict[str, Any]]) -> None:
        self.browser, self.base_url, self.logins = browser, base_url, logins
        self.contexts: list[BrowserContext] = []
        self.pages: list[Page] = []

    def __call__(self, email: str | None, headers: dict[str, str] | None = None,
                 base_url: str | None = None) -> Page:
        """A page logged in as ``email`` (None: nobody), sending ``headers`` with every
        request, on ``base_url`` (the dashboard's by default)."""
        context = new_context(self.browser, base_url or self.base_url,
                              storage_state=self.logins(email) if email else None)
        self.contexts.append(context)
        if headers:
            context.set_extra_http_headers(headers)
        self.pages.append(context.new_page())
        return self.pages[-1]

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def visit(browser: Browser, stack: Stack, logins) -> Iterator[Visits]:
    visits = Visits(browser, stack.dashboard, logins)
    try:
        yield visits
    finally:
        visits.close()


@pytest.fixture
def page(visit: Visits) -> Page:
    """A fresh browser context on the dashboard, logged in as the local admin."""
    return visit(ADMIN)


def start_dashboard(stack: Stack, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Another dashboard process on the stack, with ``env`` over the stack's settings; its URL
    once it answers. The caller stops it (``_stop``)."""
    from enqueuer_core.devstack import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (stack.state / "logs" / f"dashboard-{port}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **stack.settings, "PYTHONUNBUFFERED": "1", **env})
    log.close()

    def answers() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(answers, timeout=STACK_START_TIMEOUT_S, interval=0.1,
                   what=f"the dashboard on {url} answers")
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited ({proc.returncode}): see {log.name}")
    except BaseException:
        _stop(proc)  # type: ignore[arg-type]
        raise
    return proc, url


@pytest.fixture(scope="package")
def iap_dashboard(stack: Stack) -> Iterator[str]:
    """The dashboard as it runs behind IAP (DASHBOARD_AUTH=iap): its URL. Tests stand where
    IAP would, sending ``x-goog-iap-jwt-assertion`` from the emulator's IAP keys."""
    proc, url = start_dashboard(stack, {"DASHBOARD_AUTH": "iap", "IAP_AUDIENCE": IAP_AUDIENCE})
    try:
        yield url
    finally:
        _stop(proc)  # type: ignore[arg-type]


def wait_for_app_run(page: Page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the app is connected, its script has finished, and it has rendered.

    Streamlit's own e2e tests do the same with ``wait_for_app_run``: the root element says
    CONNECTED and ``notRunning``; the status widget's "running" indicator is gone; the
    main block is on the page and no element is still a loading skeleton.
    """
    page.locator(_CONNECTED).wait_for(state="attached", timeout=timeout_ms)
    page.locator(_IDLE).wait_for(state="attached", timeout=timeout_ms)
    expect(page.locator("[data-testid='stStatusWidget'] [data-testid*='Running']")
           ).to_have_count(0, timeout=timeout_ms)
    page.get_by_test_id("stMainBlockContainer").wait_for(state="visible", timeout=timeout_ms)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout_ms)


def open_page(page: Page, path: str = "/") -> None:
    """Go to a dashboard URL (``/``, ``/queues?queue=...``) and wait for it to render."""
    page.goto(path)
    wait_for_app_run(page)


def assert_no_exception(page: Page) -> None:
    """No uncaught exception on the page: no exception box, no traceback text."""
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stMain")).not_to_contain_text(re.compile("Traceback"))


def screenshot(page: Page, name: str) -> Path:
    """Keep a full-page screenshot under test-artifacts/screenshots/ (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On a failure, keep a screenshot of the page as it was, named after the test."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    visits = funcargs.get("visit")
    page = funcargs.get("page") or (visits.pages[-1] if isinstance(visits, Visits)
                                    and visits.pages else None)
    if report.when != "call" or not report.failed:
        return
    if page is not None:
        try:
            path = screenshot(page, f"FAILED-{item.name}")
            report.sections.append(("screenshot", str(path)))
        except Exception as e:  # the page may be gone; the failure itself matters more
            report.sections.append(("screenshot", f"no screenshot: {e}"))
    stack = funcargs.get("stack")
    if isinstance(stack, Stack):
        report.sections.append(("enqueuer dev output and logs", stack.logs()))
