"""A daily cap on Claude spend: past it, answers come from the extractive answerer, marked.

Why: an LLM bill must be bounded the way a queue is, and running out of budget must degrade the
answer (quoted passages, cited) rather than fail it. The day is the UTC day; the spend is this
process's (each worker of a scaled-out deployment holds its own share of the cap).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

BUDGET_GENERATOR = "extractive-budget"


class DailyBudget:
    """US dollars spent today against `limit_usd` (0 or less: no cap)."""

    def __init__(self, limit_usd: float, today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self.limit_usd = limit_usd
        self.today = today
        self.day = today()
        self.spent_usd = 0.0

    def _roll(self) -> None:
        day = self.today()
        if day != self.day:
            self.day, self.spent_usd = day, 0.0

    def spent(self) -> float:
        self._roll()
        return self.spent_usd

    def exhausted(self) -> bool:
        return self.limit_usd > 0 and self.spent() >= self.limit_usd

    def charge(self, usd: float) -> None:
        self._roll()
        self.spent_usd += usd

    def reason(self) -> str:
        return f"daily Claude budget of ${self.limit_usd:g} reached (UTC day {self.day.isoformat()})"
