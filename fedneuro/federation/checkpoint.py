"""The coordinator's durable state after each completed round, so a study can resume.

Three files in ``checkpoint/``: the global adapter and the strategy's optimiser state
(safetensors), and ``state.json`` written last with both files' sha256 — the commit point.
All three are written to temporary files before any is renamed into place, so a failed
write (disk full, read-only folder) leaves the previous round's checkpoint whole. A crash
between the renames leaves the previous round's state.json pointing at hashes the new tensor
files do not have, which :func:`load_checkpoint` refuses rather than mixing two rounds.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from fedneuro.atomic import write_files_atomic

# Optimiser state of Flower's FedOpt strategies (FedAdam, FedYogi, FedAdagrad).
STRATEGY_STATE = ("m_t", "v_t")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from, or cannot be saved."""


class CoordinatorState(BaseModel):
    study_id: str
    study_digest: str
    manifest_digest: str
    completed_round: int = Field(ge=0)
    rounds: list[dict[str, Any]]
    python_random_state: list[Any]
    arrays_sha256: str
    strategy_sha256: str

    @field_validator("python_random_state")
    @classmethod
    def _a_random_state(cls, value: list[Any]) -> list[Any]:
        try:
            version, internal, gauss = value
            random.Random().setstate((version, tuple(internal), gauss))
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"not a state of Python's random module ({error})") from None
        return value


def _tensor_file_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()})


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
    strategy_state = {
        f"{attr}/{name}": value
        for attr in STRATEGY_STATE
        for name, value in (getattr(strategy, attr, None) or {}).items()
    }
    blobs = {
        "arrays.safetensors": _tensor_file_bytes(arrays),
        "strategy.safetensors": _tensor_file_bytes(strategy_state),
    }
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
    files = [(directory / name, data) for name, data in blobs.items()]
    files.append((directory / "state.json", state.model_dump_json(indent=2).encode()))  # last: the commit point
    try:
        write_files_atomic(files)
    except OSError as error:
        raise CheckpointError(
            f"checkpoint {directory}: cannot save round {completed_round} ({error.strerror or error}); the previous "
            "checkpoint is unchanged. Check that the coordinator's state folder is writable and has space."
        ) from error


def load_checkpoint(directory: Path, *, study_digest: str, manifest_digest: str) -> tuple[CoordinatorState, dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """State, global arrays and strategy state of the last completed round."""
    state_path = directory / "state.json"
    try:
        state = CoordinatorState.model_validate_json(state_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"no checkpoint to resume from at {state_path}: {error.strerror}") from error
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in error.errors())
        raise CheckpointError(f"checkpoint {state_path} is unreadable: {problems}") from None
    except ValueError as error:  # not UTF-8
        raise CheckpointError(f"checkpoint {state_path} is unreadable: {error}") from None
    if state.study_digest != study_digest:
        raise CheckpointError(
            f"checkpoint {state_path} belongs to another version of study {state.study_id!r} "
            "(its settings changed): resume with the study file it started with, or start a new run"
        )
    if state.manifest_digest != manifest_digest:
        raise CheckpointError(f"checkpoint {state_path} was made for another model (exchange manifest differs)")
    tensors = {}
    for name, expected in (("arrays.safetensors", state.arrays_sha256), ("strategy.safetensors", state.strategy_sha256)):
        try:
            data = (directory / name).read_bytes()
        except OSError as error:
            raise CheckpointError(
                f"checkpoint file {directory / name} is missing or unreadable ({error.strerror}): the checkpoint "
                "cannot be trusted; start a new run"
            ) from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(
                f"checkpoint file {directory / name} does not match {state_path} (a write was "
                "interrupted): the checkpoint cannot be trusted; start a new run"
            )
        try:
            tensors[name] = load_file(str(directory / name))
        except SafetensorError as error:
            raise CheckpointError(
                f"checkpoint file {directory / name} cannot be read as safetensors ({error}), although "
                f"{state_path} names its hash: the checkpoint was tampered with; start a new run"
            ) from None
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
