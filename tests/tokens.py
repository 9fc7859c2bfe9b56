"""Tokens from the emulator's issuer, for tests: a caller's Google ID token, an IAP assertion.

Both come from the emulator's emulator-only endpoints (``/emulator/v1/...``), signed with the
keys it publishes where Google publishes its own, so the code under test verifies them
exactly as it verifies Google's.
"""

from __future__ import annotations

from typing import Any

import httpx


def id_token(http_url: str, email: str, audience: str) -> str:
    """A Google-shaped ID token for ``email`` with ``aud`` = ``audience``."""
    r = httpx.post(f"{http_url}/emulator/v1/id-token",
                   json={"email": email, "audience": audience}, timeout=10)
    r.raise_for_status()
    return str(r.json()["id_token"])


def iap_assertion(http_url: str, email: str, audience: str, **claims: Any) -> str:
    """An IAP-style ``x-goog-iap-jwt-assertion`` (``issuer``, ``expires_in_s`` optional)."""
    r = httpx.post(f"{http_url}/emulator/v1/iap-assertion",
                   json={"email": email, "audience": audience, **claims}, timeout=10)
    r.raise_for_status()
    return str(r.json()["assertion"])


def bearer(http_url: str, email: str, audience: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {id_token(http_url, email, audience)}"}
