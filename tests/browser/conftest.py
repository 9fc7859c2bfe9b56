"""Browser tests: the whole local stack (``enqueuer dev``) driven by the system Chromium.

One stack per session (emulator, the three local workers, the API and the dashboard, all
on ephemeral ports, state in a temporary folder), one Chromium per session, a fresh
browser context per test. Nothing waits for time: every step waits for the app to say it
is connected and idle (the idea of streamlit's ``e2e_playwright`` ``wait_for_app_run``)
or for the element the test expects, with a timeout.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.emulator.harness import wait_until

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
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
                        profile["services"], output)
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


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh browser context (no cookies, no session) on the dashboard's origin."""
    context = browser.new_context(base_url=stack.dashboard,
                                  viewport={"width": 1400, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


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
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.when != "call" or not report.failed:
        return
    if page is not None:
        try:
            path = screenshot(page, f"FAILED-{item.name}")
            report.sections.append(("screenshot", str(path)))
        except Exception as e:  # the page may be gone; the failure itself matters more
            report.sections.append(("screenshot", f"no screenshot: {e}"))
    stack = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if isinstance(stack, Stack):
        report.sections.append(("enqueuer dev output and logs", stack.logs()))
