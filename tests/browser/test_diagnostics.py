"""The Diagnostics page in a real browser on the whole local stack: its marks are glyphs one
sees (Debian's Chromium has no colour-emoji font, so an emoji would be an empty box); an
operator's Probe proves every worker through its door; an admin's Fix repairs a removed
invoker binding (seen first, applied through setup, on record), which a viewer cannot.
"""

from __future__ import annotations

import io
import re
from typing import Any

from google.iam.v1 import iam_policy_pb2, policy_pb2
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from enqueuer_core import clients
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.history import queries
from enqueuer_core.history.records import payload_of
from pages import marks
from tests.browser.conftest import (
    ADMIN,
    OPERATOR,
    VIEWER,
    Stack,
    Visits,
    assert_no_exception,
    open_page,
    screenshot,
    wait_for_app_run,
)
from tests.emulator.harness import wait_until

WORKERS = ("brain", "testimonios", "transcripciones")
INVOKER = "roles/run.invoker"
UI_FONT, ICON_FONT = "Source Sans", "Material Symbols Rounded"  # what Streamlit serves
# Material icons as Streamlit draws them: widgets' and expanders' icons, and Markdown's
# `:material/NAME:` (a span with the icon's name as its text, a ligature of the font).
ICONS = ("[data-testid='stIconMaterial'], [data-testid='stExpanderIcon'], "
         "span[role='img'][aria-label$=' icon']")
# Emoji and their variation selector, and the symbol blocks Streamlit's fonts lack: what a
# browser without a colour-emoji font draws as an empty box (✓ U+2713 and ✗ U+2717 are in
# the UI font, and are no emoji).
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u26FF\u2B00-\u2BFF\uFE0F"
                   "\u2700-\u2712\u2714-\u2716\u2718-\u27BF]")

# Each visible Material icon: its font, whether that font is loaded, and its size. As text,
# its name ("check_circle") would be many times wider than high.
_ICONS_JS = """async (els) => {
  await document.fonts.ready;
  return els.filter(e => e.getClientRects().length > 0).map(e => {
    const cs = getComputedStyle(e), r = e.getBoundingClientRect();
    return {name: e.textContent, family: cs.fontFamily, size: parseFloat(cs.fontSize),
            width: r.width, height: r.height,
            loaded: document.fonts.check(`${cs.fontSize} "${cs.fontFamily.split(',')[0]
                                          .replaceAll('"', '')}"`, e.textContent)};
  });
}"""
# Each character drawn on a canvas with the UI font (falling back to monospace), alone in
# monospace, and a character no font has (the box a browser draws for a missing glyph): a
# glyph of the UI font has ink, differs from monospace's and from the box.
_GLYPHS_JS = """async ({chars, font}) => {
  const size = 40;
  await document.fonts.load(`${size}px "${font}"`, chars.join(''));
  const c = document.createElement('canvas');
  c.width = 2 * size; c.height = 2 * size;
  const g = c.getContext('2d', {willReadFrequently: true});
  const draw = (family, ch) => {
    g.clearRect(0, 0, c.width, c.height);
    g.font = `${size}px ${family}`; g.fillStyle = '#000'; g.textBaseline = 'middle';
    g.fillText(ch, size / 4, size);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    return Array.from({length: d.length / 4}, (_, i) => d[4 * i + 3]).join(',');
  };
  const ui = `"${font}", monospace`;
  const box = draw(ui, '\\u{10FFFD}');
  return chars.map(ch => {
    const mine = draw(ui, ch);
    return {ch, ink: mine.split(',').filter(v => v !== '0').length,
            fromUiFont: mine !== draw('monospace', ch), box: mine === box};
  });
}"""


def main(page: Page) -> Locator:
    return page.get_by_test_id("stMain")


def worker_box(page: Page, worker: str) -> Locator:
    """The bordered box of one worker's details."""
    return page.locator(f".st-key-worker-{worker}")


def check_box(page: Page, worker: str, title: str) -> Locator:
    """The expander of ``worker``'s check titled ``title`` (only a check that does not
    pass has one)."""
    return worker_box(page, worker).get_by_test_id("stExpander").filter(
        has=page.locator("summary", has_text=title))


def ink(png: bytes, background: tuple[int, int, int] | None = None) -> tuple[int, float]:
    """Dark pixels of a screenshot (within ``background``'s area when given), and the
    width/height ratio of their bounding box."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if background is not None:
        near = [(x, y) for y in range(img.height) for x in range(img.width)
                if all(abs(a - b) <= 4 for a, b in zip(img.getpixel((x, y)), background,
                                                         strict=True))]
        assert near, f"no {background} in the screenshot"
        xs, ys = [x for x, _ in near], [y for _, y in near]
        img = img.crop((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    dark = [(x, y) for y in range(img.height) for x in range(img.width)
            if sum(img.getpixel((x, y))) < 3 * 140]
    if not dark:
        return 0, 0.0
    xs, ys = [x for x, _ in dark], [y for _, y in dark]
    return len(dark), (max(xs) - min(xs) + 1) / (max(ys) - min(ys) + 1)


def stack_settings(stack: Stack) -> Settings:
    return load_settings(lenient=True, **{k.lower(): v for k, v in stack.settings.items()})


# -- the marks ------------------------------------------------------------------------------


def test_the_marks_are_glyphs_one_sees(page: Page) -> None:
    open_page(page, "/diagnostics")
    expect(main(page)).to_contain_text("Worst:")
    assert_no_exception(page)
    screenshot(page, "diagnostics")

    # Material icons (in Markdown, expanders' labels, buttons): drawn with Streamlit's icon
    # font, loaded, one glyph wide.
    icons = main(page).locator(ICONS).evaluate_all(_ICONS_JS)
    names = {i["name"] for i in icons}
    assert {"check_circle", "network_check", "refresh"} <= names, names
    assert sum(i["name"] == "check_circle" for i in icons) >= 7, icons  # summary, badges...
    for icon in icons:
        assert ICON_FONT in icon["family"] and icon["loaded"], icon
        assert icon["width"] <= 1.5 * icon["size"], icon  # a glyph, not its name as text

    # No emoji anywhere; every other symbol shown, the matrix's included, is the UI font's.
    text = page.locator("body").inner_text()
    assert not EMOJI.findall(text), sorted(set(EMOJI.findall(text)))
    cells = "".join(marks.CELL.values()) + marks.FOCUS_HEADER
    chars = sorted({c for c in text + cells if ord(c) > 127 and not c.isspace()})
    assert {"✓", "·"} <= set(chars), chars
    for glyph in page.evaluate(_GLYPHS_JS, {"chars": chars, "font": UI_FONT}):
        assert glyph["ink"] and glyph["fromUiFont"] and not glyph["box"], glyph

    # The matrix draws its cells on a canvas, in the UI font; on screen its cells (all
    # passing on this stack) hold ink on their green. The summary's icon is one square
    # glyph (its name as text would be ~6:1).
    grid = main(page).get_by_test_id("stDataFrame").locator(".stDataFrameGlideDataEditor")
    family = grid.first.evaluate(
        "e => getComputedStyle(e).getPropertyValue('--gdg-font-family')")
    assert family.strip().startswith(f'"{UI_FONT}"'), family
    dots, _ = ink(main(page).get_by_test_id("stDataFrame").screenshot(),
                  background=(0xd3, 0xf9, 0xd8))
    assert dots > 50, dots
    worst = main(page).get_by_test_id("stMarkdown").filter(has_text="Worst:")
    dots, ratio = ink(worst.locator(ICONS).first.screenshot())
    assert dots > 10 and 0.6 < ratio < 1.6, (dots, ratio)


# -- the probe ------------------------------------------------------------------------------


def test_an_operator_probes_every_worker_and_each_is_proven(visit: Visits) -> None:
    page = visit(OPERATOR)
    open_page(page, "/diagnostics")
    page.get_by_role("button", name="Probe").click()
    wait_for_app_run(page)
    proven = page.get_by_test_id("stAlertContentSuccess")
    expect(proven).to_contain_text(f"{', '.join(WORKERS)} proven reachable through the door")
    for worker in WORKERS:
        # In each worker's passing checks: the probe, and what the door answered.
        passing = worker_box(page, worker).get_by_test_id("stExpander").filter(
            has_text="passing")
        expect(passing).to_contain_text("probe")
        expect(passing).to_contain_text("token, audience and invoker binding accepted")
    expect(main(page).get_by_test_id("stAlertContentWarning")).to_have_count(0)
    assert_no_exception(page)
    screenshot(page, "diagnostics-probed")


# -- the fix --------------------------------------------------------------------------------


def _policy(stack: Stack) -> tuple[Any, str, policy_pb2.Policy]:
    """The brain service's run client (as the stack's operator), name, and policy."""
    settings = stack_settings(stack)
    run = clients.run_client(settings, acting_as=settings.emulator_operator)
    name = (f"projects/{settings.project_id}/locations/{settings.tasks_region}"
            "/services/brain")
    return run, name, run.get_iam_policy(
        request=iam_policy_pb2.GetIamPolicyRequest(resource=name))


def _invokers(policy: policy_pb2.Policy) -> set[str]:
    return {m for b in policy.bindings if b.role == INVOKER for m in b.members}


def _fix_on_record(stack: Stack) -> list[dict[str, Any]]:
    """The audit lines of the admin's setup runs, as the stack shipped them to Logging."""
    settings = stack_settings(stack)
    entries, _ = queries.list_page(
        clients.logging_client(settings, acting_as=settings.emulator_operator),
        settings.project_id,
        queries.actions_filter(who=f"user:{ADMIN}", action="setup_apply"),
        newest_first=True, page_size=20)
    return [payload_of(e)["audit"] for e in entries]


def test_an_admin_fixes_an_invoker_binding_a_viewer_cannot(visit: Visits,
                                                           stack: Stack) -> None:
    run, name, kept = _policy(stack)
    caller = f"serviceAccount:{stack_settings(stack).caller_sa}"
    assert caller in _invokers(kept)
    broken = policy_pb2.Policy(version=kept.version, etag=kept.etag)
    for b in kept.bindings:
        members = [m for m in b.members if not (b.role == INVOKER and m == caller)]
        if members:
            broken.bindings.add(role=b.role, members=members)
    run.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=name,
                                                                  policy=broken))
    try:
        # A viewer sees the failure and its command, no Fix, and Probe disabled with why.
        viewer = visit(VIEWER)
        open_page(viewer, "/diagnostics")
        failing = check_box(viewer, "brain", "Caller account may invoke the service")
        expect(failing).to_contain_text("add-iam-policy-binding brain")
        expect(main(viewer).get_by_role("button", name="Fix…")).to_have_count(0)
        expect(main(viewer).get_by_role("button", name="Probe")).to_be_disabled()
        assert_no_exception(viewer)

        page = visit(ADMIN)
        open_page(page, "/diagnostics")
        failing = check_box(page, "brain", "Caller account may invoke the service")
        expect(failing).to_contain_text("fail")
        failing.get_by_role("button", name="Fix…").click()
        wait_for_app_run(page)
        # The change, first: what it is and its gcloud, nothing made yet.
        change = page.locator(".stVerticalBlock.st-key-change-brain-invoker")
        expect(change).to_contain_text("The change that repairs it")
        command = change.get_by_test_id("stCode")
        expect(command).to_contain_text("gcloud run services add-iam-policy-binding brain ")
        expect(command).to_contain_text(f"--member={caller} --role={INVOKER}")
        assert caller not in _invokers(_policy(stack)[2])
        screenshot(page, "diagnostics-fix-shown")
        change.get_by_role("button", name="Apply").click()
        wait_for_app_run(page)
        done = page.get_by_test_id("stAlertContentSuccess")
        expect(done).to_contain_text("invoker for brain")
        expect(done).to_contain_text("it passes now")
        expect(check_box(page, "brain", "Caller account may invoke the service")
               ).to_have_count(0)  # passing: among the passing checks now
        expect(main(page).get_by_role("button", name="Fix…")).to_have_count(0)
        assert_no_exception(page)
        screenshot(page, "diagnostics-fixed")
        assert caller in _invokers(_policy(stack)[2])
        lines = wait_until(
            lambda: [x for x in _fix_on_record(stack)
                     if x.get("fix") == "invoker" and x.get("worker") == "brain"],
            timeout=20, interval=0.3, what="the Fix's audit line reached Logging")
        assert lines[0]["outcome"] == "ok" and lines[0]["via"] == "dashboard", lines[0]
    finally:
        _, _, now = _policy(stack)
        if caller not in _invokers(now):  # the test stopped midway: leave the stack as it was
            kept.etag = b""
            run.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=name,
                                                                          policy=kept))
