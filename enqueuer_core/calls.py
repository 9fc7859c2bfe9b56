"""One Google call's outcome, for code that reports what it finds rather than raising
(diagnostics, the setup plan): the answer, NOT_FOUND, or why it could not be had."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from enqueuer_core.errors import EnqueuerError

T = TypeVar("T")


class ClientError(Exception):
    """A client that could not be built: its calls are answered with the reason."""


@dataclass(frozen=True)
class Got:
    """One API answer: ``value``, or ``missing`` (NOT_FOUND), or ``error`` (the reason)."""

    value: Any = None
    error: str | None = None
    missing: str | None = None


def call(api: str, fn: Callable[[], T]) -> Got:
    """``fn()``'s answer; a refusal, an outage or a failure becomes ``error`` naming ``api``."""
    try:
        return Got(value=fn())
    except gexc.NotFound as e:
        return Got(missing=e.message)
    except gexc.PermissionDenied as e:
        return Got(error=f"{api} refused: {e.message}")
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
        return Got(error=f"{api} is unreachable or too slow: {e}")
    except gexc.GoogleAPICallError as e:
        return Got(error=f"{api} failed: {e.code.name if e.code else 'error'}: {e.message}")
    except EnqueuerError as e:
        return Got(error=f"{api}: {e.message}")
    except ClientError as e:
        return Got(error=str(e))
    except Exception as e:
        return Got(error=f"{api}: {type(e).__name__}: {e}")


def built(factory: Callable[[Any], T], settings: Any, what: str) -> T | Got:
    """``factory(settings)``, or a ``Got`` whose error says why ``what`` has no client (its
    calls then answer with the reason: see ``ClientError``)."""
    try:
        return factory(settings)
    except EnqueuerError as e:
        return Got(error=f"{what}: {e.message}")
