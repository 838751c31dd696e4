"""The coordinator's durable state after each completed round, so a study can resume.

Three files in ``checkpoint/``: the global adapter and the strategy's optimiser state
(safetensors), and ``state.json`` written last with both files' sha256 — the commit point.
A crash mid-write leaves the previous round's state.json pointing at hashes the new tensor
files do not have, which :func:`load_checkpoint` refuses rather than mixing two rounds.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from safetensors.numpy import load_file, save_file

from fedneuro.atomic import write_bytes_atomic, write_text_atomic

# Optimiser state of Flower's FedOpt strategies (FedAdam, FedYogi, FedAdagrad).
STRATEGY_STATE = ("m_t", "v_t")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from."""


class CoordinatorState(BaseModel):
    study_id: str
    study_digest: str
    manifest_digest: str
    completed_round: int
    rounds: list[dict[str, Any]]
    python_random_state: list[Any]
    arrays_sha256: str
    strategy_sha256: str


def _tensor_file_bytes(tensors: dict[str, np.ndarray], path: Path) -> bytes:
    tmp = path.with_name(f".{path.name}.build")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def save_checkpoint(
    directory: Path,
    *,
    study_id: str,
    study_digest: str,
    manifest_digest: str,
    completed_round: int,
    rounds: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    strategy: object,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    strategy_state = {
        f"{attr}/{name}": value
        for attr in STRATEGY_STATE
        for name, value in (getattr(strategy, attr, None) or {}).items()
    }
    blobs = {
        "arrays.safetensors": _tensor_file_bytes(arrays, directory / "arrays.safetensors"),
        "strategy.safetensors": _tensor_file_bytes(strategy_state, directory / "strategy.safetensors"),
    }
    for name, data in blobs.items():
        write_bytes_atomic(directory / name, data)
    state = CoordinatorState(
        study_id=study_id,
        study_digest=study_digest,
        manifest_digest=manifest_digest,
        completed_round=completed_round,
        rounds=rounds,
        python_random_state=json.loads(json.dumps(random.getstate())),
        arrays_sha256=hashlib.sha256(blobs["arrays.safetensors"]).hexdigest(),
        strategy_sha256=hashlib.sha256(blobs["strategy.safetensors"]).hexdigest(),
    )
    write_text_atomic(directory / "state.json", state.model_dump_json(indent=2))


def load_checkpoint(directory: Path, *, study_digest: str, manifest_digest: str) -> tuple[CoordinatorState, dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """State, global arrays and strategy state of the last completed round."""
    state_path = directory / "state.json"
    try:
        state = CoordinatorState.model_validate_json(state_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"no checkpoint to resume from at {state_path}: {error.strerror}") from error
    except ValueError as error:
        raise CheckpointError(f"checkpoint {state_path} is unreadable: {error}") from error
    if state.study_digest != study_digest:
        raise CheckpointError(
            f"checkpoint {state_path} belongs to another version of study {state.study_id!r} "
            "(its settings changed): resume with the study file it started with, or start a new run"
        )
    if state.manifest_digest != manifest_digest:
        raise CheckpointError(f"checkpoint {state_path} was made for another model (exchange manifest differs)")
    tensors = {}
    for name, expected in (("arrays.safetensors", state.arrays_sha256), ("strategy.safetensors", state.strategy_sha256)):
        data = (directory / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(
                f"checkpoint file {directory / name} does not match {state_path} (a write was "
                "interrupted): the checkpoint cannot be trusted; start a new run"
            )
        tensors[name] = load_file(str(directory / name))
    strategy_state: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors["strategy.safetensors"].items():
        attr, _, name = key.partition("/")
        strategy_state.setdefault(attr, {})[name] = value
    return state, tensors["arrays.safetensors"], strategy_state


def restore_strategy(strategy: object, strategy_state: dict[str, dict[str, np.ndarray]]) -> None:
    for attr, values in strategy_state.items():
        if attr in STRATEGY_STATE:
            setattr(strategy, attr, values)


def restore_random_state(state: CoordinatorState) -> None:
    version, internal, gauss = state.python_random_state
    random.setstate((version, tuple(internal), gauss))
