"""The dashboard's status marks, in one place, drawn only with what Streamlit ships.

Emoji (✅ ❌ ⚠️ ❔ 🔎) need a colour-emoji font, which Debian's Chromium and many Linux
desktops do not have: they render as empty boxes, and pass looks like fail but for a
colour. So:

- where Markdown renders (st.markdown, st.caption, expander labels, badges, alerts), a mark
  is a ``:material/NAME:`` icon: Streamlit serves the Material Symbols font itself;
- in table cells (st.dataframe draws on a canvas, where Markdown icons do not render), a
  mark is a word led by a symbol the UI font (Source Sans, also served by Streamlit) has:
  ✓ U+2713 and ✗ U+2717 are in it, and neither is an emoji in Unicode, so no browser swaps
  in an emoji font for them. The cell's colour says the same again.

tests/browser/test_diagnostics.py checks that every mark the Diagnostics page shows is a
glyph one sees, not a box.
"""

from __future__ import annotations

from typing import Literal

Status = Literal["pass", "warn", "fail", "unknown"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "unknown")

# Markdown: Material Symbols (https://fonts.google.com/icons), as Streamlit renders them.
ICON: dict[str, str] = {"pass": ":material/check_circle:", "warn": ":material/warning:",
                        "fail": ":material/cancel:", "unknown": ":material/help:"}
# Markdown colours (`:green[...]`, `:green-badge[...]`).
COLOR: dict[str, str] = {"pass": "green", "warn": "orange", "fail": "red", "unknown": "gray"}
# Table cells: a symbol of the UI font, then the word.
CELL: dict[str, str] = {"pass": "✓ pass", "warn": "! warn", "fail": "✗ fail",
                        "unknown": "? unknown"}
CELL_STYLE: dict[str, str] = {
    "pass": "background-color: #d3f9d8", "warn": "background-color: #fff3bf",
    "fail": "background-color: #ffc9c9", "unknown": "background-color: #e9ecef"}

# The check a link from another page points at: an icon in Markdown, an arrow (in the UI
# font) in a table's column header.
FOCUS_ICON = ":material/search:"
FOCUS_HEADER = "→ "
# Other marks of the dashboard.
FAILED_FOR_GOOD = "✗ failed for good"  # a table cell (pages/history_views.py)
PROBE_ICON = ":material/network_check:"
FIX_ICON = ":material/build:"


def mark(status: str) -> str:
    """The status's icon, for Markdown."""
    return ICON.get(status, ICON["unknown"])


def icon(status: str) -> str:
    """The status's icon in its colour, for Markdown."""
    return f":{COLOR.get(status, 'gray')}[{mark(status)}]"


def colored(status: str, text: str | None = None) -> str:
    """Icon and ``text`` (the status by default) in the status's colour, for Markdown."""
    return f":{COLOR.get(status, 'gray')}[{mark(status)} {text or status}]"


def badge(status: str, text: str | None = None) -> str:
    """A badge with the status's icon and colour, for Markdown."""
    return f":{COLOR.get(status, 'gray')}-badge[{mark(status)} {text or status}]"


def cell(status: str) -> str:
    """The status as a table cell shows it."""
    return CELL.get(status, CELL["unknown"])
