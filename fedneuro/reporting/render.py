"""The ethics report as files: ``report.json`` and a self-contained ``report.html``.

The HTML is rendered with Jinja2 (autoescaped) from the same :class:`EthicsReport` as the
JSON; its plots are drawn with matplotlib's Agg canvas on ``matplotlib.figure.Figure``
(never pyplot's global state) and embedded as base64 PNG, so the page needs no other file,
no network and no JavaScript.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from fedneuro.atomic import write_text_atomic
from fedneuro.reporting.ethics import EthicsReport, MetricsSection, NotAvailable, SiteConsent, SitePrivacy

JSON_NAME = "report.json"
HTML_NAME = "report.html"
TEMPLATE = "ethics.html.j2"
#: Every section of the HTML page, in order (the ids a reader can link to).
SECTION_IDS = (
    "overview", "findings", "trust-model", "privacy", "participants", "consent", "approvals",
    "audit-chain", "membership-audit", "model-metrics", "inputs",
)


class Plot(NamedTuple):
    id: str
    title: str
    uri: str | None  # data:image/png;base64,...
    reason: str | None  # why there is no plot


def report_json(report: EthicsReport) -> str:
    """The report as JSON: no NaN or infinity (undefined numbers are null)."""
    return json.dumps(_finite(report.model_dump(mode="json")), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_report(report: EthicsReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (atomically); return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    write_text_atomic(json_path, report_json(report))
    write_text_atomic(html_path, render_html(report))
    return json_path, html_path


def render_html(report: EthicsReport) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("fedneuro.reporting", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(num=_fmt_num, sci=_fmt_sci, nums=_fmt_list)
    env.tests["na"] = lambda value: isinstance(value, NotAvailable)
    plots = {p.id: p for p in draw_plots(report)}
    ledgers = [s for s in report.sites if isinstance(s.privacy, SitePrivacy) and s.privacy.per_round]
    epsilon_rounds = sorted({p.round for s in ledgers for p in s.privacy.per_round})  # type: ignore[union-attr]
    return env.get_template(TEMPLATE).render(r=report, plots=plots, ledgers=ledgers, epsilon_rounds=epsilon_rounds)


def _fmt_num(value: float | int | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _fmt_sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _fmt_list(values: list[float] | list[int], digits: int = 4) -> str:
    return ", ".join(f"{v:.{digits}g}" for v in values) if values else "–"


# --------------------------------------------------------------------------- plots
def draw_plots(report: EthicsReport) -> list[Plot]:
    drawers: list[tuple[str, str, Callable[[EthicsReport], Any]]] = [
        ("plot-epsilon", "ε per site over rounds (cumulative)", _epsilon_plot),
        ("plot-participants", "Participants per site", _participants_plot),
        ("plot-consent", "Consent coverage and exclusion reasons", _consent_plot),
        ("plot-metrics", "Model metrics per round", _metrics_plot),
    ]
    plots = []
    for plot_id, title, draw in drawers:
        figure = draw(report)
        if isinstance(figure, str):
            plots.append(Plot(plot_id, title, None, figure))
        else:
            plots.append(Plot(plot_id, title, _png_uri(figure), None))
    return plots


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _png_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _epsilon_plot(report: EthicsReport) -> Any:
    series = [(s.name, s.privacy) for s in report.sites
              if isinstance(s.privacy, SitePrivacy) and s.privacy.per_round]
    if not series:
        return "no site's privacy ledger could be read, so ε cannot be recomputed per round"
    figure = _figure(7.5, 3.6)
    ax = figure.add_subplot()
    for index, (name, privacy) in enumerate(series):
        color = f"C{index % 10}"
        rounds = [p.round for p in privacy.per_round]
        ax.plot(rounds, [p.epsilon for p in privacy.per_round], marker="o", color=color, label=f"{name} (recomputed)")
        reported = [(p.round, p.reported) for p in privacy.per_round if p.reported is not None]
        if reported:
            ax.scatter(*zip(*reported), marker="x", s=60, color=color, zorder=3,
                       label=f"{name} (reported)" if index == 0 else None)
        if privacy.budget is not None:
            ax.axhline(privacy.budget, color=color, linestyle=":", linewidth=1)
    ax.set(xlabel="round", ylabel="ε", title=f"δ = {series[0][1].delta:g}; crosses: values reported in summary.json")
    ax.set_ylim(bottom=0)
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return figure


def _participants_plot(report: EthicsReport) -> Any:
    rows = []
    for site in report.sites:
        privacy = site.privacy if isinstance(site.privacy, SitePrivacy) else None
        consent = site.consent if isinstance(site.consent, SiteConsent) else None
        rows.append((site.name, privacy.training_participants if privacy else None,
                     privacy.test_participants if privacy else None, consent.eligible if consent else None))
    if not any(any(v is not None for v in row[1:]) for row in rows):
        return "no participant counts: summary.json and the consent registries are not available"
    figure = _figure(7.5, 3.2)
    ax = figure.add_subplot()
    labels = ("training (privacy units)", "held-out (evaluation)", "eligible by consent")
    width = 0.26
    for k, label in enumerate(labels):
        xs = [i + (k - 1) * width for i, row in enumerate(rows) if row[k + 1] is not None]
        values = [row[k + 1] for row in rows if row[k + 1] is not None]
        if values:
            bars = ax.bar(xs, values, width, label=label, color=f"C{k}")
            ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(rows)), [row[0] for row in rows])
    ax.set(ylabel="participants")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.25)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return figure


def _consent_plot(report: EthicsReport) -> Any:
    sites = [(s.name, s.consent) for s in report.sites if isinstance(s.consent, SiteConsent)]
    if not sites:
        return "no site's consent registry could be read"
    figure = _figure(9.0, 3.4)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    names = [name for name, _ in sites]
    eligible = [c.eligible for _, c in sites]
    ineligible = [c.ineligible for _, c in sites]
    left.barh(names, eligible, color="C2", label="eligible")
    left.barh(names, ineligible, left=eligible, color="C3", label="not eligible")
    left.set(xlabel="participants", title="coverage")
    left.legend(fontsize=8, loc="lower right")
    left.invert_yaxis()
    reasons = sorted({k for _, c in sites for k in c.reasons})
    if reasons:
        height = 0.8 / len(sites)
        for j, (name, consent) in enumerate(sites):
            ys = [i + j * height for i in range(len(reasons))]
            right.barh(ys, [consent.reasons.get(k, 0) for k in reasons], height, label=name, color=f"C{j % 10}")
        right.set_yticks([i + 0.4 - height / 2 for i in range(len(reasons))], reasons, fontsize=8)
        right.invert_yaxis()
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no participant excluded", ha="center", va="center", transform=right.transAxes)
        right.set_yticks([])
    right.set(xlabel="participants", title="exclusion reasons (one may have several)")
    for ax in (left, right):
        _integer_ticks(ax)
    return figure


def _metrics_plot(report: EthicsReport) -> Any:
    if not isinstance(report.metrics, MetricsSection):
        return report.metrics.reason
    rounds = report.metrics.rounds
    figure = _figure(7.5, 3.4)
    ax = figure.add_subplot()
    xs = [r.round for r in rounds]
    for key, label, style in (("balanced_accuracy", "pooled, windows", "-o"),
                              ("participant_balanced_accuracy", "pooled, participants", "-s")):
        points = [(x, getattr(r, key)) for x, r in zip(xs, rounds) if getattr(r, key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label, linewidth=2)
    for name in sorted({n for r in rounds for n in r.sites}):
        points = [(x, r.sites.get(name)) for x, r in zip(xs, rounds) if r.sites.get(name) is not None]
        if points:
            ax.plot(*zip(*points), "--", alpha=0.7, label=name)
    ax.axhline(0.5, color="grey", linewidth=1, linestyle=":")
    ax.set(xlabel="round", ylabel="balanced accuracy", ylim=(0, 1.05), title="held-out participants at each site")
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return figure
