"""The Slack bot's shared state, `SupportBot`: what every listener and HTTP route works with.

Its own module so that `app.py` (which builds it) and `listeners.py` (which use it) depend on it,
not on each other. `create_app` returns it; nothing is attached to the bolt `AsyncApp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.coordination import Coordination, LocalCoordination
from bot.observability import Metrics
from bot.slack.answering import Responder
from bot.slack.delivery import Alerts
from bot.slack.escalation import Escalations
from bot.slack.ratelimit import AnswerLimiter
from bot.slack.refresh_gate import Refresher, ungated
from bot.slack.tasks import BackgroundTasks

if TYPE_CHECKING:
    from bot.engine.pipeline import Pipeline
    from bot.settings import Settings
    from bot.store import Store
    from knowledge.index import KnowledgeIndex


@dataclass
class SupportBot:
    """Everything the listeners share: settings, the engine, the logs, the bolt app and the work in flight."""

    settings: Settings
    pipeline: Pipeline
    store: Store
    index: KnowledgeIndex
    app: AsyncApp
    client: AsyncWebClient
    socket_mode: bool = False
    coordination: Coordination = field(default_factory=LocalCoordination)  # leases and limits shared by replicas
    metrics: Metrics = field(default_factory=Metrics)
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    responder: Responder = field(init=False)
    escalations: Escalations = field(init=False)
    alerts: Alerts = field(init=False)
    accepting: bool = True  # False once shutdown began: new events get 503 so Slack redelivers them later
    signing_secret: str | None = None  # set in HTTP mode: requests are verified before anything is parsed
    refresher: Refresher = ungated  # `/kb-refresh`; `supportbot serve` hands in the eval-gated one

    def __post_init__(self) -> None:
        self.alerts = Alerts(self.settings)
        self.escalations = Escalations(self.settings, self.store, self.metrics, self.alerts)
        self.responder = Responder(
            self.settings,
            self.pipeline,
            self.store,
            self.escalations,
            AnswerLimiter.from_settings(self.settings, self.coordination.shared_limits),
            self.metrics,
            self.alerts,
        )
