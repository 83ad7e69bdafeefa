"""Formatting of rates and distances for everything the CLI prints: one place for `%`, `pp` and `mm`."""

from __future__ import annotations


def percent(rate: float | None, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage: 0.912 -> "91.2%"; None -> "-"."""
    return "-" if rate is None else f"{100 * rate:.{digits}f}%"


def points(delta: float, digits: int = 1) -> str:
    """A signed difference of two rates in percentage points: -0.11 -> "-11.0 pp"."""
    return f"{100 * delta:+.{digits}f} pp"


def mm(metres: float | None, digits: int = 1, sign: bool = False) -> str:
    """A distance in metres as millimetres: 0.0123 -> "12.3 mm"; None -> "-"."""
    if metres is None:
        return "-"
    return f"{1000 * metres:{'+' if sign else ''}.{digits}f} mm"
