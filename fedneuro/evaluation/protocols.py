"""Evaluation protocols: the baselines a federated run is judged against.

Every protocol trains with the federation's own code — data from :func:`site_cohort` and
:func:`prepare_site_data` (the same participant-disjoint split a site uses), the model from
:func:`build_study_model`, DP-SGD from :func:`train_dp` — but in this process, without Flower,
so a run is fast and deterministic by seed. Each model gets the study's training budget:
``rounds`` calls of ``train_dp`` with ``local_epochs`` each (new sampling and noise seeds per
call, a fresh optimiser per call), as a site gets in the federation.

* ``centralised``: one model on every site's training participants pooled — the upper bound
  a consortium gives up by not sharing data;
* ``local-only``: each site trains alone; scored on its own test participants (``per_site``)
  and on every other site's (``cross_site``);
* ``leave-one-site-out``: for each site, one model on the *other* sites' training
  participants pooled (centralised-style pooling, not federated averaging: it isolates the
  shift to an unseen hospital from the cost of federation), scored on the held-out site's
  test participants — the same participants every other protocol is scored on;
* ``federated``: read from a ``fedneuro simulate`` output directory's ``summary.json``; when
  its ``global_adapter.safetensors`` fits this study's model it is re-scored here with every
  metric and interval, otherwise the run's own balanced accuracies are reported.

Privacy: each protocol runs under a :class:`PrivacySetting`: the study's DP (participant-level,
σ and C of ``[privacy]``; ε by ``fedneuro.privacy.accountant`` over the steps actually
taken), DP at a target ε (σ planned for each model's own sampling rate and steps), or a
*non-private* baseline. ``train_dp`` cannot run without noise (``PrivacySpec`` requires σ > 0
and the engine always clips), so the non-private baseline is :func:`train_non_private` here.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from fedneuro import __version__
from fedneuro.evaluation.metrics import LevelMetrics, MetricSet, MetricValue, SiteSummary, evaluate_predictions, summarise_sites
from fedneuro.governance.site import derive_seed
from fedneuro.models.device import device_plan
from fedneuro.models.exchange import exchange_manifest, load_trainable_state
from fedneuro.privacy.accountant import compute_epsilon, plan_noise_multiplier, resolve_delta
from fedneuro.privacy.engine import UnitPoissonSampler
from fedneuro.privacy.spec import PrivacySpec
from fedneuro.study import Study
from fedneuro.training.local import (
    LocalTrainResult,
    build_optimizer,
    dp_schedule,
    predict_proba,
    privacy_units,
    train_dp,
)
from fedneuro.training.site import SiteData, build_study_model, prepare_site_data, site_cohort
from fedneuro.training.spec import TrainingSpec

logger = logging.getLogger(__name__)

ProtocolName = Literal["centralised", "local-only", "leave-one-site-out", "federated"]
#: Protocols this module trains (``federated`` comes from a run's summary).
TRAINED_PROTOCOLS: tuple[ProtocolName, ...] = ("centralised", "local-only", "leave-one-site-out")
PROTOCOL_ALIASES: dict[str, ProtocolName] = {
    "centralised": "centralised", "centralized": "centralised", "pooled": "centralised",
    "local-only": "local-only", "local": "local-only",
    "leave-one-site-out": "leave-one-site-out", "loso": "leave-one-site-out",
}


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked; the message names the input and the fix."""


# --------------------------------------------------------------------------- settings
class PrivacySetting(BaseModel):
    """How the baselines are trained: the study's DP, DP at a target ε, or non-private."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="'dp' (the study's σ), 'eps-X' (σ planned for ε = X) or 'non-private'")
    private: bool
    target_epsilon: float | None = Field(default=None, gt=0)

    @property
    def label(self) -> str:
        if not self.private:
            return "non-private"
        return f"DP, target ε = {self.target_epsilon:g}" if self.target_epsilon else "DP (study σ)"


def privacy_settings(*, dp: bool = True, non_private: bool = False, epsilon_sweep: Sequence[float] = ()) -> list[PrivacySetting]:
    """The settings to run, in report order: study DP, the ε sweep (ascending), non-private."""
    bad = [e for e in epsilon_sweep if not (e > 0 and np.isfinite(e))]
    if bad:
        raise EvaluationError(f"Invalid value for '--epsilon-sweep': {bad}; every target ε must be a finite number > 0, e.g. 1,4,8")
    settings = [PrivacySetting(name="dp", private=True)] if dp else []
    settings += [PrivacySetting(name=f"eps-{e:g}", private=True, target_epsilon=float(e)) for e in sorted(set(epsilon_sweep))]
    if non_private:
        settings.append(PrivacySetting(name="non-private", private=False))
    if not settings:
        raise EvaluationError("no privacy setting selected: enable DP, non-private or an ε sweep")
    return settings


def parse_protocols(text: str) -> list[ProtocolName]:
    """'centralised,local-only,loso' → canonical names, in the given order, without repeats."""
    names: list[ProtocolName] = []
    for raw in (part.strip().lower() for part in text.split(",")):
        if not raw:
            continue
        if raw not in PROTOCOL_ALIASES:
            raise EvaluationError(
                f"Invalid value for '--protocols': {raw!r}. Allowed: centralised, local-only, "
                "leave-one-site-out (alias loso); federated results come from --federated-summary"
            )
        if PROTOCOL_ALIASES[raw] not in names:
            names.append(PROTOCOL_ALIASES[raw])
    return names


class EvaluationConfig(BaseModel):
    """Knobs of an evaluation run that are not in the study file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_boot: int = Field(default=1000, ge=0, description="participant bootstrap resamples (0 = no intervals)")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    n_bins: int = Field(default=10, ge=1, description="equal-width bins of the ECE")
    seed: int = Field(default=0, ge=0, description="seeds the bootstrap; training seeds derive from the study seed")
    rounds: int | None = Field(default=None, ge=1, description="train_dp calls per model; None = the study's rounds")
    device: str = "cpu"


# --------------------------------------------------------------------------- results
class TrainingRecord(BaseModel):
    """One model a protocol trained (or, for ``federated``, one site of the run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trained_on: list[str]
    train_windows: int | None = None
    train_participants: int | None = None
    private: bool
    rounds: int | None = None
    epochs: int | None = Field(default=None, description="local_epochs × rounds")
    steps: int
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    sample_rate: float | None = None
    unit: str | None = None
    epsilon: float | None = Field(default=None, description="None: non-private (ε = ∞)")
    delta: float | None = None
    accountant: str | None = None
    mean_loss: float | None = None
    wall_time_s: float | None = None


class ProtocolResult(BaseModel):
    """One protocol under one privacy setting, scored per site, pooled, mean and worst site."""

    model_config = ConfigDict(extra="forbid")

    protocol: ProtocolName
    setting: str
    setting_label: str
    private: bool
    epsilon: float | None = Field(default=None, description="largest ε of the protocol's models (None: non-private)")
    models: list[TrainingRecord]
    per_site: dict[str, LevelMetrics]
    pooled: LevelMetrics | None = None
    site_summary: dict[str, dict[str, SiteSummary]] = Field(
        default_factory=dict, description="level ('window', 'participant') → metric → mean and worst site"
    )
    cross_site: dict[str, dict[str, LevelMetrics]] = Field(
        default_factory=dict, description="local-only: trained at → scored at"
    )
    source: str | None = Field(default=None, description="federated: the summary.json read")
    notes: list[str] = Field(default_factory=list)


class SiteInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    train_participants: int
    test_participants: int
    train_windows: int
    test_windows: int
    excluded_participants: int


class EvaluationReport(BaseModel):
    """Everything ``evaluation.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    fedneuro_version: str = __version__
    study_id: str
    study_digest: str
    backbone: str
    n_classes: int
    rounds: int = Field(description="train_dp calls per baseline model")
    local_epochs: int
    config: EvaluationConfig
    quick: bool = False
    sites: list[SiteInfo]
    results: list[ProtocolResult]
    wall_time_s: float = 0.0

    def result(self, protocol: ProtocolName, setting: str | None = None) -> ProtocolResult:
        for result in self.results:
            if result.protocol == protocol and (setting is None or result.setting == setting):
                return result
        have = ", ".join(f"{r.protocol}/{r.setting}" for r in self.results)
        raise KeyError(f"no result for protocol {protocol!r} setting {setting!r}; the report has: {have}")


class ProgressHook(Protocol):
    """Told before each model is trained (``done`` of ``total``), and once more at the end."""

    def __call__(self, description: str, done: int, total: int) -> None: ...


# --------------------------------------------------------------------------- data
def check_participant_disjoint(site: str, data: SiteData) -> None:
    """Raise if a participant has samples in both train and test (it would inflate every metric)."""
    train = {data.train.participant_ids[i] for i in np.unique(data.train.participant)}
    test = {data.test.participant_ids[i] for i in np.unique(data.test.participant)}
    shared = sorted(train & test)
    if shared:
        raise EvaluationError(
            f"site {site!r}: participant(s) {shared[:5]} are in both the training and the test set; "
            "splits must be by participant (fedneuro.data.splits)"
        )


def load_sites(study: Study, sites: Sequence[tuple[str, Path]], *, cache_dir: Path | None = None) -> dict[str, SiteData]:
    """Each site's consented cohort, harmonised and split by participant exactly as in the federation."""
    names = [name for name, _ in sites]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EvaluationError(f"Invalid value for '--site': names must be unique; repeated: {repeated}")
    out: dict[str, SiteData] = {}
    for name, root in sites:
        data = prepare_site_data(root, site_cohort(root, study), study, site_name=name,
                                 cache_dir=None if cache_dir is None else cache_dir / name)
        check_participant_disjoint(name, data)
        if len(data.train) == 0 or len(data.test) == 0:
            raise EvaluationError(
                f"site {name!r} ({root}) has {len(data.train)} training and {len(data.test)} test samples "
                "after the consent gate and harmonisation; run `fedneuro data check` on it"
            )
        out[name] = data
    return out


def site_info(data: Mapping[str, SiteData]) -> list[SiteInfo]:
    return [
        SiteInfo(name=name, train_participants=len(np.unique(d.train.participant)),
                 test_participants=len(np.unique(d.test.participant)), train_windows=len(d.train),
                 test_windows=len(d.test), excluded_participants=d.n_excluded)
        for name, d in data.items()
    ]


@dataclass(frozen=True)
class Pool:
    """Samples of one or more sites; participants keyed 'site/participant_id' so sites never collide."""

    X: np.ndarray
    y: np.ndarray
    participant: np.ndarray  # int codes into keys
    keys: list[str]
    sites: tuple[str, ...]


def pool(data: Mapping[str, SiteData], sites: Sequence[str], part: Literal["train", "test"]) -> Pool:
    sets = [getattr(data[s], part) for s in sites]
    keys = [f"{s}/{pid}" for s, ws in zip(sites, sets) for pid in ws.participant_ids]
    offsets = np.cumsum([0] + [len(ws.participant_ids) for ws in sets])
    return Pool(
        X=np.concatenate([ws.X for ws in sets]) if len(sets) > 1 else sets[0].X,
        y=np.concatenate([np.asarray(ws.y, dtype=np.int64) for ws in sets]),
        participant=np.concatenate([np.asarray(ws.participant, dtype=np.int64) + o for ws, o in zip(sets, offsets)]),
        keys=keys,
        sites=tuple(sites),
    )


# --------------------------------------------------------------------------- training
def train_non_private(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    participant: np.ndarray,
    *,
    training: TrainingSpec,
    privacy: PrivacySpec,
    sampling_seed: int,
    device: str = "cpu",
) -> LocalTrainResult:
    """NON-PRIVATE baseline: no per-participant clipping, no noise, no privacy claim.

    Otherwise what :func:`train_dp` does — the same Poisson sampling of participants with at
    most k windows each, the same optimiser, learning rate, momentum and number of steps, and
    each sampled participant weighted equally (mean over their windows, then over
    participants) — so the gap to a DP run is the cost of DP alone. The batch's gradient is
    clipped to C as a whole (data-independent of any one participant's bound): the study's
    learning rate is tuned for DP updates, whose signal part never exceeds C, and plain SGD at
    that rate diverges on a randomly initialised head (gradient norms ~20 at step one).
    """
    plan = device_plan(device, precision="fp32")
    plan.prepare(model)
    units = privacy_units(participant, privacy)
    schedule = dp_schedule(participant, training=training, privacy=privacy)
    sampler = UnitPoissonSampler(np.unique(units, return_inverse=True)[1], schedule, seed=sampling_seed)
    optimizer = build_optimizer(model, training)
    parameters = [p for p in model.parameters() if p.requires_grad]
    X_all, y_all = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.int64))
    criterion = nn.CrossEntropyLoss(reduction="none")
    steps = training.local_epochs * schedule.steps_per_epoch
    losses: list[float] = []
    empty = 0
    with torch.random.fork_rng(devices=[]):  # dropout reproducible by seed, caller's RNG untouched
        torch.manual_seed(sampling_seed)
        model.train()
        for _ in range(steps):
            windows, groups, n_units = sampler.draw()
            if n_units == 0:
                empty += 1
                continue
            group = torch.from_numpy(groups)
            weight = 1.0 / (torch.bincount(group, minlength=n_units)[group].double() * n_units)
            optimizer.zero_grad(set_to_none=True)
            per_window = criterion(model(plan.to_device(X_all[torch.from_numpy(windows)])),
                                   plan.to_device(y_all[torch.from_numpy(windows)]))
            loss = (per_window * plan.to_device(weight.float())).sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, privacy.max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return LocalTrainResult(steps=steps, empty_batches=empty, mean_loss=float(np.mean(losses)) if losses else float("nan"),
                            num_examples=len(X), num_units=schedule.n_units, dp_history=[])


def train_model(
    study: Study, data: Pool, setting: PrivacySetting, *, rounds: int, seed_parts: Sequence[object], device: str = "cpu"
) -> tuple[nn.Module, TrainingRecord]:
    """The study's model trained on ``data`` for ``rounds`` × ``local_epochs``, under ``setting``."""
    started = time.monotonic()
    adapted = build_study_model(study)
    privacy, training = study.privacy, study.training
    units = privacy_units(data.participant, privacy)
    n_units = len(np.unique(units))
    schedule = dp_schedule(data.participant, training=training, privacy=privacy)
    delta = resolve_delta(privacy.delta, n_units) if setting.private else None
    if setting.target_epsilon is not None:
        assert delta is not None
        with _quiet_accountant():
            sigma = plan_noise_multiplier(
                target_epsilon=setting.target_epsilon, delta=delta, sample_rate=schedule.sample_rate,
                steps=rounds * training.local_epochs * schedule.steps_per_epoch,
                accountant="prv" if privacy.accountant == "prv" else "rdp",
            )
        privacy = privacy.model_copy(update={"noise_multiplier": sigma})
    history: list[tuple[float, float, int]] = []
    steps, losses = 0, []
    for r in range(1, rounds + 1):
        sampling_seed = derive_seed(study.study.seed, "evaluation", *seed_parts, r, "poisson")
        if setting.private:
            result = train_dp(adapted.module, data.X, data.y, data.participant, training=training, privacy=privacy,
                              sampling_seed=sampling_seed,
                              noise_seed=derive_seed(study.study.seed, "evaluation", *seed_parts, r, "noise"),
                              device=device)
            history += [(h.noise_multiplier, h.sample_rate, h.steps) for h in result.dp_history]
        else:
            result = train_non_private(adapted.module, data.X, data.y, data.participant, training=training,
                                       privacy=privacy, sampling_seed=sampling_seed, device=device)
        steps += result.steps
        losses.append(result.mean_loss)
    with _quiet_accountant():
        spent = compute_epsilon(history, delta=delta, accountant=privacy.accountant) if delta is not None else None
    record = TrainingRecord(
        trained_on=list(data.sites), train_windows=len(data.X), train_participants=len(np.unique(data.participant)),
        private=setting.private, rounds=rounds, epochs=rounds * training.local_epochs, steps=steps,
        noise_multiplier=privacy.noise_multiplier if setting.private else None,
        max_grad_norm=privacy.max_grad_norm if setting.private else None,
        sample_rate=schedule.sample_rate, unit=privacy.unit,
        epsilon=spent.epsilon if spent else None, delta=delta, accountant=spent.accountant if spent else None,
        mean_loss=_finite_or_none(float(np.nanmean(losses))) if np.isfinite(losses).any() else None,
        wall_time_s=time.monotonic() - started,
    )
    return adapted.module, record


@contextmanager
def _quiet_accountant() -> Iterator[None]:
    # Opacus's PRV accountant takes log(0) on its grid at q = 1 (a harmless RuntimeWarning
    # per call); the ε it returns is still valid.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"opacus\.")
        yield


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


# --------------------------------------------------------------------------- scoring
@dataclass
class _Predictions:
    y: np.ndarray
    proba: np.ndarray
    keys: np.ndarray  # 'site/participant' per sample


def _predict(model: nn.Module, data: Mapping[str, SiteData], site: str) -> _Predictions:
    test = data[site].test
    keys = np.array([f"{site}/{pid}" for pid in test.participant_ids])[np.asarray(test.participant)]
    return _Predictions(np.asarray(test.y, dtype=np.int64), predict_proba(model, test.X), keys)


def _score(pred: _Predictions, config: EvaluationConfig, *, seed_key: str) -> LevelMetrics:
    # The same bootstrap seed for a site in every protocol: paired resamples across protocols.
    return evaluate_predictions(pred.y, pred.proba, pred.keys, n_boot=config.n_boot,
                                seed=derive_seed(config.seed, "bootstrap", seed_key),
                                confidence=config.confidence, n_bins=config.n_bins)


def _concat(preds: Sequence[_Predictions]) -> _Predictions:
    return _Predictions(np.concatenate([p.y for p in preds]), np.concatenate([p.proba for p in preds]),
                        np.concatenate([p.keys for p in preds]))


def _summaries(per_site: Mapping[str, LevelMetrics]) -> dict[str, dict[str, SiteSummary]]:
    out = {"window": summarise_sites({s: m.window for s, m in per_site.items()})}
    if per_site and all(m.participant is not None for m in per_site.values()):
        out["participant"] = summarise_sites({s: m.participant for s, m in per_site.items() if m.participant})
    return out


def _result(protocol: ProtocolName, setting: PrivacySetting, models: list[TrainingRecord],
            per_site: dict[str, LevelMetrics], pooled: LevelMetrics | None, *, label: str | None = None,
            **extra: object) -> ProtocolResult:
    eps = [m.epsilon for m in models if m.epsilon is not None]
    return ProtocolResult(protocol=protocol, setting=setting.name, setting_label=label or setting.label,
                          private=setting.private,
                          epsilon=max(eps) if eps else None, models=models, per_site=per_site, pooled=pooled,
                          site_summary=_summaries(per_site), **extra)  # type: ignore[arg-type]


class _Jobs:
    def __init__(self, total: int, hook: ProgressHook | None) -> None:
        self.total, self.done, self.hook = total, 0, hook

    def start(self, description: str) -> None:
        if self.hook is not None:
            self.hook(description, self.done, self.total)
        self.done += 1

    def finish(self) -> None:
        if self.hook is not None:
            self.hook("done", self.total, self.total)


def _rounds(study: Study, config: EvaluationConfig) -> int:
    return config.rounds or study.federation.rounds


def run_centralised(study: Study, data: Mapping[str, SiteData], setting: PrivacySetting, *,
                    config: EvaluationConfig = EvaluationConfig(), progress: ProgressHook | None = None) -> ProtocolResult:
    """One model on every site's training participants pooled; scored per site and pooled."""
    jobs = progress if isinstance(progress, _Jobs) else _Jobs(1, progress)
    sites = list(data)
    jobs.start(f"centralised ({setting.label}): {len(sites)} sites pooled")
    model, record = train_model(study, pool(data, sites, "train"), setting, rounds=_rounds(study, config),
                                seed_parts=("centralised", setting.name), device=config.device)
    preds = {s: _predict(model, data, s) for s in sites}
    per_site = {s: _score(p, config, seed_key=s) for s, p in preds.items()}
    pooled = _score(_concat(list(preds.values())), config, seed_key="pooled")
    return _result("centralised", setting, [record], per_site, pooled)


def run_local_only(study: Study, data: Mapping[str, SiteData], setting: PrivacySetting, *,
                   config: EvaluationConfig = EvaluationConfig(), progress: ProgressHook | None = None) -> ProtocolResult:
    """Each site alone: ``per_site`` on its own test participants, ``cross_site`` on everyone's."""
    jobs = progress if isinstance(progress, _Jobs) else _Jobs(len(data), progress)
    sites = list(data)
    models, own, cross = [], [], {}
    for trained_at in sites:
        jobs.start(f"local-only ({setting.label}): {trained_at}")
        model, record = train_model(study, pool(data, [trained_at], "train"), setting, rounds=_rounds(study, config),
                                    seed_parts=("local-only", setting.name, trained_at), device=config.device)
        models.append(record)
        preds = {s: _predict(model, data, s) for s in sites}
        own.append(preds[trained_at])
        cross[trained_at] = {s: _score(p, config, seed_key=s) for s, p in preds.items()}
    per_site = {s: cross[s][s] for s in sites}
    return _result("local-only", setting, models, per_site, _score(_concat(own), config, seed_key="pooled"),
                   cross_site=cross)


def run_leave_one_site_out(study: Study, data: Mapping[str, SiteData], setting: PrivacySetting, *,
                           config: EvaluationConfig = EvaluationConfig(),
                           progress: ProgressHook | None = None) -> ProtocolResult:
    """For each site: a model on the other sites' training participants pooled, scored on this site."""
    sites = list(data)
    if len(sites) < 2:
        raise EvaluationError(f"leave-one-site-out needs at least 2 sites, got {len(sites)}: add a --site or drop loso")
    jobs = progress if isinstance(progress, _Jobs) else _Jobs(len(sites), progress)
    models, per_site, held_out = [], {}, []
    for site in sites:
        others = [s for s in sites if s != site]
        jobs.start(f"leave-one-site-out ({setting.label}): {site} held out")
        model, record = train_model(study, pool(data, others, "train"), setting, rounds=_rounds(study, config),
                                    seed_parts=("loso", setting.name, site), device=config.device)
        models.append(record)
        pred = _predict(model, data, site)
        held_out.append(pred)
        per_site[site] = _score(pred, config, seed_key=site)
    return _result("leave-one-site-out", setting, models, per_site, _score(_concat(held_out), config, seed_key="pooled"))


_RUNNERS = {"centralised": run_centralised, "local-only": run_local_only, "leave-one-site-out": run_leave_one_site_out}


# --------------------------------------------------------------------------- federated
class FederatedSite(BaseModel):
    """A site's entry in ``summary.json`` (``fedneuro.federation.results``); other keys ignored."""

    model_config = ConfigDict(extra="ignore")

    epsilon: float | None = None
    delta: float | None = None
    epsilon_accountant: str | None = None
    dp_steps: int = 0
    balanced_accuracy: float | None = None
    test_windows: int = 0
    test_participants: int = 0
    train_windows: int | None = None
    privacy_units: int | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    unit: str | None = None


class FederatedSummary(BaseModel):
    """The parts of a run's ``summary.json`` an evaluation uses."""

    model_config = ConfigDict(extra="ignore")

    study_id: str
    study_digest: str | None = None
    status: str
    rounds: list[dict[str, object]] = Field(default_factory=list)
    final_balanced_accuracy: float | None = None
    final_participant_balanced_accuracy: float | None = None
    sites: dict[str, FederatedSite] = Field(default_factory=dict)
    global_adapter: str | None = None


def load_federated_summary(path: Path) -> FederatedSummary:
    """Read a ``fedneuro simulate`` run's summary.json; a directory means its summary.json."""
    if path.is_dir():
        path = path / "summary.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise EvaluationError(f"Invalid value for '--federated-summary': cannot read {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise EvaluationError(f"Invalid value for '--federated-summary': {path} is not JSON ({error})") from error
    try:
        summary = FederatedSummary.model_validate(raw)
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise EvaluationError(f"{path} is not a fedneuro run summary ({fields}); pass the summary.json that "
                              "`fedneuro simulate --out DIR` wrote") from error
    if summary.status != "completed":
        raise EvaluationError(f"{path}: the run's status is {summary.status!r}, not 'completed'; finish it "
                              "(`fedneuro simulate ... --resume`) before comparing it")
    return summary


def _adapter_beside(summary_path: Path, summary: FederatedSummary) -> Path | None:
    # The summary holds the path the run wrote; the run directory may since have moved.
    candidates = [summary_path.parent / "global_adapter.safetensors"]
    if summary.global_adapter:
        candidates.append(Path(summary.global_adapter))
    return next((p for p in candidates if p.is_file()), None)


def _adapter_provenance(path: Path) -> dict[str, object]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
    return dict(json.loads(metadata.get("provenance", "{}")))


def federated_result(summary_path: Path, study: Study, data: Mapping[str, SiteData], *,
                     config: EvaluationConfig = EvaluationConfig()) -> ProtocolResult:
    """The federated run beside the baselines.

    When the run's global adapter was trained for this study's model (same tensor manifest:
    backbone, weights, adapter, seed, classes) it is scored here on every site's test
    participants, with every metric and interval; otherwise the summary's own balanced
    accuracies are reported (point values only), with a note saying why.
    """
    from safetensors.numpy import load_file

    if summary_path.is_dir():
        summary_path = summary_path / "summary.json"
    summary = load_federated_summary(summary_path)
    if summary.study_id != study.study.id:
        raise EvaluationError(
            f"{summary_path} is a run of study {summary.study_id!r}, but the study evaluated is {study.study.id!r}; "
            "pass the study file that run used"
        )
    sigmas = sorted({s.noise_multiplier for s in summary.sites.values() if s.noise_multiplier is not None})
    name = "dp" if sigmas == [study.privacy.noise_multiplier] else "dp-sigma-" + "-".join(f"{s:g}" for s in sigmas)
    setting = PrivacySetting(name=name, private=True)
    label = f"DP, σ = {', '.join(f'{s:g}' for s in sigmas)}" if sigmas else "DP"
    models = [
        TrainingRecord(trained_on=[site], train_windows=s.train_windows, train_participants=s.privacy_units,
                       private=True, rounds=len(summary.rounds), steps=s.dp_steps, noise_multiplier=s.noise_multiplier,
                       max_grad_norm=s.max_grad_norm, unit=s.unit, epsilon=s.epsilon, delta=s.delta,
                       accountant=s.epsilon_accountant)
        for site, s in sorted(summary.sites.items())
    ]
    notes: list[str] = []
    if len(summary.rounds) != study.federation.rounds:
        notes.append(f"the run has {len(summary.rounds)} rounds; the study file says {study.federation.rounds}")
    missing = sorted(set(data) - set(summary.sites))
    if missing:
        notes.append(f"site(s) {missing} took no part in the federated run")
    adapter_path = _adapter_beside(summary_path, summary)
    adapted = build_study_model(study)
    manifest = exchange_manifest(adapted).digest()
    provenance = _adapter_provenance(adapter_path) if adapter_path else {}
    if adapter_path is not None and provenance.get("tensor_manifest_sha256") == manifest:
        load_trainable_state(adapted.module, load_file(str(adapter_path)))
        preds = {s: _predict(adapted.module, data, s) for s in data}
        per_site = {s: _score(p, config, seed_key=s) for s, p in preds.items()}
        pooled = _score(_concat(list(preds.values())), config, seed_key="pooled")
        notes.insert(0, "global adapter re-scored on every site's test participants")
    else:
        if adapter_path is None:
            why = "no global_adapter.safetensors beside it"
        elif "tensor_manifest_sha256" not in provenance:
            why = (f"{adapter_path.name} carries no provenance (tensor_manifest_sha256), so it cannot be "
                   "bound to this model")
        else:
            why = (f"{adapter_path.name} was trained for another model (backbone, weights, adapter, seed or classes "
                   "differ from this study's)")
        notes.insert(0, f"{why}: balanced accuracy as the run reported it, no intervals")
        per_site = {
            site: LevelMetrics(window=_reported(s.balanced_accuracy, s.test_windows, s.test_participants, study))
            for site, s in sorted(summary.sites.items()) if site in data or not data
        }
        windows = sum(s.test_windows for s in summary.sites.values())
        participants = sum(s.test_participants for s in summary.sites.values())
        pooled = LevelMetrics(
            window=_reported(summary.final_balanced_accuracy, windows, participants, study),
            participant=_reported(summary.final_participant_balanced_accuracy, participants, participants, study,
                                  level="participant"),
        )
    return _result("federated", setting, models, per_site, pooled, label=label, source=str(summary_path), notes=notes)


def _reported(value: float | None, n_samples: int, n_participants: int, study: Study,
              level: Literal["window", "participant"] = "window") -> MetricSet:
    return MetricSet(task="classification", level=level, n_samples=n_samples, n_participants=n_participants,
                     n_classes=study.n_classes, metrics={"balanced_accuracy": MetricValue(value=value)},
                     notes=["reported by the federated run"])


# --------------------------------------------------------------------------- everything
def count_jobs(protocols: Sequence[ProtocolName], n_sites: int, n_settings: int) -> int:
    per = {"centralised": 1, "local-only": n_sites, "leave-one-site-out": n_sites, "federated": 0}
    return n_settings * sum(per[p] for p in protocols)


def run_evaluation(
    study: Study,
    data: Mapping[str, SiteData],
    *,
    protocols: Sequence[ProtocolName] = TRAINED_PROTOCOLS,
    settings: Sequence[PrivacySetting] = (PrivacySetting(name="dp", private=True),),
    federated_summaries: Sequence[Path] = (),
    config: EvaluationConfig = EvaluationConfig(),
    quick: bool = False,
    progress: ProgressHook | None = None,
) -> EvaluationReport:
    """Run ``protocols`` under every setting, add federated runs, and collect one report."""
    started = time.monotonic()
    unknown = [p for p in protocols if p not in _RUNNERS]
    if unknown:
        raise EvaluationError(f"Invalid protocol(s) {unknown}; allowed: {', '.join(_RUNNERS)}")
    jobs = _Jobs(count_jobs(protocols, len(data), len(settings)), progress)
    results = [_RUNNERS[p](study, data, s, config=config, progress=jobs) for s in settings for p in protocols]
    results += [federated_result(path, study, data, config=config) for path in federated_summaries]
    jobs.finish()
    return EvaluationReport(
        study_id=study.study.id, study_digest=study.digest(), backbone=study.model.backbone, n_classes=study.n_classes,
        rounds=_rounds(study, config), local_epochs=study.training.local_epochs, config=config, quick=quick,
        sites=site_info(data), results=results, wall_time_s=time.monotonic() - started,
    )
