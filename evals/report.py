"""Markdown and self-contained HTML reports of an eval run, with plots (PNG, matplotlib Agg).

Written for the person tuning the bot: headline numbers first (with the baseline when there is
one), then where confidence can be trusted (reliability diagram and the thresholds), how the
numbers moved over past runs, why the bot escalated, which topics the knowledge does not cover,
and the worst cases in full (question, answer, sources) so the next fix is obvious.

Everything here is a pure function of the report dict(s) except `write_report`, which saves
the files and appends the run to the history folder the trend plot reads.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from evals.compare import Change
from evals.schema import METRICS, EvalReport, UsageSummary

Report = EvalReport | Mapping[str, Any]  # the runner's dict is accepted and validated
PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"]


# ------------------------------------------------------------------------------ analysis (pure)


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def usage_summary(usage: UsageSummary) -> str:
    """The bot's tokens and cost, then the LLM judge's (an eval cost, not the bot's) when it ran."""
    text = (
        f"Tokens: {usage.input_tokens} in, {usage.output_tokens} out; cost "
        f"${usage.cost_usd:.4f} (${usage.cost_per_case_usd:.5f} per question)."
    )
    judge = usage.judge
    if judge.calls:
        failed = f", {judge.failed} failed" if judge.failed else ""
        text += (
            f" LLM judge: {judge.calls} calls{failed}, {judge.input_tokens} in, "
            f"{judge.output_tokens} out, ${judge.cost_usd:.4f}."
        )
    return text


def calibration_summary(calibration: dict[str, Any] | None) -> str:
    """Which self-calibration judged these answers: the line a reader compares runs by."""
    from bot.engine.calibration import describe

    return f"Calibration in force: {describe(calibration)}."


def threshold_summary(advice: dict[str, Any] | None) -> str | None:
    """One paragraph on the escalation threshold: what it does on this eval set and where it should sit."""
    if not advice or advice.get("suggested") is None:
        return None
    low_escalated, low_answered = advice["targets"]
    text = (
        f"At the escalation threshold {advice['current']:.2f}, {advice['escalated']:.0%} of unanswerable questions "
        f"were escalated and {advice['answered']:.0%} of answerable ones answered (targets {low_escalated:.0%} "
        f"and {low_answered:.0%}). "
    )
    escalated, answered = advice["suggested_rates"]
    if advice["meeting"]:
        low, high = advice["meeting"]
        if low == high:
            return text + f"Only {low:.2f} meets both ({escalated:.0%} / {answered:.0%})."
        return text + (
            f"Thresholds {low:.2f} to {high:.2f} meet both; {advice['suggested']:.2f} leaves the most room "
            f"({escalated:.0%} / {answered:.0%})."
        )
    return text + (
        f"No threshold meets both on this set; {advice['suggested']:.2f} comes closest ({escalated:.0%} / "
        f"{answered:.0%}). The confidence signals, not the threshold, need work."
    )


def reason_label(reason: str) -> str:
    """Group reasons that differ only in numbers or quoted words ("top similarity 0.31 < 0.40")."""
    label = re.sub(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])|\"[^\"]*\"|‘[^’]*’|“[^”]*”", "…", reason)
    label = re.sub(r"…(?:\s*(?:,|and|or)?\s*…)+", "…", label)
    label = re.sub(r"\(?[-+]?\d+(?:\.\d+)?%?\)?", "", label)
    label = re.sub(r"\s*(?:[<>=≤≥]+\s*)+(?=$|[;,)])", "", label)
    return " ".join(label.replace(" :", ":").split()).strip(" :;,.-<>=") or reason


def escalation_reasons(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    counts = Counter(reason_label(reason) for row in rows if row["escalated"] for reason in row.get("reasons") or [])
    return counts.most_common()


def is_gap(row: dict[str, Any]) -> bool:
    """No good source: the knowledge does not answer it, or retrieval found no gold document."""
    return not row["answerable"] or (bool(row["gold_sources"]) and row["retrieval"].get("hit@k") == 0)


def knowledge_gaps(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Gap questions grouped by topic, biggest group first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if is_gap(row):
            groups.setdefault(row.get("topic") or "other", []).append(row)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def worst_cases(rows: Sequence[dict[str, Any]], limit: int = 6) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(title, why it matters, cases) for the three failure kinds worth reading first."""
    confidently_wrong = sorted(
        (row for row in rows if not row["answerable"] and not row["escalated"]), key=lambda row: -row["confidence"]
    )
    missed = sorted((row for row in rows if row["answerable"] and row["escalated"]), key=lambda row: -row["confidence"])
    weakest = sorted(
        (row for row in rows if row["answerable"] and not row["escalated"] and row.get("token_f1") is not None),
        key=lambda row: (row["token_f1"], row.get("faithfulness") or 0.0),
    )
    return [
        (
            "Answered, but the knowledge does not cover it",
            "the bot should have escalated these",
            confidently_wrong[:limit],
        ),
        ("Escalated, but the knowledge answers it", "needless work for the support team", missed[:limit]),
        ("Weakest answers", "lowest overlap with the reference answer", weakest[:limit]),
    ]


def headline_rows(report: Report, changes: Sequence[Change] = ()) -> list[dict[str, Any]]:
    report = EvalReport.of(report)
    by_metric = {change.metric: change for change in changes}
    rows = []
    for metric in METRICS:
        value = report.value(metric)
        if value is None and metric.section != "retrieval":
            continue
        change = by_metric.get(metric.key)
        rows.append(
            {
                "label": metric.title(report.k),
                "value": value,
                "meaning": metric.meaning,
                "baseline": change.baseline if change else None,
                "delta": change.delta if change else None,
                "regressed": bool(change and change.regressed),
            }
        )
    return rows


def trend_series(history: Sequence[Report]) -> dict[str, list[tuple[str, float]]]:
    series: dict[str, list[tuple[str, float]]] = {}
    for past in sorted((EvalReport.of(report) for report in history), key=lambda report: report.timestamp or ""):
        for metric in METRICS:
            value = past.value(metric) if metric.trend else None
            if value is not None:
                series.setdefault(metric.key, []).append((past.timestamp or "?", value))
    return series


# ------------------------------------------------------------------------------ plots (pure: bytes out)


def _figure(width: float = 7.5, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25)
    return fig, ax


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def plot_calibration(report: EvalReport) -> bytes | None:
    """Reliability diagram: per confidence bin, the share of questions that were answerable."""
    if not report.per_case:
        return None
    bins = (report.calibration or {}).get("bins") or []
    config = report.config.model_dump()
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", label="perfect calibration")
    if bins:
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        ax.bar(
            centres,
            [b["observed"] for b in bins],
            width=0.09,
            color=PALETTE[0],
            alpha=0.75,
            label="observed share answerable",
        )
        ax.plot([b["mean_confidence"] for b in bins], [b["observed"] for b in bins], "o", color=PALETTE[0])
        for centre, b in zip(centres, bins):
            ax.annotate(
                f"n={b['count']}",
                (centre, b["observed"]),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=7,
                color="#374151",
            )
    for key, label, colour in (("caveat_threshold", "caveat", PALETTE[2]), ("answer_threshold", "answer", PALETTE[1])):
        if isinstance(config.get(key), (int, float)):
            ax.axvline(config[key], color=colour, linewidth=1.5, label=f"{label} threshold {config[key]:.2f}")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.12),
        xlabel="bot confidence",
        ylabel="share answerable",
        title="Reliability: is confidence the chance of being answerable?",
    )
    ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.9)
    return _png(fig)


def plot_confidence_histogram(report: EvalReport) -> bytes | None:
    """Confidence of answerable vs unanswerable questions: the gap the thresholds must fall in."""
    rows = report.per_case
    if not rows:
        return None
    config = report.config.model_dump()
    fig, ax = _figure()
    edges = [i / 20 for i in range(21)]
    ax.hist(
        [r["confidence"] for r in rows if r["answerable"]], bins=edges, alpha=0.7, color=PALETTE[1], label="answerable"
    )
    unanswerable = [r["confidence"] for r in rows if not r["answerable"]]
    if unanswerable:
        ax.hist(unanswerable, bins=edges, alpha=0.7, color=PALETTE[4], label="not answerable")
    for key, colour in (("caveat_threshold", PALETTE[2]), ("answer_threshold", PALETTE[1])):
        if isinstance(config.get(key), (int, float)):
            ax.axvline(config[key], color=colour, linewidth=1.5)
    ax.set(
        xlim=(0, 1),
        xlabel="bot confidence",
        ylabel="questions",
        title="Confidence by ground truth (lines: caveat / answer thresholds)",
    )
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def plot_trend(history: Sequence[Report]) -> bytes | None:
    series = trend_series(history)
    if not series or max(len(points) for points in series.values()) < 2:
        return None
    fig, ax = _figure(width=10, height=3.6)
    for colour, (name, points) in zip(PALETTE, series.items()):
        ax.plot(range(len(points)), [value for _, value in points], marker="o", color=colour, label=name)
    longest = max(series.values(), key=len)
    ax.set_xticks(
        range(len(longest)),
        [stamp[5:16].replace("T", " ") for stamp, _ in longest],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set(ylim=(0, 1.05), ylabel="score", title=f"Metric trend over the last {len(longest)} runs")
    ax.legend(fontsize=8, frameon=False, loc="lower left", ncol=2)
    return _png(fig)


def plot_reasons(reasons: Sequence[tuple[str, int]]) -> bytes | None:
    if not reasons:
        return None
    shown = list(reversed(reasons[:10]))
    fig, ax = _figure(width=6, height=max(2.4, 0.42 * len(shown) + 1.2))
    ax.barh([label[:60] for label, _ in shown], [count for _, count in shown], color=PALETTE[2])
    for position, (_, count) in enumerate(shown):
        ax.annotate(str(count), (count, position), textcoords="offset points", xytext=(3, -3), fontsize=8)
    ax.set(xlabel="escalated questions", title="Escalation reasons")
    _integer_x(ax)
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def plot_gaps(gaps: Sequence[tuple[str, list[dict[str, Any]]]]) -> bytes | None:
    if not gaps:
        return None
    shown = list(reversed(gaps[:12]))
    fig, ax = _figure(width=6, height=max(2.4, 0.42 * len(shown) + 1.2))
    ax.barh([topic[:50] for topic, _ in shown], [len(rows) for _, rows in shown], color=PALETTE[4])
    ax.set(xlabel="questions without a good source", title="Gaps by topic")
    _integer_x(ax)
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def render_plots(report: Report, history: Sequence[Report]) -> dict[str, bytes]:
    """Every plot that has data, by file stem."""
    report = EvalReport.of(report)
    rows = report.per_case
    plots = {
        "calibration": plot_calibration(report),
        "confidence": plot_confidence_histogram(report),
        "trend": plot_trend(history),
        "escalation-reasons": plot_reasons(escalation_reasons(rows)),
        "knowledge-gaps": plot_gaps(knowledge_gaps(rows)),
    }
    return {name: png for name, png in plots.items() if png}


# ------------------------------------------------------------------------------ Markdown


FOLLOWUP_COLUMNS = (
    ("hit@k", "hit@k"),
    ("mrr@k", "MRR@k"),
    ("answered_when_answerable", "answered when answerable"),
    ("escalated_when_unanswerable", "escalated when unanswerable"),
    ("correctness", "correctness"),
)


def followup_rows(report: EvalReport) -> list[tuple[str, dict[str, Any]]]:
    """(label, figures) for single-turn questions, follow-ups, and each kind of follow-up; empty
    when the set has no follow-up (the report then looks as before)."""
    section = report.followups or {}
    if not section:
        return []
    rows = [
        ("single-turn questions", section.get("single_turn") or {}),
        ("follow-ups in a thread", section.get("followup") or {}),
    ]
    return rows + [(f"follow-up: {kind}", figures) for kind, figures in (section.get("by_kind") or {}).items()]


def thread_text(row: dict[str, Any], limit: int = 160) -> str:
    """The thread before a follow-up, one short quote per turn."""
    return " → ".join(f"{turn.get('role')}: {_short(turn.get('text'), limit)}" for turn in row.get("history") or [])


def _md(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _short(text: str | None, limit: int = 400) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(report: EvalReport) -> str:
    dataset = Path(report.config.dataset or "dataset").name
    return f"Eval report: {dataset}"


def _config_line(report: EvalReport) -> str:
    config = report.config
    commit = (report.git_commit or "no git")[:12]
    return (
        f"{report.cases} cases · k={report.k} · mode {config.mode} · generator "
        f"{config.generator} · knowledge {config.kb or 'configured index'} · {report.timestamp} · {commit}"
    )


def render_markdown(report: Report, changes: Sequence[Change] = (), plots: Sequence[str] = (), limit: int = 6) -> str:
    """The report as Markdown; `plots` are the PNG file names written beside it."""
    report = EvalReport.of(report)
    rows = report.per_case
    lines = [
        f"# {_title(report)}",
        "",
        _config_line(report),
        "",
        "## Headline metrics",
        "",
        "| metric | value | baseline | change | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in headline_rows(report, changes):
        flag = " **regressed**" if row["regressed"] else ""
        delta = f"{row['delta']:+.3f}{flag}" if row["delta"] is not None else ""
        lines.append(
            f"| {row['label']} | {format_value(row['value'])} | {format_value(row['baseline']) if row['baseline'] is not None else ''} | {delta} | {row['meaning']} |"
        )
    lines += ["", usage_summary(report.usage), ""]
    followups = followup_rows(report)
    if followups:
        lines += [
            "## Single-turn and follow-up questions",
            "",
            "| questions | cases | " + " | ".join(label for _, label in FOLLOWUP_COLUMNS) + " |",
            "| --- | --- | " + " | ".join("---" for _ in FOLLOWUP_COLUMNS) + " |",
        ]
        lines += [
            f"| {_md(label)} | {figures.get('cases', 0)} | "
            + " | ".join(format_value(figures.get(key)) for key, _ in FOLLOWUP_COLUMNS)
            + " |"
            for label, figures in followups
        ]
        lines.append("")
    for name in plots:
        lines += [f"![{name}]({name}.png)", ""]
    threshold = threshold_summary(report.threshold_advice)
    lines += ["## Escalation threshold", "", _md(calibration_summary(report.self_calibration)), ""]
    if threshold:
        lines += [_md(threshold), ""]
    reasons = escalation_reasons(rows)
    if reasons:
        lines += ["## Why the bot escalated", ""] + [f"- {count} × {_md(label)}" for label, count in reasons] + [""]
    gaps = knowledge_gaps(rows)
    lines += ["## Knowledge gaps", ""]
    if not gaps:
        lines += ["No question lacked a good source.", ""]
    for topic, members in gaps:
        lines.append(
            f"- **{_md(topic)}** ({len(members)}): " + "; ".join(_md(_short(m["question"], 120)) for m in members[:8])
        )
    lines.append("")
    for title, why, cases in worst_cases(rows, limit):
        if not cases:
            continue
        lines += [f"## {title}", "", f"_{why}_", ""]
        for row in cases:
            sources = ", ".join(f"{d['title']} ({'gold' if d['gold'] else 'not gold'})" for d in row["retrieved"][:3])
            lines += [
                f"### {row['id']}: {_md(_short(row['question'], 160))}",
                *([f"- thread: {_md(thread_text(row))}"] if row.get("history") else []),
                f"- decision: {row['decision']} (confidence {row['confidence']:.2f})"
                + (f"; reasons: {_md('; '.join(row['reasons']))}" if row["reasons"] else ""),
                f"- answer: {_md(_short(row['answer']))}",
                f"- reference: {_md(_short(row['reference_answer'])) or '(none)'}",
                f"- retrieved: {_md(sources) or '(nothing)'}",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------ HTML

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def _environment() -> jinja2.Environment:
    """Autoescape on: every question, answer and title in the report is escaped by Jinja2, not by hand."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_context(
    report: EvalReport, plots: dict[str, bytes], changes: Sequence[Change] = (), limit: int = 6
) -> dict[str, Any]:
    """Everything the HTML template shows, already formatted (plain strings: the template escapes them)."""
    rows = report.per_case
    headline = [
        {
            "label": row["label"],
            "value": format_value(row["value"]),
            "baseline": format_value(row["baseline"]) if row["baseline"] is not None else "",
            "delta": ""
            if row["delta"] is None
            else f"{row['delta']:+.3f}" + (" regressed" if row["regressed"] else ""),
            "regressed": row["regressed"],
            "meaning": row["meaning"],
        }
        for row in headline_rows(report, changes)
    ]
    gaps = [
        {
            "topic": topic,
            "count": len(members),
            "questions": [_short(m["question"], 160) for m in members[:6]],
            "more": max(len(members) - 6, 0),
        }
        for topic, members in knowledge_gaps(rows)
    ]
    sections = [
        {
            "title": title,
            "why": why,
            "cases": [
                {
                    "id": row["id"],
                    "question": row["question"],
                    "decision": row["decision"],
                    "confidence": f"{row['confidence']:.2f}",
                    "reasons": "; ".join(row["reasons"]),
                    "thread": thread_text(row) if row.get("history") else "",
                    "answer": _short(row["answer"], 700),
                    "reference": _short(row["reference_answer"], 500),
                    "sources": [
                        {"gold": d["gold"], "url": d["url"], "title": d["title"]} for d in row["retrieved"][:5]
                    ],
                }
                for row in cases
            ],
        }
        for title, why, cases in worst_cases(rows, limit)
        if cases
    ]
    return {
        "title": _title(report),
        "config_line": _config_line(report),
        "headline": headline,
        "usage": usage_summary(report.usage),
        "threshold": threshold_summary(report.threshold_advice),
        "calibration": calibration_summary(report.self_calibration),
        "followup_columns": [label for _, label in FOLLOWUP_COLUMNS],
        "followups": [
            {
                "label": label,
                "cases": figures.get("cases", 0),
                "values": [format_value(figures.get(key)) for key, _ in FOLLOWUP_COLUMNS],
            }
            for label, figures in followup_rows(report)
        ],
        "plots": {name: data_uri(png) for name, png in plots.items()},
        "gaps": gaps,
        "sections": sections,
    }


def render_html(report: Report, plots: dict[str, bytes], changes: Sequence[Change] = (), limit: int = 6) -> str:
    """One self-contained page: plots inlined as base64 PNG data URIs, no external assets."""
    context = html_context(EvalReport.of(report), plots, changes, limit)
    return _environment().get_template("report.html.j2").render(context)


# ------------------------------------------------------------------------------ files


def history_entry(report: Report) -> dict[str, Any]:
    """What the history keeps of a run: everything but the per-case rows."""
    return EvalReport.of(report).to_dict(per_case=False)


def load_history(history_dir: Path, dataset: str | None = None) -> list[EvalReport]:
    """Past reports of the same dataset (by file name), oldest first; unreadable or invalid files skipped."""
    reports = []
    for path in sorted(Path(history_dir).glob("*.json")):
        try:
            past = EvalReport.load(path)
        except (OSError, ValueError):  # json.JSONDecodeError and pydantic.ValidationError are ValueErrors
            continue
        past_dataset = past.config.dataset
        if dataset is None or (past_dataset and Path(past_dataset).name == Path(dataset).name):
            reports.append(past)
    return sorted(reports, key=lambda past: past.timestamp or "")


def write_report(report: Report, out_dir: Path, changes: Sequence[Change] = ()) -> dict[str, Path]:
    """Write report.md, report.html, the PNGs and report.json to `out_dir`; add the run to its history."""
    report = EvalReport.of(report)
    out_dir = Path(out_dir)
    history_dir = out_dir / "history"
    history_dir.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9T]", "", report.timestamp or "run")
    dataset = Path(report.config.dataset or "dataset").stem
    (history_dir / f"{stamp}-{dataset}.json").write_text(json.dumps(history_entry(report), indent=1), encoding="utf-8")
    history = load_history(history_dir, report.config.dataset)
    plots = render_plots(report, history)
    for name, png in plots.items():
        (out_dir / f"{name}.png").write_bytes(png)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "json": out_dir / "report.json"}
    paths["markdown"].write_text(render_markdown(report, changes, list(plots)), encoding="utf-8")
    paths["html"].write_text(render_html(report, plots, changes), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.to_dict(), indent=1, default=str), encoding="utf-8")
    return paths
