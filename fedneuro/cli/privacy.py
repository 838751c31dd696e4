"""`fedneuro privacy`: plan and check (ε, δ) claims, a site's spent budget, membership audits."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, fail, out_console, print_json, user_errors

app = typer.Typer(help="Differential privacy: planning, accounting, budgets, audits.", no_args_is_help=True)

ACCOUNTANT_OPTION = typer.Option("best", "--accountant", help="best (smaller of rdp and prv), rdp or prv")


def _accountant(value: str) -> str:
    if value not in {"best", "rdp", "prv"}:
        fail(f"Invalid value for '--accountant': {value!r}. Use best, rdp or prv.")
    return value


@app.command("epsilon")
def epsilon(
    noise_multiplier: float = typer.Option(..., "--noise-multiplier", min=0.0, help="σ"),
    sample_rate: float = typer.Option(..., "--sample-rate", help="q, Poisson sampling rate of the privacy unit"),
    steps: int = typer.Option(..., "--steps", min=0, help="DP-SGD steps taken"),
    delta: float = typer.Option(..., "--delta", help="δ"),
    accountant: str = ACCOUNTANT_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """ε of `steps` Poisson-subsampled Gaussian steps, for anyone to recompute a claim."""
    from fedneuro.privacy.accountant import compute_epsilon

    _check_unit_interval(sample_rate=sample_rate, delta=delta)
    if noise_multiplier <= 0:
        fail(f"Invalid value for '--noise-multiplier': {noise_multiplier}; it must be > 0")
    with user_errors(ValueError):
        report = compute_epsilon([(noise_multiplier, sample_rate, steps)], delta=delta, accountant=_accountant(accountant))  # type: ignore[arg-type]
    result = {"epsilon": report.epsilon, "delta": delta, "accountant": report.accountant,
              "by_accountant": report.by_accountant, "noise_multiplier": noise_multiplier,
              "sample_rate": sample_rate, "steps": steps}
    if json_output:
        print_json(result)
    else:
        out_console.print(f"ε = {report.epsilon:.4f} at δ = {delta:g} ({report.accountant}; "
                          + ", ".join(f"{k} {v:.4f}" for k, v in report.by_accountant.items()) + ")")


@app.command("plan")
def plan(
    target_epsilon: float = typer.Option(..., "--epsilon", help="ε to stay within after all rounds"),
    delta: float = typer.Option(..., "--delta", help="δ"),
    rounds: int = typer.Option(..., "--rounds", min=1, help="federated rounds"),
    steps_per_round: int = typer.Option(..., "--steps-per-round", min=1, help="DP steps a site takes per round"),
    sample_rate: float = typer.Option(..., "--sample-rate", help="q, Poisson sampling rate of the privacy unit"),
    accountant: str = typer.Option("rdp", "--accountant", help="rdp or prv"),
    plot: Path | None = typer.Option(None, "--plot", help="also save the ε curve as a PNG"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Find the noise multiplier σ for a target ε, and show ε over the rounds."""
    from fedneuro.privacy.accountant import compute_epsilon, plan_noise_multiplier

    _check_unit_interval(sample_rate=sample_rate, delta=delta)
    if accountant not in {"rdp", "prv"}:
        fail(f"Invalid value for '--accountant': {accountant!r}. Use rdp or prv.")
    with user_errors(ValueError):
        sigma = plan_noise_multiplier(target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate,
                                      steps=rounds * steps_per_round, accountant=accountant)  # type: ignore[arg-type]
    curve = [
        {"round": r, "steps": r * steps_per_round,
         "epsilon": compute_epsilon([(sigma, sample_rate, r * steps_per_round)], delta=delta, accountant=accountant).epsilon}  # type: ignore[arg-type]
        for r in range(1, rounds + 1)
    ]
    result: dict[str, Any] = {"noise_multiplier": sigma, "target_epsilon": target_epsilon, "delta": delta,
                              "rounds": rounds, "steps_per_round": steps_per_round, "sample_rate": sample_rate,
                              "accountant": accountant, "curve": curve}
    if plot is not None:
        _plot_curve(curve, plot, title=f"σ = {sigma:.3f}, q = {sample_rate:g}, δ = {delta:g}")
        result["plot"] = str(plot)
    if json_output:
        print_json(result)
        return
    table = Table(title=f"σ = {sigma:.4f} keeps ε ≤ {target_epsilon:g} at δ = {delta:g} ({accountant})")
    for column in ("round", "steps", "ε"):
        table.add_column(column, justify="right")
    for point in curve:
        table.add_row(str(point["round"]), str(point["steps"]), f"{point['epsilon']:.3f}")
    out_console.print(table)


@app.command("status")
def status(
    site_dir: Path = typer.Option(..., "--site-dir", help="the site's state directory (holds privacy-ledger.jsonl)"),
    policy_path: Path | None = typer.Option(None, "--policy", help="the site policy (TOML); default budgets if absent"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Per study: ε spent (cumulative, from the ledger), budget remaining, and the step history."""
    import tomllib

    from pydantic import ValidationError

    from fedneuro.governance.policy import SitePolicy
    from fedneuro.privacy.accountant import compute_epsilon, ledger_history
    from fedneuro.privacy.ledger import LedgerError, PrivacyLedger

    policy = SitePolicy()
    if policy_path is not None:
        with user_errors(OSError, tomllib.TOMLDecodeError, ValidationError):
            policy = SitePolicy.model_validate(tomllib.loads(policy_path.read_text(encoding="utf-8")))
    ledger_path = site_dir / "privacy-ledger.jsonl"
    if not ledger_path.exists():
        fail(f"no privacy ledger at {ledger_path}: is {site_dir} a site state directory?")
    with user_errors(LedgerError):
        entries = PrivacyLedger(ledger_path).entries()
    by_study: dict[str, list] = defaultdict(list)
    for entry in entries:
        by_study[entry.study_id].append(entry)
    studies = []
    for study_id, study_entries in sorted(by_study.items()):
        delta = study_entries[-1].delta
        spent = compute_epsilon(ledger_history(study_entries), delta=delta, accountant="best")
        studies.append({
            "study_id": study_id, "epsilon": spent.epsilon, "delta": delta, "accountant": spent.accountant,
            "unit": study_entries[-1].unit, "max_epsilon": policy.max_epsilon_per_study,
            "remaining": max(0.0, policy.max_epsilon_per_study - spent.epsilon),
            "steps": sum(e.steps for e in study_entries),
            "history": [e.model_dump(mode="json") for e in study_entries],
        })
    result = {"site_dir": str(site_dir), "studies": studies,
              "max_epsilon_lifetime": policy.max_epsilon_lifetime}
    if json_output:
        print_json(result)
        return
    table = Table(title=f"Privacy spent at {site_dir}")
    for column in ("study", "unit", "ε", "δ", "accountant", "budget", "remaining", "steps", "rounds"):
        table.add_column(column, justify="right")
    for s in studies:
        table.add_row(s["study_id"], s["unit"], f"{s['epsilon']:.3f}", f"{s['delta']:g}", s["accountant"],
                      f"{s['max_epsilon']:g}", f"{s['remaining']:.3f}", str(s["steps"]),
                      str(len({h['round'] for h in s["history"]})))
    out_console.print(table)


@app.command("audit")
def audit(
    study_path: Path = typer.Option(..., "--study", help="the study file the adapter was trained under"),
    site: str = typer.Option(..., "--site", help="NAME=BIDS_DIR of the site to audit (its own data)"),
    adapter: Path = typer.Option(..., "--adapter", help="trained adapter (.safetensors)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Membership inference (loss threshold) on the site's training vs held-out participants."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from fedneuro.models.manifest import ExchangeError
    from fedneuro.study import StudyFileError, load_study
    from fedneuro.training.site import audit_membership

    name, _, root = site.partition("=")
    if not name or not root:
        fail(f"Invalid value for '--site': {site!r}. Use NAME=BIDS_DIR")
    with user_errors(StudyFileError):
        study = load_study(study_path)
    with user_errors(OSError, SafetensorError):
        state = load_file(str(adapter))
    with user_errors(ExchangeError, ValueError):
        result = audit_membership(study, Path(root), site_name=name, adapter=state)
    if json_output:
        print_json(result.model_dump())
    else:
        out_console.print(
            f"{result.attack} membership inference at {name}: AUC {result.auc:.3f} "
            f"({result.confidence:.0%} CI {result.ci_low:.3f}–{result.ci_high:.3f}; "
            f"{result.n_members} training vs {result.n_nonmembers} held-out participants; 0.5 = no leakage detected)"
        )


def _check_unit_interval(*, sample_rate: float, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        fail(f"Invalid value for '--sample-rate': {sample_rate}; it must be in (0, 1]")
    if not 0 < delta < 1:
        fail(f"Invalid value for '--delta': {delta}; it must be in (0, 1)")


def _plot_curve(curve: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["round"] for p in curve], [p["epsilon"] for p in curve], marker="o")
    ax.set(xlabel="round", ylabel="ε (cumulative)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
