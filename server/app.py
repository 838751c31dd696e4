"""The coordinator's ServerApp: FedAvg over adapter + head tensors, a report after every round."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedneuro.federation.checkpoint import load_checkpoint, restore_random_state, restore_strategy, save_checkpoint
from fedneuro.federation.codec import decode_arrays, encode_arrays
from fedneuro.atomic import write_bytes_atomic
from fedneuro.federation.launch import Launch, launch_for_run
from fedneuro.governance.audit import AuditLog
from fedneuro.governance.keys import load_signing_key, public_key_pem
from fedneuro.logs import configure_from_env
from fedneuro.federation.results import StudyRecord, save_adapter
from fedneuro.federation.rounds import RoundReport, run_rounds
from fedneuro.federation.tracking import RoundTracker
from fedneuro.federation.strategies import build_strategy
from fedneuro.models.exchange import exchange_manifest, trainable_state
from fedneuro.study import load_study
from fedneuro.training.site import build_study_model

logger = logging.getLogger("fedneuro.server")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    configure_from_env()  # deployment: `server start --log-format` (FEDNEURO_LOG_FORMAT); simulation: no-op
    launch = launch_for_run(dict(context.run_config))
    study = load_study(launch.study_path)
    started = time.monotonic()
    model = build_study_model(study)
    manifest = exchange_manifest(model)
    initial = trainable_state(model.module)
    n_sites = launch.n_sites
    checkpoint_dir = launch.out_dir / "checkpoint"
    min_sites = study.federation.min_sites or n_sites
    backbone_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters()) - manifest.nbytes
    record = StudyRecord(
        launch.out_dir,
        header={
            "study_id": study.study.id,
            "study_digest": study.digest(),
            "backbone": study.model.backbone,
            "weights_sha256": model.weights_sha256,
            "adapter": study.model.adapter.model_dump(mode="json"),
            "adapter_bytes": manifest.nbytes,
            "backbone_bytes": backbone_bytes,
            "privacy_labels": {
                "unit": study.privacy.unit,
                "neighbouring_relation": study.privacy.neighbouring_relation(),
                "max_windows_per_participant": study.privacy.max_windows_per_participant,
                "noise_multiplier": study.privacy.noise_multiplier,
                "max_grad_norm": study.privacy.max_grad_norm,
            },
        },
    )
    audit = _audit_log(launch)

    def audited(event: str, data: dict[str, Any]) -> None:
        if audit is not None:
            audit.append(event, data, now=datetime.now(UTC))

    logger.info("study %s: %d sites, %d rounds, backbone %s, %d adapter bytes exchanged per site",
                study.study.id, n_sites, study.federation.rounds, study.model.backbone, manifest.nbytes,
                extra={"study": study.study.id})
    tracker = RoundTracker(launch.out_dir)  # TensorBoard event files: <study>/tensorboard/

    def on_round_end(report: RoundReport, arrays: object) -> None:
        record.add(report)
        audited("round-finished", {
            "round": report.round,
            "contributing_sites": sorted(n for n, s in report.sites.items() if s.num_examples),
            "epsilon_per_site": {n: s.epsilon for n, s in sorted(report.sites.items()) if s.num_examples},
            "bytes_uploaded_per_site": {n: s.bytes_uploaded for n, s in sorted(report.sites.items()) if s.num_examples},
            "balanced_accuracy": report.balanced_accuracy,
            "failures": report.failures,
            "global_adapter_round": report.round,
        })
        state = decode_arrays(arrays, manifest, source="aggregated model")  # type: ignore[arg-type]
        save_adapter(
            record.adapter_path,
            state,
            {
                "study_id": study.study.id,
                "study_digest": study.digest(),
                "round": report.round,
                "backbone": study.model.backbone,
                "weights_sha256": model.weights_sha256,
                "contributing_sites": sorted(n for n, s in report.sites.items() if s.num_examples),
                "epsilon_per_site": {n: s.epsilon for n, s in report.sites.items() if s.num_examples},
                "delta_per_site": {n: s.delta for n, s in report.sites.items() if s.num_examples},
                "privacy_unit": study.privacy.unit,
                "tensor_manifest_sha256": manifest.digest(),
            },
        )
        save_checkpoint(
            checkpoint_dir,
            study_id=study.study.id,
            study_digest=study.digest(),
            manifest_digest=manifest.digest(),
            completed_round=report.round,
            rounds=record.rounds,
            arrays=state,
            strategy=strategy,
        )
        record.write(status="running", wall_time_s=time.monotonic() - started)
        tracker.log_round(report)  # after the checkpoint: a resumed study redoes no tracked round
        eps = ", ".join(f"{n} ε={s.epsilon:.2f}" for n, s in sorted(report.sites.items()))
        logger.info("round %d/%d: balanced accuracy %.3f (participants %.3f) | %s | %.1f s",
                    report.round, study.federation.rounds, report.balanced_accuracy,
                    report.participant_balanced_accuracy, eps, report.wall_time_s,
                    extra={"study": study.study.id, "round": report.round})

    strategy = build_strategy(study.federation, min_sites=min_sites)
    first_round = 1
    if not launch.resume and (checkpoint_dir / "state.json").is_file():
        raise RuntimeError(
            f"study {study.study.id} already has completed rounds in {launch.out_dir}: continue it with "
            "`fedneuro server resume STUDY`, or give the study a new [study] id"
        )
    if launch.resume:
        state, arrays, strategy_state = load_checkpoint(
            checkpoint_dir, study_digest=study.digest(), manifest_digest=manifest.digest()
        )
        restore_strategy(strategy, strategy_state)
        restore_random_state(state)
        initial, first_round, record.rounds = arrays, state.completed_round + 1, state.rounds
        logger.info("resuming study %s after round %d", study.study.id, state.completed_round,
                    extra={"study": study.study.id, "round": state.completed_round})
    remaining = study.federation.rounds - first_round + 1
    if remaining <= 0:
        record.write(status="completed", wall_time_s=time.monotonic() - started)
        return
    audited("study-started", {
        "study_id": study.study.id,
        "study_digest": study.digest(),
        "tensor_manifest_sha256": manifest.digest(),
        "first_round": first_round,
        "rounds": study.federation.rounds,
        "expected_sites": n_sites,
        "secure_aggregation": study.federation.secure_aggregation.enabled,
        "strategy": study.federation.strategy,
    })
    try:
        run_rounds(
            grid,
            strategy,
            first_round=first_round,
            initial_arrays=encode_arrays(initial),
            manifest=manifest,
            base_config=ConfigRecord({"study": study.to_json(), "manifest": manifest.to_json(),
                                      "study-signature": launch.study_signature or ""}),
            rounds=remaining,
            min_sites=min_sites,
            connect_timeout_s=study.federation.connect_timeout_s,
            round_timeout_s=study.federation.round_timeout_s,
            max_update_norm=study.federation.max_update_norm,
            federation=study.federation,
            on_round_end=on_round_end,
        )
    except Exception as error:
        record.write(status="failed", wall_time_s=time.monotonic() - started)
        audited("study-failed", {"study_id": study.study.id, "error": str(error)[:2000]})
        raise
    record.write(status="completed", wall_time_s=time.monotonic() - started)
    audited("study-completed", {"study_id": study.study.id, "rounds": study.federation.rounds})


def _audit_log(launch: Launch) -> AuditLog | None:
    """The coordinator's signed audit log in the study's output folder, with its public key
    beside it (``coordinator.pub``) so anyone can verify the chain."""
    if launch.signing_key is None:
        logger.warning("no coordinator signing key: this study's coordinator audit log is not written")
        return None
    key = load_signing_key(launch.signing_key)
    launch.out_dir.mkdir(parents=True, exist_ok=True)
    public = launch.out_dir / "coordinator.pub"
    if not public.is_file():
        write_bytes_atomic(public, public_key_pem(key.public_key()))
    return AuditLog(launch.out_dir / "coordinator.audit.jsonl", key, actor="coordinator")
