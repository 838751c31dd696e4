"""Standalone models: merge a trained adapter into its backbone, write it, load it back.

A model directory holds ``model.safetensors`` (the merged backbone's state dict, keys of the
plain preset: loadable without peft) and ``model.json`` (:class:`ModelCard`: preset, input
contract, classes, the preprocessing that produced the training windows, and the
provenance the coordinator stored in the adapter file's safetensors metadata).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedneuro import __version__
from fedneuro.data.mri_spec import MRIContract, MRIDataSpec
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.models.manifest import ExchangeError, TensorManifest
from fedneuro.models.spec import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from fedneuro.models.adapters import AdaptedModel

logger = logging.getLogger(__name__)

MODEL_FORMAT = "fedneuro-model/1"
MODEL_FILE = "model.safetensors"
CARD_FILE = "model.json"


class ModelFileError(ValueError):
    """A model directory or adapter file that cannot be used; names the file and the fix."""


class ModelCard(BaseModel):
    """``model.json``: everything needed to use ``model.safetensors`` without the study."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    format: Literal["fedneuro-model/1"] = MODEL_FORMAT
    fedneuro_version: str = __version__
    preset: str
    family: str
    modality: Literal["eeg", "mri"]
    contract: InputContract | MRIContract
    n_outputs: int = Field(ge=1)
    class_names: list[str] = Field(description="class name of each output index")
    classes: dict[str, int] = Field(description="label value -> class index, as in the study")
    data: DataSpec | None = Field(
        default=None, description="EEG: the study's [data] section (how recordings become windows)"
    )
    mri: MRIDataSpec | None = Field(
        default=None, description="MRI: the study's [mri] section (how images become volumes)"
    )
    model: ModelSpec = Field(description="the study's [model] section")
    weights_sha256: str | None = Field(description="pretrained backbone weights; None = random init")
    seed: int = Field(description="the study seed the backbone was initialised from")
    study_id: str | None = None
    study_digest: str | None = None
    adapter_sha256: str
    model_sha256: str
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        expected = MRIContract if self.modality == "mri" else InputContract
        if not isinstance(self.contract, expected):
            raise ValueError(f"modality {self.modality!r} needs an {expected.__name__} contract")
        if len(self.class_names) != self.n_outputs:
            raise ValueError(f"{len(self.class_names)} class names for {self.n_outputs} outputs")
        return self


@dataclass
class LoadedModel:
    """A ready-to-run merged model (eval mode, frozen) and its card."""

    module: nn.Module
    card: ModelCard
    source: str


@dataclass(frozen=True)
class AdapterFile:
    """A trained adapter: its tensors and the provenance stored in its metadata."""

    path: Path
    state: dict[str, np.ndarray]
    provenance: dict[str, Any]
    sha256: str


def class_names(classes: dict[str, int]) -> list[str]:
    """Name of each class index: the first label mapped to it (the study's ``classes``)."""
    names: dict[int, str] = {}
    for label, index in classes.items():
        names.setdefault(index, label)
    return [names[i] for i in sorted(names)]


def read_adapter_file(path: Path) -> AdapterFile:
    """Read a ``.safetensors`` adapter (as the coordinator saves it) with its provenance."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    from fedneuro.models.weights import file_sha256

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"adapter file {path} does not exist: give the global_adapter.safetensors that "
            "`fedneuro simulate` (or the coordinator) wrote in its output directory"
        )
    if path.suffix != ".safetensors":
        raise ModelFileError(f"adapter file {path} has suffix {path.suffix!r}: give a .safetensors adapter")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"adapter file {path} is not a readable safetensors file: {error}") from None
    provenance: dict[str, Any] = {}
    if "provenance" in metadata:
        try:
            provenance = json.loads(metadata["provenance"])
        except json.JSONDecodeError as error:
            raise ModelFileError(f"adapter file {path}: its 'provenance' metadata is not JSON ({error})") from None
    else:
        logger.warning("adapter file %s carries no provenance metadata: only its tensors are checked", path)
    return AdapterFile(path=path, state=dict(sorted(state.items())), provenance=provenance, sha256=file_sha256(path))


def check_adapter_fits(adapter: AdapterFile, model: AdaptedModel, *, study_id: str | None = None) -> None:
    """Refuse an adapter trained for another model; lists every difference found.

    Compares the provenance (backbone, weights, study id, tensor manifest digest, and the
    full bound exchange manifest when the coordinator stored one) and the tensors themselves.
    """
    from fedneuro.models.exchange import exchange_manifest, trainable_manifest

    prov = adapter.provenance
    problems: list[str] = []
    if "backbone" in prov and prov["backbone"] != model.preset.name:
        problems.append(f"backbone: study has {model.preset.name!r}, adapter was trained on {prov['backbone']!r}")
    if "weights_sha256" in prov and prov["weights_sha256"] != model.weights_sha256:
        problems.append(
            f"weights_sha256: study's backbone weights {_short(model.weights_sha256)}, adapter's "
            f"{_short(prov['weights_sha256'])}"
        )
    if study_id is not None and prov.get("study_id") not in (None, study_id):
        problems.append(f"study id: study file is {study_id!r}, adapter is from {prov['study_id']!r}")
    if "exchange_manifest" in prov:
        raw = prov["exchange_manifest"]
        try:
            received = TensorManifest.from_json(raw if isinstance(raw, str) else json.dumps(raw))
            problems += exchange_manifest(model).differences(received, local="study", remote="adapter")
        except ExchangeError as error:
            problems.append(str(error))
    local = trainable_manifest(model.module)
    if "tensor_manifest_sha256" in prov and prov["tensor_manifest_sha256"] != local.digest():
        problems.append(
            "tensor manifest: the adapter's tensors were made for a different adapter layout "
            "([model.adapter] kind/rank/targets or [data] classes differ from the study)"
        )
    try:
        local.check(adapter.state, source="the adapter's tensors")
    except ExchangeError as error:
        problems.append(str(error))
    if problems:
        raise ModelFileError(
            f"adapter file {adapter.path} does not fit the study's model ({len(problems)} problem(s)):\n  "
            + "\n  ".join(dict.fromkeys(problems))
            + "\nUse the study file the adapter was trained with."
        )


def _short(sha: object) -> str:
    return "None (random init)" if sha is None else f"{str(sha)[:12]}…"


def merge_trained_adapter(
    *, model_spec: ModelSpec, data: DataSpec | None, classes: dict[str, int], seed: int,
    adapter_path: Path, study_id: str | None = None, study_digest: str | None = None,
    mri: MRIDataSpec | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Build the study's model, load the adapter into it (checked), merge; (module, card).

    The card's ``model_sha256`` is empty until :func:`write_model_dir` fills it in.
    """
    from fedneuro.models.adapters import build_model, merge_adapter
    from fedneuro.models.exchange import load_trainable_state

    adapter = read_adapter_file(adapter_path)
    names = class_names(classes)
    model = build_model(model_spec, n_outputs=len(names), seed=seed)
    check_adapter_fits(adapter, model, study_id=study_id)
    load_trainable_state(model.module, adapter.state)
    if study_digest and adapter.provenance.get("study_digest") not in (None, study_digest):
        logger.info("adapter %s was trained under another version of the study file (digest differs)", adapter_path)
    card = ModelCard(
        preset=model.preset.name,
        family=model.preset.family,
        modality=model.preset.modality,
        contract=model.preset.contract,
        n_outputs=len(names),
        class_names=names,
        classes=dict(classes),
        data=data if model.preset.modality == "eeg" else None,
        mri=mri if model.preset.modality == "mri" else None,
        model=model_spec,
        weights_sha256=model.weights_sha256,
        seed=seed,
        study_id=study_id,
        study_digest=study_digest,
        adapter_sha256=adapter.sha256,
        model_sha256="",
        provenance=adapter.provenance,
    )
    return merge_adapter(model), card


def write_model_dir(module: nn.Module, card: ModelCard, out_dir: Path, *, overwrite: bool = False) -> ModelCard:
    """Write ``model.safetensors`` and ``model.json``; returns the card with the file's sha256.

    Refuses a non-empty ``out_dir`` unless ``overwrite``. Files are written under temporary
    names and renamed, so a crash leaves no half-written model.
    """
    from safetensors.torch import save_file

    from fedneuro.models.weights import file_sha256

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelFileError(f"model directory {out_dir} is a file: give a directory path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ModelFileError(f"model directory {out_dir} is not empty: choose another --out or pass --force")
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    tmp = out_dir / f".{MODEL_FILE}.tmp"
    save_file(state, str(tmp), metadata={"format": MODEL_FORMAT, "preset": card.preset})
    os.replace(tmp, out_dir / MODEL_FILE)
    card = card.model_copy(update={"model_sha256": file_sha256(out_dir / MODEL_FILE)})
    tmp_card = out_dir / f".{CARD_FILE}.tmp"
    tmp_card.write_text(json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_card, out_dir / CARD_FILE)
    return card


def read_model_card(model_dir: Path) -> ModelCard:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(
            f"model directory {model_dir} does not exist: create it with `fedneuro model export "
            "--study STUDY.toml --adapter ADAPTER.safetensors --out DIR`"
        )
    path = model_dir / CARD_FILE
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: {model_dir} is not a model directory written by `fedneuro model export`")
    try:
        return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise ModelFileError(f"{path} is not a valid model card ({problems}): export the model again") from None


def load_model_dir(model_dir: Path) -> LoadedModel:
    """Load an exported model: card, preset rebuilt, weights checked (sha256, keys) and loaded."""
    import torch

    from fedneuro.models.registry import get_backbone_preset
    from fedneuro.models.weights import WeightsError, file_sha256, load_backbone_weights

    model_dir = Path(model_dir)
    card = read_model_card(model_dir)
    weights = model_dir / MODEL_FILE
    if not weights.is_file():
        raise ModelFileError(f"{weights} is missing: export the model again")
    sha = file_sha256(weights)
    if sha != card.model_sha256:
        raise ModelFileError(
            f"{weights} does not match {model_dir / CARD_FILE} (sha256 {sha[:12]}…, card says "
            f"{card.model_sha256[:12]}…): the directory was modified or is incomplete; export again"
        )
    try:
        preset = get_backbone_preset(card.preset)
    except ValueError as error:
        raise ModelFileError(f"{model_dir / CARD_FILE}: {error}") from None
    if preset.contract != card.contract:
        raise ModelFileError(
            f"{model_dir}: exported for preset {card.preset!r} with input {card.contract!r}, but this "
            f"fedneuro's preset takes {preset.contract!r}: use the fedneuro version that exported it "
            f"({card.fedneuro_version})"
        )
    with torch.random.fork_rng(devices=[]):
        module = preset.build(preset, card.n_outputs)
    try:
        load_backbone_weights(module, weights)
    except WeightsError as error:
        raise ModelFileError(f"{error}\nExport the model again with this fedneuro version.") from None
    for parameter in module.parameters():
        parameter.requires_grad = False
    return LoadedModel(module=module.eval(), card=card, source=str(model_dir))


def export_model(
    *, model_spec: ModelSpec, data: DataSpec | None, classes: dict[str, int], seed: int,
    adapter_path: Path, out_dir: Path, study_id: str | None = None, study_digest: str | None = None,
    mri: MRIDataSpec | None = None, overwrite: bool = False,
) -> ModelCard:
    """Merge ``adapter_path`` into the study's backbone and write a model directory."""
    module, card = merge_trained_adapter(
        model_spec=model_spec, data=data, classes=classes, seed=seed, adapter_path=adapter_path,
        study_id=study_id, study_digest=study_digest, mri=mri,
    )
    return write_model_dir(module, card, out_dir, overwrite=overwrite)

