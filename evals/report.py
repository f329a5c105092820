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
import html
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from evals.compare import Change

HEADLINE = [
    ("retrieval", "hit@k", "Retrieval hit@k", "a gold document in the top k"),
    ("retrieval", "recall@k", "Retrieval recall@k", "share of gold documents in the top k"),
    ("retrieval", "mrr@k", "Retrieval MRR@k", "1 / rank of the first gold document"),
    ("retrieval", "ndcg@k", "Retrieval nDCG@k", "rank-weighted recall"),
    ("answer", "faithfulness", "Faithfulness", "answer sentences backed by a verified citation"),
    ("answer", "correctness", "Correctness (token F1)", "overlap with the reference answer"),
    ("answer", "correctness_cosine", "Correctness (cosine)", "embedding similarity to the reference"),
    ("answer", "correctness_judge", "Correctness (LLM judge)", "Claude's grade against the reference"),
    ("escalation", "auroc", "Escalation AUROC", "confidence separates answerable from not"),
    ("escalation", "precision", "Escalation precision", "escalations that were unanswerable"),
    ("escalation", "recall", "Escalation recall", "unanswerable questions escalated"),
    ("escalation", "escalation_rate", "Escalation rate", "share of questions escalated"),
    ("escalation", "answered_when_answerable", "Answered when answerable", "answerable questions not escalated"),
    ("latency_ms", "p50", "Latency p50 (ms)", "end to end, per question"),
    ("latency_ms", "p95", "Latency p95 (ms)", ""),
]
TREND = [("retrieval", "hit@k"), ("retrieval", "mrr@k"), ("answer", "faithfulness"), ("answer", "correctness"),
         ("escalation", "auroc")]
PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"]


# ------------------------------------------------------------------------------ analysis (pure)


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def usage_summary(usage: dict[str, Any]) -> str:
    """The bot's tokens and cost, then the LLM judge's (an eval cost, not the bot's) when it ran."""
    text = (f"Tokens: {usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out; cost "
            f"${usage.get('cost_usd', 0):.4f} (${usage.get('cost_per_case_usd', 0):.5f} per question).")
    judge = usage.get("judge") or {}
    if judge.get("calls"):
        failed = f", {judge['failed']} failed" if judge.get("failed") else ""
        text += (f" LLM judge: {judge['calls']} calls{failed}, {judge.get('input_tokens', 0)} in, "
                 f"{judge.get('output_tokens', 0)} out, ${judge.get('cost_usd', 0):.4f}.")
    return text


def threshold_summary(advice: dict[str, Any] | None) -> str | None:
    """One paragraph on the escalation threshold: what it does on this eval set and where it should sit."""
    if not advice or advice.get("suggested") is None:
        return None
    low_escalated, low_answered = advice["targets"]
    text = (f"At the escalation threshold {advice['current']:.2f}, {advice['escalated']:.0%} of unanswerable questions "
            f"were escalated and {advice['answered']:.0%} of answerable ones answered (targets {low_escalated:.0%} "
            f"and {low_answered:.0%}). ")
    escalated, answered = advice["suggested_rates"]
    if advice["meeting"]:
        low, high = advice["meeting"]
        if low == high:
            return text + f"Only {low:.2f} meets both ({escalated:.0%} / {answered:.0%})."
        return text + (f"Thresholds {low:.2f} to {high:.2f} meet both; {advice['suggested']:.2f} leaves the most room "
                       f"({escalated:.0%} / {answered:.0%}).")
    return text + (f"No threshold meets both on this set; {advice['suggested']:.2f} comes closest ({escalated:.0%} / "
                   f"{answered:.0%}). The confidence signals, not the threshold, need work.")


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
        ("Answered, but the knowledge does not cover it", "the bot should have escalated these", confidently_wrong[:limit]),
        ("Escalated, but the knowledge answers it", "needless work for the support team", missed[:limit]),
        ("Weakest answers", "lowest overlap with the reference answer", weakest[:limit]),
    ]


def headline_rows(report: dict[str, Any], changes: Sequence[Change] = ()) -> list[dict[str, Any]]:
    by_metric = {change.metric: change for change in changes}
    rows = []
    for group, name, label, meaning in HEADLINE:
        value = (report.get(group) or {}).get(name)
        if value is None and group != "retrieval":
            continue
        change = by_metric.get(f"{group}.{name}")
        rows.append({
            "label": label.replace("@k", f"@{report.get('k', 'k')}"), "value": value, "meaning": meaning,
            "baseline": change.baseline if change else None, "delta": change.delta if change else None,
            "regressed": bool(change and change.regressed),
        })
    return rows


def trend_series(history: Sequence[dict[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    series: dict[str, list[tuple[str, float]]] = {}
    for past in sorted(history, key=lambda report: report.get("timestamp", "")):
        for group, name in TREND:
            value = (past.get(group) or {}).get(name)
            if isinstance(value, (int, float)):
                series.setdefault(f"{group}.{name}", []).append((past.get("timestamp", "?"), float(value)))
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


def plot_calibration(report: dict[str, Any]) -> bytes | None:
    """Reliability diagram: per confidence bin, the share of questions that were answerable."""
    rows = report.get("per_case") or []
    if not rows:
        return None
    bins = (report.get("calibration") or {}).get("bins") or []
    config = report.get("config") or {}
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", label="perfect calibration")
    if bins:
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        ax.bar(centres, [b["observed"] for b in bins], width=0.09, color=PALETTE[0], alpha=0.75,
               label="observed share answerable")
        ax.plot([b["mean_confidence"] for b in bins], [b["observed"] for b in bins], "o", color=PALETTE[0])
        for centre, b in zip(centres, bins):
            ax.annotate(f"n={b['count']}", (centre, b["observed"]), textcoords="offset points", xytext=(0, 4),
                        ha="center", fontsize=7, color="#374151")
    for key, label, colour in (("caveat_threshold", "caveat", PALETTE[2]), ("answer_threshold", "answer", PALETTE[1])):
        if isinstance(config.get(key), (int, float)):
            ax.axvline(config[key], color=colour, linewidth=1.5, label=f"{label} threshold {config[key]:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.12), xlabel="bot confidence", ylabel="share answerable",
           title="Reliability: is confidence the chance of being answerable?")
    ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.9)
    return _png(fig)


def plot_confidence_histogram(report: dict[str, Any]) -> bytes | None:
    """Confidence of answerable vs unanswerable questions: the gap the thresholds must fall in."""
    rows = report.get("per_case") or []
    if not rows:
        return None
    config = report.get("config") or {}
    fig, ax = _figure()
    edges = [i / 20 for i in range(21)]
    ax.hist([r["confidence"] for r in rows if r["answerable"]], bins=edges, alpha=0.7, color=PALETTE[1], label="answerable")
    unanswerable = [r["confidence"] for r in rows if not r["answerable"]]
    if unanswerable:
        ax.hist(unanswerable, bins=edges, alpha=0.7, color=PALETTE[4], label="not answerable")
    for key, colour in (("caveat_threshold", PALETTE[2]), ("answer_threshold", PALETTE[1])):
        if isinstance(config.get(key), (int, float)):
            ax.axvline(config[key], color=colour, linewidth=1.5)
    ax.set(xlim=(0, 1), xlabel="bot confidence", ylabel="questions",
           title="Confidence by ground truth (lines: caveat / answer thresholds)")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def plot_trend(history: Sequence[dict[str, Any]]) -> bytes | None:
    series = trend_series(history)
    if not series or max(len(points) for points in series.values()) < 2:
        return None
    fig, ax = _figure(width=10, height=3.6)
    for colour, (name, points) in zip(PALETTE, series.items()):
        ax.plot(range(len(points)), [value for _, value in points], marker="o", color=colour, label=name)
    longest = max(series.values(), key=len)
    ax.set_xticks(range(len(longest)), [stamp[5:16].replace("T", " ") for stamp, _ in longest], rotation=30, ha="right", fontsize=8)
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


def render_plots(report: dict[str, Any], history: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """Every plot that has data, by file stem."""
    rows = report.get("per_case") or []
    plots = {
        "calibration": plot_calibration(report),
        "confidence": plot_confidence_histogram(report),
        "trend": plot_trend(history),
        "escalation-reasons": plot_reasons(escalation_reasons(rows)),
        "knowledge-gaps": plot_gaps(knowledge_gaps(rows)),
    }
    return {name: png for name, png in plots.items() if png}


# ------------------------------------------------------------------------------ Markdown


FOLLOWUP_COLUMNS = (("hit@k", "hit@k"), ("mrr@k", "MRR@k"), ("answered_when_answerable", "answered when answerable"),
                    ("escalated_when_unanswerable", "escalated when unanswerable"), ("correctness", "correctness"))


def followup_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, figures) for single-turn questions, follow-ups, and each kind of follow-up; empty
    when the set has no follow-up (the report then looks as before)."""
    section = report.get("followups") or {}
    if not section:
        return []
    rows = [("single-turn questions", section.get("single_turn") or {}), ("follow-ups in a thread", section.get("followup") or {})]
    return rows + [(f"follow-up: {kind}", figures) for kind, figures in (section.get("by_kind") or {}).items()]


def thread_text(row: dict[str, Any], limit: int = 160) -> str:
    """The thread before a follow-up, one short quote per turn."""
    return " → ".join(f"{turn.get('role')}: {_short(turn.get('text'), limit)}" for turn in row.get("history") or [])


def _md(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _short(text: str | None, limit: int = 400) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(report: dict[str, Any]) -> str:
    config = report.get("config") or {}
    dataset = Path(config.get("dataset") or "dataset").name
    return f"Eval report: {dataset}"


def _config_line(report: dict[str, Any]) -> str:
    config = report.get("config") or {}
    commit = (report.get("git_commit") or "no git")[:12]
    return (f"{report.get('cases')} cases · k={report.get('k')} · mode {config.get('mode')} · generator "
            f"{config.get('generator')} · knowledge {config.get('kb') or 'configured index'} · {report.get('timestamp')} · {commit}")


def render_markdown(
    report: dict[str, Any], changes: Sequence[Change] = (), plots: Sequence[str] = (), limit: int = 6
) -> str:
    """The report as Markdown; `plots` are the PNG file names written beside it."""
    rows = report.get("per_case") or []
    lines = [f"# {_title(report)}", "", _config_line(report), "", "## Headline metrics", "",
             "| metric | value | baseline | change | meaning |", "| --- | --- | --- | --- | --- |"]
    for row in headline_rows(report, changes):
        flag = " **regressed**" if row["regressed"] else ""
        delta = f"{row['delta']:+.3f}{flag}" if row["delta"] is not None else ""
        lines.append(f"| {row['label']} | {format_value(row['value'])} | {format_value(row['baseline']) if row['baseline'] is not None else ''} | {delta} | {row['meaning']} |")
    lines += ["", usage_summary(report.get("usage") or {}), ""]
    followups = followup_rows(report)
    if followups:
        lines += ["## Single-turn and follow-up questions", "",
                  "| questions | cases | " + " | ".join(label for _, label in FOLLOWUP_COLUMNS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in FOLLOWUP_COLUMNS) + " |"]
        lines += [f"| {_md(label)} | {figures.get('cases', 0)} | "
                  + " | ".join(format_value(figures.get(key)) for key, _ in FOLLOWUP_COLUMNS) + " |"
                  for label, figures in followups]
        lines.append("")
    for name in plots:
        lines += [f"![{name}]({name}.png)", ""]
    threshold = threshold_summary(report.get("threshold_advice"))
    if threshold:
        lines += ["## Escalation threshold", "", _md(threshold), ""]
    reasons = escalation_reasons(rows)
    if reasons:
        lines += ["## Why the bot escalated", ""] + [f"- {count} × {_md(label)}" for label, count in reasons] + [""]
    gaps = knowledge_gaps(rows)
    lines += ["## Knowledge gaps", ""]
    if not gaps:
        lines += ["No question lacked a good source.", ""]
    for topic, members in gaps:
        lines.append(f"- **{_md(topic)}** ({len(members)}): " + "; ".join(_md(_short(m["question"], 120)) for m in members[:8]))
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

CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#111827;margin:0;background:#f9fafb}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#6b7280;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
th,td{border:1px solid #e5e7eb;padding:6px 10px;text-align:left;vertical-align:top}th{background:#f3f4f6}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.bad{color:#b91c1c;font-weight:600}.good{color:#15803d}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
figure{margin:0;background:#fff;border:1px solid #e5e7eb;padding:8px}figure img{width:100%;height:auto}
.case{background:#fff;border:1px solid #e5e7eb;border-left:4px solid #dc2626;padding:10px 14px;margin:10px 0}
.case .q{font-weight:600}.case .lbl{color:#6b7280;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.pill{display:inline-block;border-radius:9px;padding:0 8px;font-size:12px;background:#e5e7eb;margin-right:4px}
.pill.gold{background:#dcfce7}.pill.miss{background:#fee2e2}
"""


def _e(text: Any) -> str:
    return html.escape(str(text if text is not None else ""))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _paragraph(text: str | None) -> str:
    return f"<p>{_e(text)}</p>" if text else ""


def _figure_html(plots: dict[str, bytes], name: str, alt: str) -> str:
    return f'<figure><img alt="{_e(alt)}" src="{data_uri(plots[name])}"></figure>' if name in plots else ""


def _headline_html(row: dict[str, Any]) -> str:
    baseline = format_value(row["baseline"]) if row["baseline"] is not None else ""
    delta = "" if row["delta"] is None else f"{row['delta']:+.3f}" + (" regressed" if row["regressed"] else "")
    return (
        f'<tr><td>{_e(row["label"])}</td><td class="num">{_e(format_value(row["value"]))}</td>'
        f'<td class="num">{_e(baseline)}</td><td class="num{" bad" if row["regressed"] else ""}">{_e(delta)}</td>'
        f'<td class="meta">{_e(row["meaning"])}</td></tr>'
    )


def _case_html(row: dict[str, Any]) -> str:
    sources = "".join(
        f'<span class="pill {"gold" if d["gold"] else "miss"}" title="{_e(d["url"])}">{_e(d["title"])}</span>'
        for d in row["retrieved"][:5]
    ) or "<em>nothing retrieved</em>"
    reasons = f" · {_e('; '.join(row['reasons']))}" if row["reasons"] else ""
    thread = f'<div class="meta">thread: {_e(thread_text(row))}</div>' if row.get("history") else ""
    return (
        f'<div class="case"><div class="q">{_e(row["id"])}: {_e(row["question"])}</div>'
        f'{thread}<div class="meta">{_e(row["decision"])} · confidence {row["confidence"]:.2f}{reasons}</div>'
        f'<div class="lbl">answer</div><div>{_e(_short(row["answer"], 700))}</div>'
        f'<div class="lbl">reference</div><div>{_e(_short(row["reference_answer"], 500)) or "<em>none</em>"}</div>'
        f'<div class="lbl">retrieved (green = gold)</div><div>{sources}</div></div>'
    )


def render_html(
    report: dict[str, Any], plots: dict[str, bytes], changes: Sequence[Change] = (), limit: int = 6
) -> str:
    """One self-contained page: plots inlined as base64 PNG data URIs, no external assets."""
    rows = report.get("per_case") or []
    table = "".join(_headline_html(row) for row in headline_rows(report, changes))
    usage = report.get("usage") or {}
    gaps = knowledge_gaps(rows)
    gap_rows = "".join(
        f'<tr><td>{_e(topic)}</td><td class="num">{len(members)}</td><td>'
        + "<br>".join(_e(_short(m["question"], 160)) for m in members[:6])
        + (f"<br><em>… and {len(members) - 6} more</em>" if len(members) > 6 else "") + "</td></tr>"
        for topic, members in gaps
    )
    sections = "".join(
        f"<h2>{_e(title)}</h2><p class='meta'>{_e(why)}</p>" + "".join(_case_html(row) for row in cases)
        for title, why, cases in worst_cases(rows, limit) if cases
    )
    followups = "".join(
        f"<tr><td>{_e(label)}</td><td class='num'>{figures.get('cases', 0)}</td>"
        + "".join(f"<td class='num'>{_e(format_value(figures.get(key)))}</td>" for key, _ in FOLLOWUP_COLUMNS) + "</tr>"
        for label, figures in followup_rows(report)
    )
    followup_table = (
        "<h2>Single-turn and follow-up questions</h2><table><tr><th>questions</th><th>cases</th>"
        + "".join(f"<th>{_e(label)}</th>" for _, label in FOLLOWUP_COLUMNS) + f"</tr>{followups}</table>"
    ) if followups else ""
    trend = _figure_html(plots, "trend", "metric trend") or "<p class='meta'>The trend appears from the second run on (history folder).</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(_title(report))}</title><style>{CSS}</style></head>
<body><main>
<h1>{_e(_title(report))}</h1><div class="meta">{_e(_config_line(report))}</div>
<h2>Headline metrics</h2>
<table><tr><th>metric</th><th>value</th><th>baseline</th><th>change</th><th>meaning</th></tr>{table}</table>
<p class="meta">{_e(usage_summary(usage))}</p>
{followup_table}
<h2>Confidence calibration</h2>
<div class="grid">{_figure_html(plots, "calibration", "reliability diagram")}{_figure_html(plots, "confidence", "confidence histogram")}</div>
{_paragraph(threshold_summary(report.get("threshold_advice")))}
<h2>Trend</h2>{trend}
<div class="grid"><div><h2>Why the bot escalated</h2>
{_figure_html(plots, "escalation-reasons", "escalation reasons") or "<p>No escalations.</p>"}</div>
<div><h2>Knowledge gaps</h2>
{_figure_html(plots, "knowledge-gaps", "knowledge gaps by topic") or "<p>No knowledge gaps.</p>"}</div></div>
<p class="meta">Knowledge gaps are questions with no good source: not answerable from the knowledge, or retrieval found no gold document; grouped by the topic of the best retrieved document.</p>
<table><tr><th>topic</th><th>questions</th><th>examples</th></tr>{gap_rows or '<tr><td colspan="3">No question lacked a good source.</td></tr>'}</table>
{sections}
</main></body></html>
"""


# ------------------------------------------------------------------------------ files


def history_entry(report: dict[str, Any]) -> dict[str, Any]:
    """What the history keeps of a run: everything but the per-case rows."""
    return {key: value for key, value in report.items() if key != "per_case"}


def load_history(history_dir: Path, dataset: str | None = None) -> list[dict[str, Any]]:
    """Past reports of the same dataset (by file name), oldest first; unreadable files skipped."""
    reports = []
    for path in sorted(Path(history_dir).glob("*.json")):
        try:
            past = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        past_dataset = (past.get("config") or {}).get("dataset")
        if dataset is None or (past_dataset and Path(past_dataset).name == Path(dataset).name):
            reports.append(past)
    return sorted(reports, key=lambda past: past.get("timestamp", ""))


def write_report(report: dict[str, Any], out_dir: Path, changes: Sequence[Change] = ()) -> dict[str, Path]:
    """Write report.md, report.html, the PNGs and report.json to `out_dir`; add the run to its history."""
    out_dir = Path(out_dir)
    history_dir = out_dir / "history"
    history_dir.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9T]", "", report.get("timestamp", "run"))
    dataset = Path((report.get("config") or {}).get("dataset") or "dataset").stem
    (history_dir / f"{stamp}-{dataset}.json").write_text(json.dumps(history_entry(report), indent=1), encoding="utf-8")
    history = load_history(history_dir, (report.get("config") or {}).get("dataset"))
    plots = render_plots(report, history)
    for name, png in plots.items():
        (out_dir / f"{name}.png").write_bytes(png)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "json": out_dir / "report.json"}
    paths["markdown"].write_text(render_markdown(report, changes, list(plots)), encoding="utf-8")
    paths["html"].write_text(render_html(report, plots, changes), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return paths
