"""What the site's ClientApp does for a train or evaluate message (imported on first use).

Order of work for every message (the one-way flow of docs/architecture.md):
site config -> study from the message -> consent gate on participants.tsv -> read only the
eligible participants' files -> privacy budget gate -> train with DP / evaluate -> send
adapter tensors and aggregate metrics only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedneuro.federation.codec import decode_arrays, encode_arrays
from fedneuro.federation.launch import site_for_node
from fedneuro.federation.secure_client import (
    clip_update,
    is_secure_round,
    secure_round_config,
    secure_round_global_state,
    secure_round_reply,
)
from fedneuro.atomic import write_bytes_atomic
from fedneuro.governance.audit import AuditLog
from fedneuro.governance.contributions import contributions_path, record_contribution
from fedneuro.governance.gate import Admission, GovernanceRefusal, admit, audit_salt, salted_set_hash
from fedneuro.governance.keys import load_signing_key, public_key_pem
from fedneuro.governance.site import SiteConfig, derive_seed
from fedneuro.models.adapters import AdaptedModel
from fedneuro.models.exchange import check_exchange_manifest, load_trainable_state, trainable_state
from fedneuro.models.manifest import TensorManifest
from fedneuro.privacy.accountant import compute_epsilon, ledger_history, resolve_delta
from fedneuro.privacy.budget import BudgetExceeded, check_round_budget
from fedneuro.privacy.ledger import LedgerEntry, PrivacyLedger
from fedneuro.study import Study
from fedneuro.training.local import evaluate as evaluate_model
from fedneuro.training.local import planned_round, privacy_units, train_dp
from fedneuro.training.site import SiteData, build_study_model, prepare_site_data, site_cohort

logger = logging.getLogger("fedneuro.client")

# Per process: Ray actors (simulation) serve many messages, so the model is built once per
# (site, study) and the harmonised data is kept while the admitted cohort stays the same.
_MODELS: dict[tuple[str, str], AdaptedModel] = {}
_DATA: dict[tuple[str, str], tuple[tuple[str, ...], SiteData]] = {}


def _session(site: SiteConfig, study: Study, msg: Message, audit: AuditLog | None) -> tuple[SiteData, AdaptedModel, Admission]:
    key = (site.name, study.digest())
    if key not in _MODELS:
        _MODELS[key] = build_study_model(study)
    model = _MODELS[key]
    # Governance gate, before any recording is opened: participants.tsv (labels, legacy
    # consent column), then signature, plan approval, policy, per-participant DUO consent.
    universe = site_cohort(site.bids_root, study)
    try:
        admission = admit(site, study, universe, today=datetime.now(UTC).date(),
                          weights_sha256=model.weights_sha256 or "random-init",
                          study_signature=str(_config(msg).get("study-signature", "")) or None)
    except PermissionError as refusal:
        _audit(audit, "run-refused", {"study_id": study.study.id, "study_digest": study.digest(),
                                      "round": int(_config(msg).get("server-round", 0)),  # type: ignore[call-overload]
                                      "reason": str(refusal)})
        raise
    cached = _DATA.get(key)
    if cached is None or cached[0] != admission.cohort.participant_ids:
        # The data layer reads only the admitted cohort; the split is decided over everyone
        # participants.tsv admits, so a withdrawal never moves a test participant into training.
        data = prepare_site_data(site.bids_root, admission.cohort, study, site_name=site.name,
                                 cache_dir=site.state_dir / "window-cache", split_universe=universe)
        _DATA[key] = (admission.cohort.participant_ids, data)
    return _DATA[key][1], model, admission


def _check_metric_floor(site: SiteConfig, study: Study, participants: int, *, what: str) -> None:
    """Metrics leave the site only aggregated over at least the study's floor of participants."""
    floor = study.governance.min_participants_per_metric if study.governance is not None else 1
    if participants < floor:
        raise GovernanceRefusal(
            f"site {site.name}: {what} metrics would cover {participants} participants, below the study's "
            f"min_participants_per_metric {floor}; nothing is sent"
        )


def _site_audit(site: SiteConfig) -> AuditLog | None:
    """The site's signed audit log (``<state>/<site>.audit.jsonl``, public key ``<site>.pub``
    beside it); a site without a signing key keeps none."""
    if site.signing_key is None:
        return None
    key = load_signing_key(site.signing_key)
    public = site.state_dir / f"{site.name}.pub"
    if not public.is_file():
        write_bytes_atomic(public, public_key_pem(key.public_key()))
    return AuditLog(site.state_dir / f"{site.name}.audit.jsonl", key, actor=site.name)


def _audit(audit: AuditLog | None, event: str, data: dict[str, object]) -> None:
    if audit is not None:
        audit.append(event, data, now=datetime.now(UTC))


def _config(msg: Message) -> dict[str, object]:
    """The round's configuration: plain rounds carry ``config``, secure rounds ``fitins.config``."""
    return secure_round_config(msg) if is_secure_round(msg) else dict(msg.content["config"])


def _study_from(msg: Message) -> Study:
    return Study.from_json(str(_config(msg)["study"]))


def _load_global_model(msg: Message, model: AdaptedModel) -> tuple[TensorManifest, dict[str, np.ndarray]]:
    """Refuse a global model built for another backbone, weights, adapter or seed; load it."""
    manifest = check_exchange_manifest(model, str(_config(msg)["manifest"]))
    if is_secure_round(msg):
        state = secure_round_global_state(msg, manifest)
    else:
        state = decode_arrays(msg.content["arrays"], manifest, source="global model")
    load_trainable_state(model.module, state)
    return manifest, state


def train(msg: Message, context: Context) -> Message:
    site = site_for_node(dict(context.node_config))
    study = _study_from(msg)
    config = _config(msg)
    server_round = int(config["server-round"])
    secure = is_secure_round(msg)
    audit = _site_audit(site)
    if site.policy.require_secure_aggregation and not secure:
        refusal = (f"site {site.name}: this site's policy requires secure aggregation, but round {server_round} "
                   f"of study {study.study.id} asks for a plain update; enable [federation.secure_aggregation]")
        _audit(audit, "run-refused", {"study_id": study.study.id, "round": server_round, "reason": refusal})
        raise PermissionError(refusal)
    data, model, admission = _session(site, study, msg, audit)
    # Checked before any DP step is spent: the reply's metrics aggregate the training cohort.
    _check_metric_floor(site, study, len(np.unique(data.train.participant)), what="training")
    privacy = study.privacy
    units = privacy_units(data.train.participant, privacy)
    delta = resolve_delta(privacy.delta, len(np.unique(units)))
    ledger = PrivacyLedger(site.ledger_path)
    planned = planned_round(data.train.participant, training=study.training, privacy=privacy)
    # Budget gate: refuse before touching the model if this round would overspend.
    try:
        check_round_budget(
            site=site.name,
            study_id=study.study.id,
            server_round=server_round,
            study_entries=ledger.entries(study.study.id),
            all_entries=ledger.entries(),
            planned=(planned.noise_multiplier, planned.sample_rate, planned.steps),
            delta=delta,
            accountant=privacy.accountant,
            max_epsilon=site.policy.max_epsilon_per_study,
            max_lifetime_epsilon=site.policy.max_epsilon_lifetime,
        )
    except BudgetExceeded as refusal:
        _audit(audit, "run-refused", {"study_id": study.study.id, "round": server_round, "reason": str(refusal)})
        raise
    manifest, global_state = _load_global_model(msg, model)
    result = train_dp(
        model.module,
        data.train.X,
        data.train.y,
        data.train.participant,
        training=study.training,
        privacy=privacy,
        sampling_seed=derive_seed(study.study.seed, site.name, server_round, "poisson"),
        noise_seed=site.noise_seed_for(study.study.id, server_round),
        device=site.device,
        proximal_mu=float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
    )
    now = datetime.now(UTC).isoformat()
    ledger.append(
        [
            LedgerEntry(
                study_id=study.study.id,
                round=server_round,
                noise_multiplier=h.noise_multiplier,
                sample_rate=h.sample_rate,
                steps=h.steps,
                max_grad_norm=privacy.max_grad_norm,
                unit=privacy.unit,
                max_windows_per_unit=privacy.max_windows_per_participant if privacy.unit == "participant" else 1,
                delta=delta,
                recorded_at=now,
            )
            for h in result.dp_history
        ]
    )
    spent = compute_epsilon(ledger_history(ledger.entries(study.study.id)), delta=delta, accountant=privacy.accountant)
    logger.info("site %s round %d: %d DP steps over %d %ss, ε=%.3f (δ=%g, %s)", site.name, server_round,
                result.steps, result.num_units, privacy.unit, spent.epsilon, delta, spent.accountant,
                extra={"site": site.name, "round": server_round, "study": study.study.id})
    used = sorted(data.train.participant_ids[int(i)] for i in np.unique(data.train.participant))
    # Who contributed to which model version stays at the site (consent impact lookups).
    record_contribution(contributions_path(site.state_dir), study_id=study.study.id, server_round=server_round,
                        participants=used, now=datetime.now(UTC))
    _audit(audit, "round-trained", {
        "study_id": study.study.id,
        "study_digest": study.digest(),
        "round": server_round,
        "plan_hash": admission.approval.plan_hash if admission.approval is not None else None,
        "study_signer": admission.study_signer,
        "participants": len(used),
        "participant_set_sha256": salted_set_hash(used, salt=audit_salt(site.state_dir)),
        "excluded_by_consent": admission.consent.ineligible if admission.consent is not None else None,
        "dp_steps": result.steps,
        "epsilon": spent.epsilon,
        "delta": delta,
        "accountant": spent.accountant,
        "secure_aggregation": secure,
        "bytes_sent": manifest.nbytes * (2 if secure else 1),
    })
    if secure:
        # The update, clipped here (the coordinator cannot check what it cannot see); the
        # SecAgg+ mod masks it and removes this plain copy before the reply leaves the site.
        bound = study.federation.max_update_norm or float("inf")
        local = trainable_state(model.module)
        update, norm = clip_update({k: local[k] - global_state[k] for k in global_state}, bound)
        if norm > bound:
            logger.info("site %s round %d: update norm %.4g clipped to %g", site.name, server_round, norm, bound,
                        extra={"site": site.name, "round": server_round, "study": study.study.id})
        if result.num_examples > study.federation.secure_aggregation.max_weight:
            raise ValueError(
                f"site {site.name}: {result.num_examples} training windows exceed the secure-aggregation "
                f"max_weight {study.federation.secure_aggregation.max_weight:g}; raise "
                "[federation.secure_aggregation] max_weight in the study"
            )
        # SecAgg+ quantises with stochastic rounding from numpy's global generator: seed it so
        # a run is reproducible (the masks come from the protocol's own secrets, not from this).
        np.random.seed(derive_seed(study.study.seed, site.name, server_round, "secagg-rounding") % 2**32)
        reply = secure_round_reply(
            update,
            manifest,
            weight=result.num_examples,
            metrics={
                "privacy-units": result.num_units,
                "train-loss": result.mean_loss,
                "dp-steps": result.steps,
                "epsilon": spent.epsilon,
                "delta": delta,
                "site-name": site.name,
                "epsilon-accountant": spent.accountant,
                "manifest-sha256": manifest.digest(),
            },
        )
        return Message(content=reply, reply_to=msg)
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "privacy-units": result.num_units,
            "train-loss": result.mean_loss,
            "dp-steps": result.steps,
            "epsilon": spent.epsilon,
            "delta": delta,
        }
    )
    content = RecordDict(
        {
            "arrays": encode_arrays(trainable_state(model.module)),
            "metrics": metrics,
            "site": ConfigRecord(
                {"name": site.name, "epsilon-accountant": spent.accountant, "manifest-sha256": manifest.digest()}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    site = site_for_node(dict(context.node_config))
    study = _study_from(msg)
    audit = _site_audit(site)
    data, model, _ = _session(site, study, msg, audit)
    _load_global_model(msg, model)
    _check_metric_floor(site, study, len(np.unique(data.test.participant)), what="evaluation")
    counts = evaluate_model(
        model.module, data.test.X, data.test.y, data.test.participant, n_classes=study.n_classes
    )
    metrics = MetricRecord(
        {
            "num-examples": counts.num_windows,
            "eval-loss": counts.mean_loss,
            "window-confusion": [int(v) for v in counts.window_confusion.ravel()],
            "participant-confusion": [int(v) for v in counts.participant_confusion.ravel()],
        }
    )
    _audit(audit, "round-evaluated", {"study_id": study.study.id, "round": int(_config(msg).get("server-round", 0)),  # type: ignore[call-overload]
                                      "test_participants": int(counts.participant_confusion.sum())})
    content = RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site.name})})
    return Message(content=content, reply_to=msg)
