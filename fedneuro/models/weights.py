"""Pretrained backbone weights from local files only (no hub at run time)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn


class WeightsError(ValueError):
    """A weights file that cannot be used for the chosen backbone."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Files a braindecode / Hugging Face style model directory keeps its weights in, by preference.
_DIRECTORY_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
# Prefixes training wrappers add to every key (DataParallel, Lightning, encoder exports).
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def resolve_weights_file(path: Path) -> Path:
    """A weights file, or the weights file inside a local model directory."""
    if path.is_dir():
        for name in _DIRECTORY_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise WeightsError(
            f"model directory {path} holds none of {', '.join(_DIRECTORY_WEIGHTS)}: point "
            "[model] weights at the weights file itself"
        )
    return path


def remap_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip one wrapper prefix shared by every key when that makes the keys match."""
    if set(state) & expected:
        return state
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix):]: v for k, v in state.items()}
            if set(stripped) & expected:
                return stripped
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file or a PyTorch state dict (.pt/.pth/.bin), never executing code."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist: give a local file path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in {".pt", ".pth", ".bin"}:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for bad pickles
            raise WeightsError(f"weights file {path} is not a readable state dict: {error}") from error
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"weights file {path} holds no plain state dict of tensors")
        return state
    raise WeightsError(
        f"weights file {path} has suffix {path.suffix!r}: use .safetensors, .pt, .pth or .bin"
    )


def load_backbone_weights(backbone: nn.Module, path: Path, *, skip_prefixes: tuple[str, ...] = ()) -> str:
    """Load weights strictly (every key must match) and return the file's sha256.

    Keys under ``skip_prefixes`` (the task head) are not loaded: the file may lack them or
    hold them with another shape (a checkpoint's head has its own number of classes).
    """
    def skipped(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in skip_prefixes)

    path = resolve_weights_file(path)
    expected = {k: v for k, v in backbone.state_dict().items() if not skipped(k)}
    state = {k: v for k, v in remap_keys(read_state_dict(path), set(backbone.state_dict())).items() if not skipped(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"weights file {path} does not match the backbone:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"  {title} keys ({len(keys)}): {shown}")
        raise WeightsError("\n".join(lines))
    backbone.load_state_dict(state, strict=not skip_prefixes)
    return file_sha256(path)
