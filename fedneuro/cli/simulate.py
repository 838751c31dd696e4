"""`fedneuro simulate` and `fedneuro demo`: a whole consortium on this machine."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, fail, out_console, print_json, setup_logging, user_errors
from fedneuro.governance.policy import SitePolicy
from fedneuro.study import Study, StudyFileError, default_study_path, load_study

DEMO_MARKER = ".fedneuro-demo"


def parse_site(option: str) -> tuple[str, Path]:
    name, sep, path = option.partition("=")
    if not sep or not name or not path:
        fail(f"Invalid value for '--site': {option!r}. Use NAME=BIDS_DIR, e.g. --site hospital-a=/data/bids")
    return name, Path(path)


def simulate(
    study_path: Path = typer.Option(..., "--study", help="the study file (TOML)"),
    site: list[str] = typer.Option(..., "--site", help="NAME=BIDS_DIR, once per site"),
    out: Path = typer.Option(..., "--out", help="output directory (summary, adapter, site state)"),
    site_policy: Path | None = typer.Option(
        None, "--site-policy", help="site policy (TOML: privacy budgets) applied to every simulated site"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue after the last completed round in --out"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Run the study's federation over existing BIDS EEG datasets, one simulated site each."""
    setup_logging()
    with user_errors(StudyFileError):
        study = load_study(study_path)
    sites = [parse_site(s) for s in site]
    policy = load_site_policy(site_policy) if site_policy else None
    checkpoint = out / "checkpoint" / "state.json"
    if resume and not checkpoint.is_file():
        fail(f"nothing to resume: {checkpoint} does not exist (no round of this run completed)")
    if checkpoint.is_file() and not resume:
        fail(f"{out} holds a run of this study up to a checkpoint: pass --resume to continue it, "
             "or choose another --out")
    summary = run_simulated_study(study_path, study, sites, out, policy=policy, resume=resume)
    report(summary, json_output)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output directory (recreated)"),
    sites: int = typer.Option(3, "--sites", min=1, help="number of simulated hospitals"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the synthetic data"),
    participants: int | None = typer.Option(
        None, "--participants", min=4, help="participants per site (default: 100 EEG, 200 MRI)"
    ),
    duration: float = typer.Option(30.0, "--duration", min=10, help="seconds of EEG per participant"),
    modality: str = typer.Option("eeg", "--modality", help="eeg (BIDS EDF sites) or mri (BIDS T1w sites)"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Synthesise hospital sites and run the default study over them, end to end."""
    if modality not in {"eeg", "mri"}:
        fail(f"Invalid value for '--modality': {modality!r}. Use eeg or mri.")
    setup_logging()
    participants = participants or (200 if modality == "mri" else 100)
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            fail(f"{out} exists and was not made by `fedneuro demo`: choose another --out")
        shutil.rmtree(out)  # a demo starts from scratch, ledgers included
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("made by fedneuro demo\n")
    study_path = default_study_path(modality)
    study = load_study(study_path)
    started = time.monotonic()
    with user_errors(ValueError, OSError), console.status(f"synthesising {sites} {modality.upper()} hospital sites"):
        if modality == "mri":
            from fedneuro.data.synth_mri import synthesize_mri_consortium

            written = synthesize_mri_consortium(out / "data", n_sites=sites, seed=seed, participants_per_site=participants)
        else:
            from fedneuro.data.synth import synthesize_consortium

            written = synthesize_consortium(
                out / "data", n_sites=sites, seed=seed, participants_per_site=participants, duration_s=duration
            )
    console.log(f"synthesised {len(written)} BIDS sites in {time.monotonic() - started:.1f} s under {out / 'data'}")
    summary = run_simulated_study(study_path, study, written, out)
    report(summary, json_output)


def load_site_policy(path: Path) -> SitePolicy:
    import tomllib

    from pydantic import ValidationError

    from fedneuro.study import format_validation_error

    try:
        return SitePolicy.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError) as error:
        fail(f"cannot read site policy {path}: {error}")
    except ValidationError as error:
        fail(format_validation_error(error, source=str(path)))


def _simulated_coordinator_key(out: Path) -> Path:
    """The simulated coordinator's signing key, made once per output folder (a deployed
    coordinator's comes from its kit)."""
    from fedneuro.governance.keys import generate_signing_key, write_signing_key

    path = out / "coordinator-keys" / "signing.key"
    if not path.is_file():
        write_signing_key(path, generate_signing_key())
    return path


def _study_signature(study: Study, coordinator_key: Path):  # type: ignore[no-untyped-def]
    """The simulated coordinator signs the study (a STUDY.sig beside the file belongs to a real
    coordinator's key, which the simulated sites do not trust)."""
    from datetime import UTC, datetime

    from fedneuro.governance.simulated import sign_simulated_study

    return sign_simulated_study(study, coordinator_key, now=datetime.now(UTC))


def _weights_sha256(study: Study) -> str:
    from fedneuro.training.site import build_study_model

    return build_study_model(study).weights_sha256 or "random-init"


def run_simulated_study(
    study_path: Path,
    study: Study,
    sites: list[tuple[str, Path]],
    out: Path,
    *,
    policy: SitePolicy | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    from fedneuro.federation.launch import Launch
    from fedneuro.federation.simulation import run_local_simulation
    from fedneuro.governance.simulated import prepare_simulated_site
    from fedneuro.governance.site import SiteConfig, derive_seed

    names = [name for name, _ in sites]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        fail(f"site names must be unique; repeated: {duplicates}")
    missing = [
        f"{name}={path}" for name, path in sites
        if not any((path / table).is_file() for table in ("participants.tsv", "recordings.tsv", "recordings.csv"))
    ]
    if missing:
        fail(f"not a site dataset (no participants.tsv, nor a loose-file recordings.tsv): {', '.join(missing)}")
    out = out.resolve()
    signing_key = _simulated_coordinator_key(out)
    signature = _study_signature(study, signing_key)
    weights_sha256 = _weights_sha256(study)
    site_configs = []
    with user_errors(ValueError):
        for name, path in sites:
            state_dir = out / "sites" / name
            simulated = prepare_simulated_site(
                study, name=name, bids_root=path.resolve(), state_dir=state_dir,
                coordinator_public_key=signing_key.with_suffix(".pub"), signature=signature,
                base_policy=policy or SitePolicy(), weights_sha256=weights_sha256,
            )
            site_configs.append(SiteConfig(
                name=name,
                bids_root=path.resolve(),
                state_dir=state_dir,
                policy=simulated.policy,
                signing_key=simulated.signing_key,
                # Simulation only: reproducible noise. A deployed site keeps a secret.
                noise_seed=derive_seed(study.study.seed, name, "simulated-noise"),
            ))
        launch = Launch(
            signing_key=signing_key,
            study_signature=signature.model_dump_json(),
            study_path=study_path.resolve(),
            out_dir=out,
            resume=resume,
            sites=site_configs,
        )
    console.log(f"study {study.study.id}: {len(sites)} sites, {study.federation.rounds} rounds, "
                f"backbone {study.model.backbone}, DP σ={study.privacy.noise_multiplier} (unit: {study.privacy.unit})")
    started = time.monotonic()
    try:
        run_local_simulation(launch)
    except Exception as error:  # the ServerApp's error, re-raised by Flower
        fail(f"the federation failed: {error}", code=1)
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        fail(f"the federation ended without writing {summary_path}", code=1)
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "completed":
        fail(f"the federation ended with status {summary.get('status')!r}; see {summary_path}", code=1)
    console.log(f"federation finished in {time.monotonic() - started:.1f} s")
    return summary


def report(summary: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(summary)
        return
    rounds = Table(title="Held-out participants, per round")
    for column in ("round", "balanced acc. (windows or images)", "balanced acc. (participants)", "wall time (s)"):
        rounds.add_column(column, justify="right")
    for r in summary["rounds"]:
        rounds.add_row(str(r["round"]), _fmt(r["balanced_accuracy"]),
                       _fmt(r["participant_balanced_accuracy"]), f"{r['wall_time_s']:.1f}")
    sites = Table(title="Sites")
    for column in ("site", "ε", "δ", "privacy unit", "accountant", "DP steps", "bytes up / round", "balanced acc."):
        sites.add_column(column, justify="right")
    for name, s in sorted(summary["sites"].items()):
        per_round = s["bytes_uploaded_per_round"]
        sites.add_row(name, _fmt(s.get("epsilon"), 2), f"{s.get('delta', 0):g}", s["unit"], s.get("epsilon_accountant", "-"),
                      str(s["dp_steps"]), f"{per_round[-1] if per_round else 0:,}", _fmt(s.get("balanced_accuracy")))
    out_console.print(rounds)
    out_console.print(sites)
    out_console.print(
        f"final balanced accuracy {_fmt(summary['final_balanced_accuracy'])} | adapter "
        f"{summary['adapter_bytes']:,} B vs backbone {summary['backbone_bytes']:,} B | "
        f"wall time {summary['wall_time_s']:.1f} s\nglobal adapter: {summary['global_adapter']}",
        highlight=False,
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
