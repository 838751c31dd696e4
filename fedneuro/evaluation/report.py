"""The evaluation report: ``evaluation.json``, a Markdown table, and plots (matplotlib, Agg).

Plots are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot's
global state, so reporting works headless and from threads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fedneuro.atomic import write_text_atomic
from fedneuro.evaluation.metrics import CLASSIFICATION_METRICS, LOWER_IS_BETTER, METRIC_LABELS, LevelMetrics, MetricValue
from fedneuro.evaluation.protocols import EvaluationError, EvaluationReport, ProtocolResult

JSON_NAME = "evaluation.json"
MARKDOWN_NAME = "evaluation.md"
EPSILON_PLOT_NAME = "accuracy-vs-epsilon.png"
#: The metric the per-site plots, the ε plot and the per-site tables show.
HEADLINE = "balanced_accuracy"


class ReportFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    json_path: str
    markdown_path: str
    plots: list[str]


# --------------------------------------------------------------------------- JSON
def report_json(report: EvaluationReport) -> str:
    """Canonical JSON of the report: sorted keys, no NaN (undefined values are null)."""
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False)


def load_report(path: Path) -> EvaluationReport:
    """Read an ``evaluation.json`` back; a directory means its evaluation.json."""
    if path.is_dir():
        path = path / JSON_NAME
    try:
        return EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise EvaluationError(f"cannot read evaluation report {path}: {error.strerror}") from error
    except ValidationError as error:
        raise EvaluationError(f"{path} is not a fedneuro evaluation report: {error.error_count()} problem(s), "
                              f"first: {error.errors()[0]['loc']}: {error.errors()[0]['msg']}") from error


# --------------------------------------------------------------------------- Markdown
def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_metric(metric: MetricValue | None) -> str:
    """'0.912 [0.850, 0.960]', or the value alone without an interval, or '–' if undefined."""
    if metric is None or metric.value is None:
        return "–"
    if metric.ci_low is None or metric.ci_high is None:
        return _num(metric.value)
    return f"{metric.value:.3f} [{metric.ci_low:.3f}, {metric.ci_high:.3f}]"


def _epsilon(result: ProtocolResult) -> str:
    return "∞ (non-private)" if not result.private else _num(result.epsilon, 2)


def _level(metrics: LevelMetrics | None, level: str) -> object:
    if metrics is None:
        return None
    return metrics.window if level == "window" else metrics.participant


def _pooled_table(report: EvaluationReport, level: str) -> list[str]:
    header = ["protocol", "privacy", "ε"] + [METRIC_LABELS[m] for m in CLASSIFICATION_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report.results:
        metrics = _level(r.pooled, level)
        cells = [format_metric(metrics.metrics.get(m)) if metrics is not None else "–"  # type: ignore[attr-defined]
                 for m in CLASSIFICATION_METRICS]
        lines.append("| " + " | ".join([r.protocol, r.setting_label, _epsilon(r), *cells]) + " |")
    return lines


def _site_table(report: EvaluationReport, metric: str, level: str = "window") -> list[str]:
    sites = [s.name for s in report.sites]
    worst = "highest" if metric in LOWER_IS_BETTER else "lowest"
    header = ["protocol", "privacy", *sites, "mean of sites", f"worst site ({worst})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report.results:
        cells = []
        for site in sites:
            metrics = _level(r.per_site.get(site), level)
            cells.append(format_metric(metrics.metrics.get(metric)) if metrics is not None else "–")  # type: ignore[attr-defined]
        summary = r.site_summary.get(level, {}).get(metric)
        mean = _num(summary.mean) if summary else "–"
        worst_cell = f"{_num(summary.worst)} ({summary.worst_site})" if summary and summary.worst_site else "–"
        lines.append("| " + " | ".join([r.protocol, r.setting_label, *cells, mean, worst_cell]) + " |")
    return lines


def _summary_table(report: EvaluationReport) -> list[str]:
    header = ["protocol", "privacy"] + [METRIC_LABELS[m] for m in CLASSIFICATION_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report.results:
        summary = r.site_summary.get("window", {})
        cells = [f"{_num(summary[m].mean)} / {_num(summary[m].worst)} ({summary[m].worst_site})"
                 if m in summary and summary[m].worst_site else "–" for m in CLASSIFICATION_METRICS]
        lines.append("| " + " | ".join([r.protocol, r.setting_label, *cells]) + " |")
    return lines


def _cross_tables(report: EvaluationReport) -> list[str]:
    lines: list[str] = []
    for r in report.results:
        if not r.cross_site:
            continue
        scored = [s.name for s in report.sites]
        lines += ["", f"**{r.protocol}, {r.setting_label}** — {METRIC_LABELS[HEADLINE]} (windows); "
                  "rows: trained at, columns: scored at", "",
                  "| trained at | " + " | ".join(scored) + " |", "|" + "---|" * (len(scored) + 1)]
        for trained, row in r.cross_site.items():
            lines.append(f"| {trained} | " + " | ".join(
                format_metric(row[s].window.metrics.get(HEADLINE)) if s in row else "–" for s in scored) + " |")
    return lines


def markdown(report: EvaluationReport, *, plots: Sequence[str] = ()) -> str:
    """The human-readable report (GitHub Markdown)."""
    cfg = report.config
    lines = [
        f"# Evaluation of study `{report.study_id}`",
        "",
        f"Backbone `{report.backbone}`, {report.n_classes} classes. Each baseline model trains "
        f"{report.rounds} round(s) × {report.local_epochs} local epoch(s) with the study's optimiser"
        + (" (**--quick: a smoke test, not a result**)" if report.quick else "") + ". "
        f"Intervals: {cfg.confidence:.0%} percentile bootstrap over participants "
        f"({cfg.n_boot} resamples, seed {cfg.seed}); every protocol uses the same resamples at a site. "
        f"ECE: top-label, {cfg.n_bins} equal-width bins.",
        "",
        "## Sites",
        "",
        "| site | train participants | test participants | train windows | test windows | excluded (consent, label) |",
        "|---|---|---|---|---|---|",
        *[f"| {s.name} | {s.train_participants} | {s.test_participants} | {s.train_windows} | {s.test_windows} | "
          f"{s.excluded_participants} |" for s in report.sites],
        "",
        "## Pooled test participants — per window",
        "",
        *_pooled_table(report, "window"),
        "",
        "## Pooled test participants — per participant (mean probability over their windows)",
        "",
        *_pooled_table(report, "participant"),
        "",
        "## Per site — mean of sites / worst site (windows)",
        "",
        *_summary_table(report),
        "",
        f"## Per site — {METRIC_LABELS[HEADLINE]} (windows)",
        "",
        *_site_table(report, HEADLINE),
        "",
        "## Per site — AUROC (windows)",
        "",
        *_site_table(report, "auroc"),
    ]
    cross = _cross_tables(report)
    if cross:
        lines += ["", "## Local-only models on every site", *cross]
    lines += ["", "## Privacy", "",
              "| protocol | privacy | model trained on | steps | σ | C | q | ε | δ | accountant |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.results:
        for m in r.models:
            lines.append(
                f"| {r.protocol} | {r.setting_label} | {', '.join(m.trained_on)} | {m.steps} | "
                f"{_num(m.noise_multiplier, 3)} | {_num(m.max_grad_norm, 3)} | {_num(m.sample_rate, 3)} | "
                f"{'∞' if not m.private else _num(m.epsilon, 2)} | {'–' if m.delta is None else f'{m.delta:g}'} | "
                f"{m.accountant or '–'} |")
    notes = [f"- {r.protocol} ({r.setting_label}): {note}" for r in report.results for note in r.notes]
    degenerate = [
        f"- {r.protocol} ({r.setting_label}) at {site}: {lm.window.bootstrap.n_degenerate} of "
        f"{lm.window.bootstrap.n_boot} resamples lacked a class and were skipped"
        for r in report.results for site, lm in r.per_site.items()
        if lm.window.bootstrap is not None and lm.window.bootstrap.n_degenerate
    ]
    if notes or degenerate:
        lines += ["", "## Notes", "", *notes, *degenerate]
    if plots:
        lines += ["", "## Plots", "", *[f"![{Path(p).stem}]({Path(p).name})" for p in plots]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def plot_per_site(result: ProtocolResult, path: Path, *, n_classes: int) -> Path:
    """Bars of balanced accuracy and AUROC per site (+ pooled) with their intervals."""
    labels = [*result.per_site, "pooled"]
    sets = [*result.per_site.values(), result.pooled]
    fig = _figure(max(4.5, 1.3 * len(labels) + 1.5), 3.4)
    ax = fig.add_subplot()
    width = 0.38
    for k, (metric, color) in enumerate((("balanced_accuracy", "#4477aa"), ("auroc", "#ee7733"))):
        labelled = False
        for i, level_metrics in enumerate(sets):
            value = level_metrics.window.metrics.get(metric) if level_metrics is not None else None
            if value is None or value.value is None:
                continue
            err = None
            if value.ci_low is not None and value.ci_high is not None:
                err = [[max(0.0, value.value - value.ci_low)], [max(0.0, value.ci_high - value.value)]]
            ax.bar(i + (k - 0.5) * width, value.value, width, yerr=err, capsize=3, color=color,
                   label=None if labelled else METRIC_LABELS[metric])
            labelled = True
    ax.axhline(1.0 / n_classes, color="grey", linestyle="--", linewidth=1, label="chance (balanced accuracy)")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylim(0, 1.25)  # headroom for the legend above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("test participants' windows")
    ax.set_title(f"{result.protocol} — {result.setting_label}", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def epsilon_points(report: EvaluationReport) -> dict[str, list[tuple[float, float, float | None, float | None]]]:
    """protocol → [(ε, pooled balanced accuracy, CI low, CI high)] of its private runs, sorted by ε."""
    points: dict[str, list[tuple[float, float, float | None, float | None]]] = {}
    for r in report.results:
        metric = r.pooled.window.metrics.get(HEADLINE) if r.pooled else None
        if r.private and r.epsilon is not None and metric is not None and metric.value is not None:
            points.setdefault(r.protocol, []).append((r.epsilon, metric.value, metric.ci_low, metric.ci_high))
    return {p: sorted(v) for p, v in points.items()}


def wants_epsilon_plot(report: EvaluationReport) -> bool:
    """Several DP settings (an ε sweep, or federated runs beside DP baselines) make a curve worth drawing."""
    settings = {r.source if r.protocol == "federated" else r.setting
                for r in report.results if r.private and r.epsilon is not None}
    return len(settings) >= 2


def plot_accuracy_vs_epsilon(report: EvaluationReport, path: Path) -> Path:
    """Pooled balanced accuracy against ε per protocol; non-private runs as dashed lines (ε = ∞)."""
    fig = _figure(7.5, 3.6)
    ax = fig.add_subplot()
    colors: dict[str, str] = {}
    palette = ["#4477aa", "#ee7733", "#228833", "#aa3377", "#66ccee", "#ccbb44"]
    for protocol, points in epsilon_points(report).items():
        color = colors.setdefault(protocol, palette[len(colors) % len(palette)])
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        low = [max(0.0, p[1] - p[2]) if p[2] is not None else 0.0 for p in points]
        high = [max(0.0, p[3] - p[1]) if p[3] is not None else 0.0 for p in points]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=color, label=protocol)
    for r in report.results:
        metric = r.pooled.window.metrics.get(HEADLINE) if r.pooled else None
        if not r.private and metric is not None and metric.value is not None:
            color = colors.setdefault(r.protocol, palette[len(colors) % len(palette)])
            ax.axhline(metric.value, color=color, linestyle="--", linewidth=1, label=f"{r.protocol}, non-private")
    ax.axhline(1.0 / report.n_classes, color="grey", linestyle=":", linewidth=1, label="chance")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sorted({round(p[0], 2) for points in epsilon_points(report).values() for p in points}))
    ax.set_xlabel("ε (participant-level, largest over a protocol's models)")
    ax.set_ylabel(f"pooled {METRIC_LABELS[HEADLINE]}")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_report(report: EvaluationReport, out_dir: Path) -> ReportFiles:
    """Write evaluation.json, the per-site plots, the ε plot (when several DP settings) and evaluation.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    used: set[str] = set()
    for r in report.results:
        stem = f"per-site-{_slug(r.protocol)}-{_slug(r.setting)}"
        name, n = stem, 2
        while name in used:  # two federated runs with the same setting
            name, n = f"{stem}-{n}", n + 1
        used.add(name)
        plots.append(plot_per_site(r, out_dir / f"{name}.png", n_classes=report.n_classes))
    if wants_epsilon_plot(report):
        plots.append(plot_accuracy_vs_epsilon(report, out_dir / EPSILON_PLOT_NAME))
    json_path, md_path = out_dir / JSON_NAME, out_dir / MARKDOWN_NAME
    write_text_atomic(json_path, report_json(report))
    write_text_atomic(md_path, markdown(report, plots=[p.name for p in plots]))
    return ReportFiles(json_path=str(json_path), markdown_path=str(md_path), plots=[str(p) for p in plots])
