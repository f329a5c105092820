"""Knowledge gaps for the weekly digest: what people asked that the knowledge could not answer.

An escalated question with no learned answer yet is a hole someone will fall into again. Grouped
by topic (`evals.topics`: where the nearest retrieved document lives), the biggest groups say
where to write next; each names a few questions with a link to their Slack thread. A question
whose escalation became an approved learned answer (`knowledge.learned`) is no longer a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evals.topics import topic_of_retrieved

OPEN_OR_DONE = ("open", "claimed", "resolved")  # posted escalations (not pending or failed posts)


@dataclass
class GapCluster:
    topic: str
    questions: list[tuple[str, str | None]] = field(default_factory=list)  # (question, thread link)

    @property
    def count(self) -> int:
        return len(self.questions)


def knowledge_gaps(
    interactions: Iterable[Mapping[str, Any]],
    feedback: Iterable[Mapping[str, Any]],
    learned: set[str],
    *,
    limit: int = 5,
) -> list[GapCluster]:
    """The top clusters of escalated questions without a learned answer, biggest first (pure)."""
    by_id = {row["interaction_id"]: row for row in interactions}
    clusters: dict[str, GapCluster] = {}
    for escalation in feedback:
        interaction_id = escalation.get("interaction_id")
        if escalation.get("kind") != "escalation" or escalation.get("status") not in OPEN_OR_DONE:
            continue
        row = by_id.get(interaction_id or "")
        if row is None or interaction_id in learned:
            continue
        topic = topic_of_retrieved(row.get("retrieved") or [])
        clusters.setdefault(topic, GapCluster(topic)).questions.append(
            ((row.get("question") or "").strip(), escalation.get("permalink"))
        )
    return sorted(clusters.values(), key=lambda cluster: (-cluster.count, cluster.topic))[:limit]


def gaps_text(clusters: list[GapCluster], *, per_cluster: int = 3) -> str:
    """Slack mrkdwn lines for the digest; empty when there are no gaps."""
    if not clusters:
        return ""
    lines = ["*Knowledge gaps* (escalated this week, no learned answer yet):"]
    for cluster in clusters:
        shown = []
        for question, link in cluster.questions[:per_cluster]:
            short = question if len(question) <= 80 else question[:79] + "…"
            safe = short.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "¦")
            shown.append(f"<{link}|{safe}>" if link and link.startswith("https://") else f"“{safe}”")
        more = f" (+{cluster.count - per_cluster} more)" if cluster.count > per_cluster else ""
        lines.append(f"• *{cluster.topic}*: {cluster.count} question(s): {', '.join(shown)}{more}")
    return "\n".join(lines)
