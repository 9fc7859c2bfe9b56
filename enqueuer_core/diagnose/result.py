"""What a check found: a status, the evidence and the fix; and the worst of several."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "unknown"]
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "unknown": 2, "fail": 3}


@dataclass(frozen=True)
class CheckResult:
    worker: str
    check: str
    title: str
    status: Status
    evidence: str
    fix: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(results: Iterable[CheckResult | str]) -> Status:
    """The most serious status: fail > unknown > warn > pass (``pass`` for none)."""
    statuses = [r if isinstance(r, str) else r.status for r in results]
    return max(statuses, key=_RANK.__getitem__, default="pass")  # type: ignore[return-value]
