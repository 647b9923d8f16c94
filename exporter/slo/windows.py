"""The multi-window, multi-burn-rate alerts of the SRE Workbook ("Alerting on SLOs").

An alert fires when the error budget burns ``factor`` times too fast over a long
window (significant) and over a short one (still burning, so that it resolves
within minutes once the failures stop). A factor is the share of the budget the
alert allows to burn in its long window: 2 % of it in 1 h pages (14.4x for 30
days), as does 5 % in 6 h (6x); 10 % in 1 day (3x) or in 3 days (1x) opens a
ticket. Factors scale with the compliance window, as Sloth's and Pyrra's do.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.slo.model import seconds


@dataclass(frozen=True)
class BurnWindow:
    severity: str  # "critical" pages, "warning" opens a ticket
    long: str
    short: str
    budget_share: float  # of the whole budget, burnt in ``long`` at the threshold

    def factor(self, window: str) -> float:
        """The burn rate threshold for a compliance window ``window``."""
        return round(self.budget_share * seconds(window) / seconds(self.long), 6)


BURN_WINDOWS = (
    BurnWindow("critical", "1h", "5m", 0.02),
    BurnWindow("critical", "6h", "30m", 0.05),
    BurnWindow("warning", "1d", "2h", 0.10),
    BurnWindow("warning", "3d", "6h", 0.10),
)


@dataclass(frozen=True)
class Profile:
    """Windows and ``for`` durations of the generated rules. ``speedup`` divides
    every duration (windows, ``for``, the compliance window) but
    keeps the burn factors: a test profile that pages within seconds."""

    burn_windows: tuple[BurnWindow, ...] = BURN_WINDOWS
    page_for: str = "2m"
    ticket_for: str = "15m"
    speedup: int = 1

    def for_severity(self, severity: str) -> str:
        return self.duration(self.page_for if severity == "critical" else self.ticket_for)

    def windows(self) -> tuple[str, ...]:
        """Every window a ratio is recorded over, shortest first."""
        found = {w for b in self.burn_windows for w in (b.long, b.short)}
        return tuple(sorted(found, key=seconds))

    def duration(self, duration: str) -> str:
        """``duration`` as the rules write it: itself, or divided by ``speedup``."""
        if self.speedup == 1:
            return duration
        return f"{max(1, seconds(duration) // self.speedup)}s"

    def seconds(self, duration: str) -> int:
        return seconds(self.duration(duration))


DEFAULT_PROFILE = Profile()
