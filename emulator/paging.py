"""Page tokens and sizes, as every List method of the emulator's APIs handles them."""

from __future__ import annotations

import base64

from emulator.errors import invalid


def page_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def read_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid(
            "Invalid page_token: pass the next_page_token of the previous response unchanged."
        ) from None


def read_seq(token: str) -> int:
    value = read_token(token)
    if not value.isdigit():
        raise invalid(
            "Invalid page_token: pass the next_page_token of the previous response unchanged."
        )
    return int(value)


def page_size(size: int, maximum: int) -> int:
    if size < 0:
        raise invalid(f"page_size must not be negative; the maximum is {maximum}.")
    return min(size or maximum, maximum)
