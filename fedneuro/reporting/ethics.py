"""The ethics-board report: what a run did, recomputed and checked from the files it left.

:func:`collect_report` reads a ``fedneuro simulate``/``demo`` output folder (or a
coordinator's study folder): ``summary.json``, the study file, ``launch.json``, and per site
``sites/<name>/`` with ``privacy-ledger.jsonl`` (ε is recomputed round by round with the
accountant, never copied), ``consent.json`` (coverage of the study's DUO purpose),
``*.audit.jsonl`` (hash chain and signatures) and ``approvals/*.json``. A missing input
becomes :class:`NotAvailable` with the reason; a corrupt one also goes into
``problems`` with its path, and the report is still written.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedneuro import __version__

FORMAT_VERSION = 1
#: ε recomputed from a ledger must agree with the reported one to this relative tolerance
#: (the accountants are deterministic; only float rounding differs).
EPSILON_RTOL = 1e-6
AUDIT_SUFFIX = ".audit.jsonl"

__all__ = [
    "EPSILON_RTOL",
    "EthicsReport",
    "NotAvailable",
    "collect_report",
    "parse_purpose",
]


# --------------------------------------------------------------------------- the model
class NotAvailable(BaseModel):
    """A section or value the report could not give, and why."""

    model_config = ConfigDict(extra="forbid")

    available: Literal[False] = False
    reason: str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    available: Literal[True] = True


class InputFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="relative to the run folder when inside it")
    what: str
    status: Literal["read", "missing", "corrupt"]
    detail: str = ""


class InputProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    problem: str


class Finding(BaseModel):
    """Something a reviewer must look at: a mismatch, a failed check, a corrupt file."""

    model_config = ConfigDict(extra="forbid")

    section: str
    site: str | None = None
    message: str


class StudySection(_Section):
    source: str
    id: str
    title: str
    modality: str
    backbone: str
    digest: str
    digest_matches_run: bool | None = Field(description="None when the run records no digest")
    rounds_planned: int
    strategy: str
    secure_aggregation: bool
    privacy: dict[str, Any]
    governance: dict[str, Any] | None = Field(description="[governance]: purpose, ε cap, outputs; None if absent")


class RunSection(_Section):
    source: str
    status: str | None
    study_id: str | None
    study_digest: str | None
    backbone: str | None
    written_by: str | None = Field(description="fedneuro version that wrote summary.json")
    rounds_completed: int
    final_balanced_accuracy: float | None
    final_participant_balanced_accuracy: float | None
    adapter_bytes: int | None
    backbone_bytes: int | None
    wall_time_s: float | None


class TrustModel(_Section):
    secure_aggregation: bool
    strategy: str
    max_update_norm: float | None
    coordinator_sees: list[str]
    coordinator_cannot_see: list[str]
    notes: list[str]


class RoundEpsilon(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: int
    steps: int
    epsilon: float = Field(description="cumulative after this round, recomputed from the ledger")
    reported: float | None = Field(description="what the site reported for this round in summary.json")
    matches: bool | None


class SitePrivacy(_Section):
    epsilon: float | None = Field(description="recomputed from the ledger when there is one, else as reported")
    epsilon_source: Literal["recomputed from the privacy ledger", "reported in summary.json"]
    epsilon_reported: float | None
    epsilon_matches: bool | None
    delta: float | None
    accountant: str | None = Field(description="the accountant whose bound is ε")
    accountant_setting: str = Field(description="[privacy] accountant: best, rdp or prv")
    by_accountant: dict[str, float]
    unit: str | None
    neighbouring_relation: str | None
    sampling: str
    sample_rates: list[float] = Field(description="q of every ledger entry, distinct")
    noise_multipliers: list[float] = Field(description="σ, distinct")
    max_grad_norms: list[float] = Field(description="C, distinct")
    max_windows_per_unit: list[int]
    steps: int | None = Field(description="DP steps in the ledger for this study")
    steps_reported: int | None
    rounds_taken: int | None
    per_round: list[RoundEpsilon]
    training_participants: int | None
    test_participants: int | None
    budget: float | None = Field(description="the site policy's max ε per study, when launch.json gives it")
    ledger: str
    mismatches: list[str]


class SiteConsent(_Section):
    registry: str
    date: str = Field(description="consents are evaluated as of this day")
    records: int
    participants: int = Field(description="participants counted (registry, plus participants.tsv when readable)")
    participants_source: str
    purpose: dict[str, Any] | None
    purpose_source: str | None
    coverage: str = Field(description="what 'eligible' means here")
    eligible: int
    ineligible: int
    reasons: dict[str, int]
    notes: dict[str, int]


class MembershipResult(_Section):
    source: str
    attack: str
    auc: float
    ci_low: float
    ci_high: float
    confidence: float
    n_members: int
    n_nonmembers: int


class SiteReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    state_dir: str | None
    privacy: SitePrivacy | NotAvailable
    consent: SiteConsent | NotAvailable
    membership_audit: MembershipResult | NotAvailable


class RoundMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: int
    balanced_accuracy: float | None
    participant_balanced_accuracy: float | None
    sites: dict[str, float | None] = Field(description="balanced accuracy on each site's held-out participants")
    failures: list[str]
    wall_time_s: float | None


class MetricsSection(_Section):
    rounds: list[RoundMetrics]


class AuditCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str
    site: str | None
    public_key: str | None
    key_source: str
    ok: bool | None = Field(description="None when the log could not be verified")
    entries: int | None
    last_seq: int | None
    key_fingerprint: str | None
    problems: list[dict[str, Any]]
    status: str


class AuditSection(_Section):
    logs: list[AuditCheck]


class ApprovalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    site: str | None = Field(description="the site whose state folder holds it; None for the run folder's")
    decision: str | None
    reason: str | None
    signer: str | None = Field(description="a name, when the file gives one besides the key")
    signer_fingerprint: str | None
    study_digest: str | None
    digest_matches_run: bool | None
    plan_hash: str | None
    study_signer: str | None = Field(description="fingerprint of the coordinator key whose study signature the site checked")
    signed_at: str | None
    signature: str = Field(description="absent, valid (with the key's source), INVALID, or why it was not verified")
    fields: list[str] = Field(description="the keys the file holds")


class ApprovalsSection(_Section):
    folders: list[str]
    approvals: list[ApprovalRecord]
    note: str


class EthicsReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = FORMAT_VERSION
    fedneuro_version: str = __version__
    generated_at: str
    run_dir: str
    study: StudySection | NotAvailable
    run: RunSection | NotAvailable
    trust_model: TrustModel | NotAvailable
    sites: list[SiteReport]
    metrics: MetricsSection | NotAvailable
    audit_logs: AuditSection | NotAvailable
    approvals: ApprovalsSection | NotAvailable
    findings: list[Finding]
    problems: list[InputProblem]
    inputs: list[InputFile]


# --------------------------------------------------------------------------- reading inputs
class _Inputs:
    """Records what was read, what was missing and what was corrupt."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.files: list[InputFile] = []
        self.problems: list[InputProblem] = []
        self.findings: list[Finding] = []

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.run_dir))
        except ValueError:
            return str(path)

    def clean(self, message: str) -> str:
        """A library's message with paths inside the run folder made relative to it, as elsewhere."""
        for prefix in sorted({str(self.run_dir.resolve()), str(self.run_dir)} - {".", ""}, key=len, reverse=True):
            message = re.sub(r"(?<![\w./-])" + re.escape(prefix + os.sep), "", message)
        return message

    def read(self, path: Path, what: str, detail: str = "") -> None:
        self.files.append(InputFile(path=self.rel(path), what=what, status="read", detail=detail))

    def missing(self, path: Path, what: str, why: str) -> NotAvailable:
        self.files.append(InputFile(path=self.rel(path), what=what, status="missing", detail=why))
        return NotAvailable(reason=why)

    def corrupt(self, path: Path, what: str, problem: str, *, section: str, site: str | None = None) -> NotAvailable:
        where, problem = self.rel(path), self.clean(problem)
        self.files.append(InputFile(path=where, what=what, status="corrupt", detail=problem))
        self.problems.append(InputProblem(path=where, problem=problem))
        self.findings.append(Finding(section=section, site=site, message=f"{where} is corrupt: {problem}"))
        return NotAvailable(reason=f"{where} is corrupt: {problem}")

    def find(self, section: str, message: str, site: str | None = None) -> None:
        self.findings.append(Finding(section=section, site=site, message=message))

    def json(self, path: Path, what: str, *, section: str) -> Any:
        """The parsed JSON, or NotAvailable (missing / corrupt, recorded)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self.missing(path, what, f"no {what} at {self.rel(path)}")
        except (OSError, UnicodeDecodeError) as error:
            return self.corrupt(path, what, f"cannot be read ({error})", section=section)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            return self.corrupt(path, what, f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                                section=section)
        self.read(path, what)
        return value


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= EPSILON_RTOL * max(1.0, abs(a), abs(b))


# --------------------------------------------------------------------------- summary, study, launch
def _run_section(inputs: _Inputs, summary: Any, path: Path) -> RunSection | NotAvailable:
    if isinstance(summary, NotAvailable):
        return summary
    if not isinstance(summary, dict) or not isinstance(summary.get("rounds", []), list):
        return inputs.corrupt(path, "run summary", "not a fedneuro summary (expected an object with 'rounds' and 'sites')",
                              section="run")
    rounds = summary.get("rounds") or []
    status = summary.get("status")
    if status != "completed":
        inputs.find("run", f"the run's status is {status!r}, not 'completed': the report covers the rounds that finished")
    return RunSection(
        source=inputs.rel(path), status=status, study_id=summary.get("study_id"),
        study_digest=summary.get("study_digest"), backbone=summary.get("backbone"),
        written_by=summary.get("fedneuro_version"), rounds_completed=len(rounds),
        final_balanced_accuracy=_num(summary.get("final_balanced_accuracy")),
        final_participant_balanced_accuracy=_num(summary.get("final_participant_balanced_accuracy")),
        adapter_bytes=_int(summary.get("adapter_bytes")), backbone_bytes=_int(summary.get("backbone_bytes")),
        wall_time_s=_num(summary.get("wall_time_s")),
    )


def _read_launch(inputs: _Inputs) -> Any:
    """The simulation's launch.json as a Launch, None when absent (a coordinator folder has none)."""
    from fedneuro.federation.launch import Launch

    path = inputs.run_dir / "launch.json"
    if not path.is_file():
        return None
    try:
        launch = Launch.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValidationError) as error:
        detail = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        inputs.corrupt(path, "launch file", f"not a valid launch file ({detail})", section="study")
        return None
    inputs.read(path, "launch file", f"{len(launch.sites)} simulated site(s)")
    return launch


def _load_study(inputs: _Inputs, given: Path | None, launch: Any) -> tuple[Any, StudySection | NotAvailable]:
    from fedneuro.study import StudyFileError, load_study

    if given is not None:
        path, origin = given, "--study"
    elif (inputs.run_dir / "study.toml").is_file():
        path, origin = inputs.run_dir / "study.toml", "the run folder"
    elif launch is not None:
        path, origin = Path(launch.study_path), "launch.json"
    else:
        return None, NotAvailable(reason="no study file: pass --study STUDY.toml (the run folder holds no study.toml "
                                         "and no launch.json naming one)")
    if not path.is_file():
        return None, inputs.missing(path, "study file", f"the study file {path} (from {origin}) does not exist")
    try:
        study = load_study(path)
    except StudyFileError as error:
        return None, inputs.corrupt(path, "study file", str(error), section="study")
    inputs.read(path, "study file", f"from {origin}")
    governance = getattr(study, "governance", None)
    return study, StudySection(
        source=inputs.rel(path), id=study.study.id, title=study.study.title, modality=study.study.modality,
        backbone=study.model.backbone, digest=study.digest(), digest_matches_run=None,
        rounds_planned=study.federation.rounds, strategy=study.federation.strategy,
        secure_aggregation=study.federation.secure_aggregation.enabled,
        privacy=study.privacy.model_dump(mode="json"),
        governance=governance.model_dump(mode="json") if governance is not None else None,
    )


def study_purpose(study: Any) -> Any:
    """The study's declared DUO purpose (``[governance.purpose]``), None if it declares none."""
    governance = getattr(study, "governance", None)
    return getattr(governance, "purpose", None) if governance is not None else None


def parse_purpose(text: str) -> Any:
    """``GRU``, ``HMB``, ``POA`` or ``DS:<disease id>`` as a StudyPurpose."""
    from fedneuro.governance.duo import StudyPurpose

    code, _, disease = text.partition(":")
    if code not in {"GRU", "HMB", "DS", "POA"}:
        raise ValueError(f"Invalid value for '--purpose': {text!r}. Use GRU, HMB, POA or DS:<disease id> "
                         "(e.g. DS:MONDO:0005027).")
    try:
        return StudyPurpose(permission=code, disease=disease or None)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ValueError(f"Invalid value for '--purpose': {text!r}: {error.errors()[0]['msg']}") from None


# --------------------------------------------------------------------------- trust model
def _trust_model(study: Any, launch: Any) -> TrustModel | NotAvailable:
    if study is None:
        return NotAvailable(reason="no study file, so whether the run used secure aggregation is unknown "
                                   "(pass --study STUDY.toml)")
    federation = study.federation
    secure = federation.secure_aggregation.enabled
    metrics = ("per-site aggregate metrics: training windows and privacy units, mean training loss, DP steps, "
               "ε, δ and the accountant, and confusion counts on held-out participants")
    if secure:
        sees = ["only the weighted mean of the sites' adapter updates in each round (SecAgg+ masks every "
                "site's update; the masks cancel only in the sum)", metrics, "the bytes each site uploads"]
        cannot = ["any one site's adapter update", "recordings, windows, labels or participant ids (they never "
                  "leave a site)", "a site's consent registry, ledger details and DP noise secret"]
    else:
        sees = [f"each site's adapter and head update after its DP steps (inspected and, with max_update_norm, "
                f"rejected when too large), aggregated with {federation.strategy}", metrics,
                "the bytes each site uploads"]
        cannot = ["recordings, windows, labels or participant ids (they never leave a site)",
                  "a site's consent registry, ledger details and DP noise secret"]
    notes = ["Every update is post-processing of a site's DP-SGD: the site's (ε, δ) bounds what anyone who sees "
             "it (coordinator, other sites, the final model's users) can learn about one privacy unit."]
    if launch is not None and any(s.noise_seed is not None for s in launch.sites):
        notes.append("Simulation: DP noise seeds were derived from the study seed for reproducibility; anyone who "
                     "knows them could remove the noise. Real sites keep a secret noise key instead.")
    return TrustModel(secure_aggregation=secure, strategy=federation.strategy,
                      max_update_norm=federation.max_update_norm, coordinator_sees=sees,
                      coordinator_cannot_see=cannot, notes=notes)


# --------------------------------------------------------------------------- privacy
@lru_cache(maxsize=256)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> tuple[float, str, tuple]:
    from fedneuro.privacy.accountant import compute_epsilon

    report = compute_epsilon(history, delta=delta, accountant=accountant)  # type: ignore[arg-type]
    return report.epsilon, report.accountant, tuple(sorted(report.by_accountant.items()))


def _merged(history: Sequence[tuple[float, float, int]]) -> tuple[tuple[float, float, int], ...]:
    """Consecutive steps with the same (σ, q) as one entry: the same composition, computed once."""
    out: list[tuple[float, float, int]] = []
    for sigma, q, steps in history:
        if out and out[-1][:2] == (sigma, q):
            out[-1] = (sigma, q, out[-1][2] + steps)
        else:
            out.append((sigma, q, steps))
    return tuple(out)


def _relation(unit: str | None) -> str | None:
    from fedneuro.privacy.spec import PrivacySpec

    return PrivacySpec(unit=unit).neighbouring_relation() if unit in {"participant", "window"} else None  # type: ignore[arg-type]


def _site_privacy(
    inputs: _Inputs, name: str, state_dir: Path | None, reported: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]],
    *, study: Any, study_id: str | None, budget: float | None,
) -> SitePrivacy | NotAvailable:
    from fedneuro.privacy.ledger import LedgerError, PrivacyLedger

    setting = study.privacy.accountant if study is not None else "best"
    base: dict[str, Any] = dict(
        epsilon_reported=_num(reported.get("epsilon")), steps_reported=_int(reported.get("dp_steps")),
        training_participants=_int(reported.get("privacy_units")), test_participants=_int(reported.get("test_participants")),
        accountant_setting=setting, budget=budget, mismatches=[],
    )
    unit = reported.get("unit") or (study.privacy.unit if study is not None else None)
    if state_dir is None:
        why = (f"no state folder for {name} in the run folder (a coordinator never holds a site's ledger; ask the "
               "site for `fedneuro privacy status`)")
    else:
        ledger_path = state_dir / "privacy-ledger.jsonl"
        why = f"no privacy ledger at {inputs.rel(ledger_path)}"
    if state_dir is None or not (state_dir / "privacy-ledger.jsonl").is_file():
        if state_dir is not None:
            inputs.missing(state_dir / "privacy-ledger.jsonl", "privacy ledger", why)
        if base["epsilon_reported"] is None:
            return NotAvailable(reason=f"{why}, and summary.json reports no ε for {name}")
        inputs.find("privacy", f"ε of {name} could not be recomputed ({why}); the reported value is shown", site=name)
        return SitePrivacy(
            **base, epsilon=base["epsilon_reported"], epsilon_source="reported in summary.json", epsilon_matches=None,
            delta=_num(reported.get("delta")), accountant=reported.get("epsilon_accountant"), by_accountant={},
            unit=unit, neighbouring_relation=reported.get("neighbouring_relation") or _relation(unit),
            sampling=_sampling(unit), sample_rates=[], noise_multipliers=_listed(reported.get("noise_multiplier")),
            max_grad_norms=_listed(reported.get("max_grad_norm")),
            max_windows_per_unit=[int(k) for k in _listed(reported.get("max_windows_per_participant"))],
            steps=None, rounds_taken=None, per_round=[], ledger=why,
        )
    try:
        every = PrivacyLedger(ledger_path).entries()
    except (LedgerError, OSError) as error:
        return inputs.corrupt(ledger_path, "privacy ledger", str(error), section="privacy", site=name)
    studies = sorted({e.study_id for e in every})
    if study_id is None and len(studies) == 1:
        study_id = studies[0]
    entries = [e for e in every if e.study_id == study_id]
    if not entries:
        inputs.read(ledger_path, "privacy ledger", f"{len(every)} entries, none for study {study_id}")
        return NotAvailable(reason=f"{inputs.rel(ledger_path)} holds no step of study {study_id!r} "
                                   f"(studies in it: {', '.join(studies) or 'none'})")
    inputs.read(ledger_path, "privacy ledger", f"{len(entries)} entries for study {study_id}")
    delta = entries[-1].delta
    per_round, mismatches = _per_round(entries, rounds, name, delta, setting)
    epsilon, accountant, by = _epsilon(_merged([(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]), delta, setting)
    unit = entries[-1].unit
    matches = None if base["epsilon_reported"] is None else _close(epsilon, base["epsilon_reported"])
    if matches is False:
        mismatches.append(f"ε recomputed from the ledger is {epsilon:.4f}, summary.json reports "
                          f"{base['epsilon_reported']:.4f}")
    mismatches += _parameter_mismatches(entries, reported, study, delta)
    steps = sum(e.steps for e in entries)
    if base["steps_reported"] is not None and steps < base["steps_reported"]:
        mismatches.append(f"the ledger records {steps} DP steps but summary.json reports {base['steps_reported']}: "
                          "steps were taken that the ledger does not account for")
    elif base["steps_reported"] is not None and steps > base["steps_reported"]:
        inputs.find("privacy", f"{name}: the ledger holds {steps - base['steps_reported']} DP steps of study {study_id} "
                    "beyond this run's (earlier runs); ε covers them too", site=name)
    for message in mismatches:
        inputs.find("privacy", f"{name}: {message}", site=name)
    if budget is not None and epsilon > budget:
        inputs.find("privacy", f"{name}: ε = {epsilon:.3f} exceeds the site's budget of {budget:g}", site=name)
    cap = getattr(getattr(study, "governance", None), "max_epsilon", None)
    if cap is not None and epsilon > cap:
        inputs.find("privacy", f"{name}: ε = {epsilon:.3f} exceeds the study's cap of {cap:g}", site=name)
    return SitePrivacy(
        **{**base, "mismatches": mismatches}, epsilon=epsilon, epsilon_source="recomputed from the privacy ledger",
        epsilon_matches=matches, delta=delta, accountant=accountant, by_accountant=dict(by), unit=unit,
        neighbouring_relation=_relation(unit), sampling=_sampling(unit),
        sample_rates=sorted({e.sample_rate for e in entries}), noise_multipliers=sorted({e.noise_multiplier for e in entries}),
        max_grad_norms=sorted({e.max_grad_norm for e in entries}),
        max_windows_per_unit=sorted({e.max_windows_per_unit for e in entries}), steps=steps,
        rounds_taken=len({e.round for e in entries}), per_round=per_round, ledger=inputs.rel(ledger_path),
    )


def _listed(value: Any) -> list[float]:
    number = _num(value)
    return [] if number is None else [number]


def _sampling(unit: str | None) -> str:
    what = {"participant": "participants", "window": "windows"}.get(unit or "", "privacy units")
    return f"Poisson sampling of {what}: each is included in a step independently with probability q"


def _per_round(
    entries: Sequence[Any], rounds: Sequence[Mapping[str, Any]], name: str, delta: float, setting: str
) -> tuple[list[RoundEpsilon], list[str]]:
    """ε after each round of the ledger (consecutive entries of one round are one group)."""
    reported: dict[int, float] = {}
    for r in rounds:
        site = (r.get("sites") or {}).get(name) or {}
        if site.get("num_examples") and _num(site.get("epsilon")) is not None and _int(r.get("round")) is not None:
            reported[int(r["round"])] = float(site["epsilon"])
    groups: list[tuple[int, int]] = []  # (round, index after its last entry)
    for index, entry in enumerate(entries):
        if groups and groups[-1][0] == entry.round:
            groups[-1] = (entry.round, index + 1)
        else:
            groups.append((entry.round, index + 1))
    history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]
    last_group = {r: i for i, (r, _) in enumerate(groups)}  # a re-run's latest group of a round
    out, mismatches, start = [], [], 0
    for i, (number, end) in enumerate(groups):
        epsilon = _epsilon(_merged(history[:end]), delta, setting)[0]
        value = reported.get(number) if last_group[number] == i else None
        matches = None if value is None else _close(epsilon, value)
        if matches is False:
            mismatches.append(f"round {number}: ε recomputed {epsilon:.4f}, reported {value:.4f}")
        out.append(RoundEpsilon(round=number, steps=sum(e.steps for e in entries[start:end]), epsilon=epsilon,
                                reported=value, matches=matches))
        start = end
    return out, mismatches


def _parameter_mismatches(entries: Sequence[Any], reported: Mapping[str, Any], study: Any, delta: float) -> list[str]:
    problems = []
    if _num(reported.get("delta")) is not None and not _close(delta, float(reported["delta"])):
        problems.append(f"δ in the ledger is {delta:g}, summary.json reports {reported['delta']:g}")
    if reported.get("unit") and reported["unit"] != entries[-1].unit:
        problems.append(f"privacy unit in the ledger is {entries[-1].unit!r}, summary.json says {reported['unit']!r}")
    if study is not None:
        sigmas = sorted({e.noise_multiplier for e in entries})
        norms = sorted({e.max_grad_norm for e in entries})
        if norms != [study.privacy.max_grad_norm]:
            problems.append(f"C in the ledger is {norms}, the study sets {study.privacy.max_grad_norm:g}")
        if sigmas != [study.privacy.noise_multiplier]:
            problems.append(f"σ in the ledger is {sigmas}, the study sets {study.privacy.noise_multiplier:g}")
    return problems


# --------------------------------------------------------------------------- consent
def _participant_ids(inputs: _Inputs, bids_root: Path | None) -> tuple[set[str], str]:
    if bids_root is None:
        return set(), "the consent registry (participants without a record are not counted: no dataset known)"
    path = Path(bids_root) / "participants.tsv"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError:
        return set(), f"the consent registry (no readable {path} to count participants without a record)"
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    if not rows or "participant_id" not in rows[0]:
        inputs.corrupt(path, "participants table", "no participant_id column", section="consent")
        return set(), "the consent registry (participants.tsv has no participant_id column)"
    ids = {(r.get("participant_id") or "").strip() for r in rows} - {"", "n/a"}
    inputs.read(path, "participants table", f"{len(ids)} participants (ids only, to count those without consent)")
    return ids, "the consent registry and the site's participants.tsv"


def _site_consent(
    inputs: _Inputs, name: str, state_dir: Path | None, *, purpose: Any, purpose_source: str | None,
    on: date, bids_root: Path | None,
) -> SiteConsent | NotAvailable:
    from fedneuro.governance.consent import ConsentFileError, consent_path, eligibility, load_registry, summarize

    if state_dir is None:
        return NotAvailable(reason=f"no consent registry: no state folder for {name} in the run folder")
    path = consent_path(state_dir)
    if not path.is_file():
        return inputs.missing(path, "consent registry", f"no consent registry at {inputs.rel(path)} "
                              "(import one with `fedneuro consent import`)")
    try:
        registry = load_registry(state_dir)
    except ConsentFileError as error:
        return inputs.corrupt(path, "consent registry", str(error), section="consent", site=name)
    inputs.read(path, "consent registry", f"{len(registry.records)} consent records")
    extra, source = _participant_ids(inputs, bids_root)
    ids = {r.participant_id for r in registry.records} | extra
    if purpose is not None:
        summary = summarize(eligibility(registry, purpose, on, participant_ids=ids))
        wanted = purpose.permission + (f":{purpose.disease}" if purpose.disease else "")
        coverage = f"consent in force on {on} and covering the study's purpose ({wanted}, DUO)"
        reasons, notes = summary.reasons, summary.notes
        eligible, ineligible = summary.eligible, summary.ineligible
    else:
        counts, eligible = _in_force(registry, ids, on)
        reasons, notes, ineligible = counts, {}, len(ids) - eligible
        coverage = (f"consent in force on {on} (not withdrawn, not expired); DUO coverage not evaluated: the study "
                    "declares no [governance] purpose (or pass --purpose)")
        inputs.find("consent", f"{name}: consent coverage of the study's purpose was not evaluated (no purpose "
                    "declared)", site=name)
    return SiteConsent(
        registry=inputs.rel(path), date=str(on), records=len(registry.records), participants=len(ids),
        participants_source=source, purpose=purpose.model_dump(mode="json") if purpose is not None else None,
        purpose_source=purpose_source if purpose is not None else None, coverage=coverage, eligible=eligible,
        ineligible=ineligible, reasons=dict(sorted(reasons.items())), notes=dict(sorted(notes.items())),
    )


def _in_force(registry: Any, ids: set[str], on: date) -> tuple[dict[str, int], int]:
    counts: Counter[str] = Counter()
    eligible = 0
    for pid in ids:
        record = registry.get(pid)
        kinds = []
        if record is None:
            kinds.append("no consent")
        else:
            if record.withdrawn is not None and record.withdrawn <= on:
                kinds.append("withdrawn")
            if record.given > on:
                kinds.append("not yet given")
            if record.expires is not None and record.expires < on:
                kinds.append("expired")
        counts.update(kinds)
        eligible += not kinds
    return dict(counts), eligible


# --------------------------------------------------------------------------- audit logs
def _audit_logs(
    inputs: _Inputs, site_dirs: Mapping[str, Path], pubkeys: Mapping[str, Path], names: Sequence[str]
) -> AuditSection | NotAvailable:
    """Logs in the run folder, its audit/ folder (named NAME.audit.jsonl) and each site's state folder."""
    found: list[tuple[Path, str | None]] = []
    for folder in (inputs.run_dir, inputs.run_dir / "audit"):
        for path in sorted(folder.glob(f"*{AUDIT_SUFFIX}")):
            stem = path.name[: -len(AUDIT_SUFFIX)]
            found.append((path, stem if stem in names else None))
    for name, folder in sorted(site_dirs.items()):
        found += [(p, name) for p in sorted(folder.glob(f"*{AUDIT_SUFFIX}"))]
    used: set[str] = set()
    checks = [_verify_log(inputs, log, site, pubkeys, used) for log, site in found]
    for unused in sorted(set(pubkeys) - used):
        inputs.find("audit", f"--pubkey {unused}={pubkeys[unused]} matches no audit log found in the run folder")
    if not checks:
        return NotAvailable(reason=f"no audit log (*{AUDIT_SUFFIX}) in the run folder, its audit/ folder or any "
                                   "site's state folder")
    return AuditSection(logs=checks)


def _verify_log(
    inputs: _Inputs, log: Path, site: str | None, pubkeys: Mapping[str, Path], used: set[str]
) -> AuditCheck:
    from fedneuro.governance.audit import AuditLogError, verify_audit_log
    from fedneuro.governance.keys import KeyFileError, load_public_key

    stem = log.name[: -len(AUDIT_SUFFIX)]
    names = [n for n in (site, stem) if n]
    given = next((n for n in names if n in pubkeys), None)
    if given is not None:
        used.add(given)
        key_path, key_source = pubkeys[given], f"--pubkey {given}=… (given out of band)"
    else:
        beside = [p for p in (log.with_name(stem + ".pub"), log.with_name(log.name + ".pub")) if p.is_file()]
        key_path = beside[0] if beside else None
        key_source = ("beside the log: trust it only if its fingerprint was confirmed with the writer"
                      if key_path is not None else "none")
    base = dict(log=inputs.rel(log), site=site, public_key=inputs.rel(key_path) if key_path else None, key_source=key_source)
    if key_path is None:
        inputs.read(log, "audit log", "not verified: no public key")
        inputs.find("audit", f"{inputs.rel(log)} was not verified: no {stem}.pub beside it and no --pubkey "
                    f"{site or stem}=KEY.pub", site=site)
        return AuditCheck(**base, ok=None, entries=None, last_seq=None, key_fingerprint=None, problems=[],
                          status="not verified: no public key (put NAME.pub beside the log or pass --pubkey NAME=KEY.pub)")
    try:
        result = verify_audit_log(log, load_public_key(key_path))
    except KeyFileError as error:
        inputs.corrupt(key_path, "public key", str(error), section="audit", site=site)
        return AuditCheck(**base, ok=None, entries=None, last_seq=None, key_fingerprint=None, problems=[],
                          status=f"not verified: the public key cannot be used ({inputs.clean(str(error))})")
    except AuditLogError as error:
        inputs.corrupt(log, "audit log", str(error), section="audit", site=site)
        return AuditCheck(**base, ok=None, entries=None, last_seq=None, key_fingerprint=None, problems=[],
                          status=f"not verified: {inputs.clean(str(error))}")
    inputs.read(log, "audit log", f"{result.entries} entries")
    inputs.read(key_path, "public key", result.key_fingerprint)
    if result.ok:
        status = f"intact: {result.entries} entries, chain, signatures and signed head verify"
    else:
        status = f"FAILED: {len(result.problems)} problem(s) in {result.entries} readable entries"
        inputs.find("audit", f"{inputs.rel(log)}: {status}", site=site)
    return AuditCheck(**base, ok=result.ok, entries=result.entries, last_seq=result.last_seq,
                      key_fingerprint=result.key_fingerprint, problems=[p.model_dump() for p in result.problems],
                      status=status)


# --------------------------------------------------------------------------- approvals
_DECISION = ("decision", "status", "verdict")
_SIGNER = ("site", "signer_name", "reviewer", "signed_by", "actor", "signer")
_FINGERPRINT = ("signer_fingerprint", "key_fingerprint", "fingerprint", "signer")
_PUBLIC_KEY = ("public_key", "signer_public_key")
_SIGNED_AT = ("signed_at", "decided_at", "time", "date")
_FINGERPRINT_FORM = re.compile(r"^sha256:[0-9a-f]{64}$")


def _known_keys(inputs: _Inputs, site_dirs: Mapping[str, Path], pubkeys: Mapping[str, Path]) -> dict[str, tuple[Any, str]]:
    """Public keys this report can check signatures with, by fingerprint: --pubkey, then *.pub files."""
    from fedneuro.governance.keys import KeyFileError, fingerprint, load_public_key

    paths = [(path, f"--pubkey {name}") for name, path in sorted(pubkeys.items())]
    for folder in (inputs.run_dir, inputs.run_dir / "audit", *[d for _, d in sorted(site_dirs.items())]):
        paths += [(path, inputs.rel(path)) for path in sorted(folder.glob("*.pub"))]
    keys: dict[str, tuple[Any, str]] = {}
    for path, source in paths:
        try:
            key = load_public_key(path)
        except KeyFileError:
            continue  # a key that matters is reported where it is used
        keys.setdefault(fingerprint(key), (key, source))
    return keys


def _approvals(
    inputs: _Inputs, site_dirs: Mapping[str, Path], run_digest: str | None, keys: Mapping[str, tuple[Any, str]]
) -> ApprovalsSection | NotAvailable:
    folders = [(inputs.run_dir / "approvals", None)] + [(d / "approvals", n) for n, d in sorted(site_dirs.items())]
    present = [(f, n) for f, n in folders if f.is_dir()]
    if not present:
        return NotAvailable(reason="no approvals folder (approvals/*.json) in the run folder or any site's state folder")
    approvals = []
    for folder, site in present:
        for path in sorted(folder.glob("*.json")):
            approval = _approval(inputs, path, site, run_digest, keys)
            if approval is not None:
                approvals.append(approval)
    note = ("Read from each file: decision, signer key fingerprint (computed from an embedded public key when there "
            "is one), the study digest (compared with the run's) and signing time. A signature is verified when the "
            "file is a `fedneuro site approve|reject` decision and a public key with the signer's fingerprint is "
            "known (--pubkey, or a .pub file in the run or site folder).")
    return ApprovalsSection(folders=[inputs.rel(f) for f, _ in present], approvals=approvals, note=note)


def _approval(
    inputs: _Inputs, path: Path, site: str | None, run_digest: str | None, keys: Mapping[str, tuple[Any, str]]
) -> ApprovalRecord | None:
    from fedneuro.governance.keys import KeyFileError, fingerprint, public_key_from_pem

    data = inputs.json(path, "approval", section="approvals")
    if isinstance(data, NotAvailable):
        return None
    if not isinstance(data, dict):
        inputs.corrupt(path, "approval", f"a JSON {type(data).__name__}, not an approval object", section="approvals",
                       site=site)
        return None
    fields = {**{k: v for k, v in data.items() if not isinstance(v, dict)},
              **next((v for k, v in data.items() if k in {"approval", "payload", "body"} and isinstance(v, dict)), {})}

    def pick(keys: tuple[str, ...], form: re.Pattern[str] | None = None) -> str | None:
        for key in keys:
            value = fields.get(key)
            if value not in (None, "") and (form is None or form.match(str(value))):
                return str(value)
        return None

    stated = pick(_FINGERPRINT, _FINGERPRINT_FORM)
    computed = None
    pem = pick(_PUBLIC_KEY)
    if pem is not None:
        try:
            computed = fingerprint(public_key_from_pem(pem.encode(), source=str(path)))
        except KeyFileError as error:
            inputs.find("approvals", f"{inputs.rel(path)}: embedded public key unusable ({error})", site=site)
    if stated and computed and stated != computed:
        inputs.find("approvals", f"{inputs.rel(path)}: stated fingerprint {stated} differs from the embedded key's "
                    f"{computed}", site=site)
    digest = pick(("study_digest",))
    matches = None if digest is None or run_digest is None else digest == run_digest
    if matches is False:
        inputs.find("approvals", f"{inputs.rel(path)} is a decision on study digest {digest[:12]}…, but the run used "
                    f"{run_digest[:12]}…: it is about another version of the study", site=site)  # type: ignore[index]
    signature = _approval_signature(data, keys) if "signature" in data else "absent"
    if signature.startswith("INVALID"):
        inputs.find("approvals", f"{inputs.rel(path)}: {signature}", site=site)
    signer = pick(_SIGNER)
    return ApprovalRecord(
        file=inputs.rel(path), site=site, decision=pick(_DECISION), reason=pick(("reason",)),
        signer=None if signer is not None and _FINGERPRINT_FORM.match(signer) else signer,
        signer_fingerprint=computed or stated, study_digest=digest, digest_matches_run=matches,
        plan_hash=pick(("plan_hash",)), study_signer=pick(("study_signer",), _FINGERPRINT_FORM), signed_at=pick(_SIGNED_AT), signature=signature, fields=sorted(data),
    )


def _approval_signature(data: Mapping[str, Any], keys: Mapping[str, tuple[Any, str]]) -> str:
    """Verify a `fedneuro site approve|reject` file with a known key; say why not otherwise."""
    import base64
    import binascii

    from fedneuro.governance.keys import verify

    try:
        from fedneuro.governance.plan import Approval as SiteDecision
    except ImportError:
        return "present, not verified (this fedneuro version has no site-approval format)"
    try:
        decision = SiteDecision.model_validate(dict(data))
    except ValidationError as error:
        first = error.errors()[0]
        return (f"present, not verified: not a `fedneuro site approve` file ({'.'.join(map(str, first['loc']))}: "
                f"{first['msg']})")
    known = keys.get(decision.signer)
    if known is None:
        return f"present, not verified: no public key with fingerprint {decision.signer} (pass --pubkey SITE=KEY.pub)"
    key, source = known
    try:
        raw = base64.b64decode(decision.signature, validate=True)
    except (binascii.Error, ValueError):
        return "INVALID: the signature is not base64"
    if not verify(key, raw, decision.signed_message()):
        return f"INVALID: does not verify with the signer's key ({source})"
    return f"valid (Ed25519, key from {source})"


# --------------------------------------------------------------------------- metrics, membership audit
def _metrics(rounds: Sequence[Mapping[str, Any]]) -> MetricsSection | NotAvailable:
    if not rounds:
        return NotAvailable(reason="summary.json records no completed round")
    out = []
    for r in rounds:
        sites = r.get("sites") or {}
        out.append(RoundMetrics(
            round=_int(r.get("round")) or 0, balanced_accuracy=_num(r.get("balanced_accuracy")),
            participant_balanced_accuracy=_num(r.get("participant_balanced_accuracy")),
            sites={n: _num(s.get("balanced_accuracy")) for n, s in sorted(sites.items()) if isinstance(s, dict)},
            failures=[str(f) for f in r.get("failures") or []], wall_time_s=_num(r.get("wall_time_s")),
        ))
    return MetricsSection(rounds=out)


def _membership_from_summary(summary: Mapping[str, Any], name: str) -> MembershipResult | NotAvailable | None:
    """The audit summary.json records for the site (per site, or in a top-level mapping); None if none."""
    from fedneuro.privacy.audit import MembershipAudit

    sites = summary.get("sites") if isinstance(summary.get("sites"), dict) else {}
    site = sites.get(name) if isinstance(sites.get(name), dict) else {}
    audits = summary.get("membership_audit") if isinstance(summary.get("membership_audit"), dict) else {}
    raw = site.get("membership_audit") or audits.get(name)
    if raw is None:
        return None
    try:
        audit = MembershipAudit.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        return NotAvailable(reason=f"summary.json's membership audit for {name} is malformed "
                                   f"({'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']})")
    return _membership(audit, "summary.json")


def _membership(audit: Any, source: str) -> MembershipResult:
    return MembershipResult(source=source, attack=audit.attack, auc=audit.auc, ci_low=audit.ci_low, ci_high=audit.ci_high,
                            confidence=audit.confidence, n_members=audit.n_members, n_nonmembers=audit.n_nonmembers)


def _run_membership_audit(inputs: _Inputs, name: str, *, study: Any, bids_root: Path | None) -> MembershipResult | NotAvailable:
    adapter = inputs.run_dir / "global_adapter.safetensors"
    if study is None:
        return NotAvailable(reason="--audit needs the study file (pass --study)")
    if bids_root is None or not Path(bids_root).is_dir():
        return NotAvailable(reason=f"--audit needs {name}'s data, which launch.json does not locate on this machine")
    if not adapter.is_file():
        return inputs.missing(adapter, "global adapter", f"--audit needs the global adapter at {inputs.rel(adapter)}")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from fedneuro.training.site import audit_membership

    try:
        state = load_file(str(adapter))
        result = audit_membership(study, Path(bids_root), site_name=name, adapter=state)
    except (SafetensorError, OSError, ValueError) as error:
        return NotAvailable(reason=f"the membership audit at {name} failed: {inputs.clean(str(error))}")
    return _membership(result, "--audit (run for this report)")


# --------------------------------------------------------------------------- the whole report
def collect_report(
    run_dir: Path,
    *,
    study_path: Path | None = None,
    pubkeys: Mapping[str, Path] | None = None,
    purpose: Any = None,
    on: date | None = None,
    run_audit: bool = False,
    now: datetime | None = None,
) -> EthicsReport:
    """Everything the ethics report states, read and recomputed from ``run_dir``.

    ``purpose`` (a StudyPurpose) overrides the study's ``[governance.purpose]`` for consent
    coverage; ``on`` is the day consents are evaluated (default today); ``run_audit`` runs
    the membership-inference audit at every site whose data this machine holds (slow).
    """
    run_dir = Path(run_dir)
    inputs = _Inputs(run_dir)
    pubkeys = dict(pubkeys or {})
    on = on or date.today()
    summary_path = run_dir / "summary.json"
    summary = inputs.json(summary_path, "run summary", section="run")
    run = _run_section(inputs, summary, summary_path)
    summary_dict: dict[str, Any] = summary if isinstance(run, RunSection) else {}
    rounds = [r for r in summary_dict.get("rounds") or [] if isinstance(r, dict)]
    launch = _read_launch(inputs)
    study, study_section = _load_study(inputs, study_path, launch)
    run_digest = run.study_digest if isinstance(run, RunSection) else None
    if isinstance(study_section, StudySection) and run_digest:
        study_section.digest_matches_run = study_section.digest == run_digest
        if not study_section.digest_matches_run:
            inputs.find("study", f"the study file {study_section.source} (digest {study_section.digest[:12]}…) is not "
                        f"the one the run used (digest {run_digest[:12]}…): settings shown from it may differ")
    chosen_purpose, purpose_source = (purpose, "--purpose") if purpose is not None else (study_purpose(study), "the study")

    launch_sites = {s.name: s for s in launch.sites} if launch is not None else {}
    summary_sites = summary_dict.get("sites") if isinstance(summary_dict.get("sites"), dict) else {}
    sites_dir = run_dir / "sites"
    on_disk = {p.name for p in sites_dir.iterdir() if p.is_dir()} if sites_dir.is_dir() else set()
    names = sorted(set(summary_sites) | on_disk | set(launch_sites))
    site_dirs: dict[str, Path] = {}
    for name in names:
        if name in on_disk:
            site_dirs[name] = sites_dir / name
        elif name in launch_sites and Path(launch_sites[name].state_dir).is_dir():
            site_dirs[name] = Path(launch_sites[name].state_dir)
    study_id = summary_dict.get("study_id") or (study.study.id if study is not None else None)

    sites = []
    for name in names:
        state_dir = site_dirs.get(name)
        config = launch_sites.get(name)
        bids_root = Path(config.bids_root) if config is not None else None
        reported = summary_sites.get(name) if isinstance(summary_sites.get(name), dict) else {}
        privacy = _site_privacy(inputs, name, state_dir, reported, rounds, study=study, study_id=study_id,
                                budget=config.policy.max_epsilon_per_study if config is not None else None)
        consent = _site_consent(inputs, name, state_dir, purpose=chosen_purpose, purpose_source=purpose_source,
                                on=on, bids_root=bids_root)
        membership: MembershipResult | NotAvailable | None = _membership_from_summary(summary_dict, name)
        if membership is None:
            membership = (_run_membership_audit(inputs, name, study=study, bids_root=bids_root) if run_audit else
                          NotAvailable(reason="not run (summary.json holds no audit; `fedneuro report --audit` runs one)"))
        sites.append(SiteReport(name=name, state_dir=inputs.rel(state_dir) if state_dir else None,
                                privacy=privacy, consent=consent, membership_audit=membership))
    if not names:
        inputs.find("run", "no site found: summary.json lists none and the run folder has no sites/ folder")

    return EthicsReport(
        generated_at=(now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        run_dir=str(run_dir), study=study_section, run=run, trust_model=_trust_model(study, launch), sites=sites,
        metrics=_metrics(rounds) if isinstance(run, RunSection) else NotAvailable(reason=run.reason),
        audit_logs=_audit_logs(inputs, site_dirs, pubkeys, names),
        approvals=_approvals(inputs, site_dirs, run_digest, _known_keys(inputs, site_dirs, pubkeys)),
        findings=inputs.findings, problems=inputs.problems, inputs=inputs.files,
    )
