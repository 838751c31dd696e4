"""What a site sends, over a whole study: only the exchanged tensors and aggregate metrics.

Every reply of every message (plain rounds, the four SecAgg+ stages, evaluation) is captured
and checked: record names and keys are exactly the allowed ones, tensors are exactly the
exchange manifest's, and no string or byte value holds a participant id, a file path, the
site's data folder or its state folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message
from flwr.common.secure_aggregation.secaggplus_constants import Key
from flwr.supercore.task_identity import TaskIdentity

from inprocess_grid import InProcessGrid
from sites import small_cohort, write_site_config

from fedneuro.federation.codec import encode_arrays
from fedneuro.federation.rounds import run_rounds
from fedneuro.federation.strategies import build_strategy
from fedneuro.models.exchange import exchange_manifest, trainable_state
from fedneuro.study import default_study_path, load_study
from fedneuro.training.site import build_study_model

ALLOWED_TRAIN_METRICS = {"num-examples", "privacy-units", "train-loss", "dp-steps", "epsilon", "delta"}
ALLOWED_EVAL_METRICS = {"num-examples", "eval-loss", "window-confusion", "participant-confusion"}
ALLOWED_SITE_KEYS = {"name", "epsilon-accountant", "manifest-sha256"}
SECURE_FIT_METRICS = (ALLOWED_TRAIN_METRICS - {"num-examples"}) | {"site-name", "epsilon-accountant", "manifest-sha256"}
SECAGG_KEYS = {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2, Key.DESTINATION_LIST, Key.CIPHERTEXT_LIST, Key.MASKED_PARAMETERS,
               Key.NODE_ID_LIST, Key.SHARE_LIST}
CRYPTO_MATERIAL = {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2, Key.CIPHERTEXT_LIST, Key.MASKED_PARAMETERS, Key.SHARE_LIST}


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _participant_ids(bids_root: Path) -> list[str]:
    lines = (bids_root / "participants.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line]


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure-aggregation"])
def test_a_site_sends_only_tensors_and_aggregate_metrics(tmp_path: Path, data_consortium, secure: bool) -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    base = load_study(default_study_path())
    federation = base.federation.model_copy(update={"rounds": 2, "secure_aggregation": base.federation.secure_aggregation.model_copy(
        update={"enabled": secure, "max_weight": 1000.0})})
    study = small_cohort(base.model_copy(update={"model": base.model.model_copy(update={"backbone": "biot-tiny"}), "federation": federation}))
    configs = {}
    for node, (name, root) in enumerate(data_consortium.items(), start=1):
        configs[node] = write_site_config(tmp_path, name, root, noise_seed=node)
    model = build_study_model(study)
    manifest = exchange_manifest(model)
    grid = InProcessGrid(configs)
    run_rounds(grid, build_strategy(study.federation, min_sites=3), initial_arrays=encode_arrays(trainable_state(model.module)),
               manifest=manifest, base_config=ConfigRecord({"study": study.to_json(), "manifest": manifest.to_json()}),
               rounds=2, min_sites=3, connect_timeout_s=1, round_timeout_s=60, max_update_norm=federation.max_update_norm,
               federation=federation, on_round_end=lambda r, a: None)

    forbidden = [str(tmp_path), "/", "\\\\"] + [str(root) for root in data_consortium.values()]
    forbidden += [pid for root in data_consortium.values() for pid in _participant_ids(root)]
    replies: list[Message] = [reply for batch in grid.replies for reply in batch]
    assert len(replies) == 2 * 3 * (5 if secure else 2)
    tensor_names = {t.name for t in manifest.tensors}
    for reply in replies:
        content = reply.content
        for name, record in content.array_records.items():
            if name == "arrays":
                assert set(record) == tensor_names
            else:  # the SecAgg+ mod empties the plain update before it leaves
                assert name == "fitres.parameters" and len(record) == 0
        for name, record in content.metric_records.items():
            if name == "metrics":
                assert set(record) in (ALLOWED_TRAIN_METRICS, ALLOWED_EVAL_METRICS)
                confusion = record.get("participant-confusion")
                if confusion is not None:  # counts over participants, not per-participant values
                    assert all(isinstance(v, int) for v in confusion) and sum(confusion) >= 3
            else:
                assert name == "fitres.num_examples" and set(record) == {"num_examples"}
        for name, record in content.config_records.items():
            keys = set(record)
            if name == "site":
                assert keys <= ALLOWED_SITE_KEYS
            elif name == "fitres.metrics":
                assert keys == SECURE_FIT_METRICS
            elif name == "secaggplus_configs":
                assert keys <= SECAGG_KEYS
            else:
                assert name == "fitres.status", name
            for key, value in record.items():
                if key in CRYPTO_MATERIAL:
                    continue  # cryptographic material: keys, encrypted shares, masked integers
                for text in _strings(value):
                    leaked = [f for f in forbidden if f and f in text]
                    assert not leaked, f"{name}.{key} carries {leaked[:3]}"
        assert not any(np.isnan(v) for r in content.metric_records.values() for v in r.values() if isinstance(v, float))
