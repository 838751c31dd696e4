"""Manifest of the exchanged tensors: names, shapes, dtypes, and the model they belong to.

numpy and pydantic only, so both ends can check. ``TensorManifest.model`` binds the tensors
to the model they adapt (backbone preset, backbone weights, adapter settings, head size,
initialisation seed): tensors of the right shapes for a different model must be refused
too, with every difference named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError


class ExchangeError(ValueError):
    """Exchanged tensors that do not match what both ends agreed to exchange."""


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: tuple[int, ...]
    dtype: str


class ModelBinding(BaseModel):
    """The model the exchanged tensors belong to (what both ends must have built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    weights_sha256: str | None  # None = random initialisation from ``seed``
    adapter: dict[str, Any]  # the study's [model.adapter], as JSON
    n_outputs: int
    seed: int  # the study seed the model was initialised from

    def differences(self, other: ModelBinding, *, local: str, remote: str) -> list[str]:
        """One line per differing field: "backbone: site has 'x', coordinator sent 'y'"."""
        mine, theirs = _flatten(self.model_dump(mode="json")), _flatten(other.model_dump(mode="json"))
        lines = []
        for key in sorted(set(mine) | set(theirs), key=_field_order):
            a, b = mine.get(key, "<absent>"), theirs.get(key, "<absent>")
            if a != b:
                lines.append(f"{key}: {local} has {_show(key, a)}, {remote} sent {_show(key, b)}")
        return lines


_ORDER = ("backbone", "weights_sha256", "adapter", "n_outputs", "seed")


def _field_order(key: str) -> tuple[int, str]:
    head = key.split(".")[0]
    return (_ORDER.index(head) if head in _ORDER else len(_ORDER), key)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(key: str, value: Any) -> str:
    if key == "weights_sha256":
        return "None (random initialisation)" if value is None else f"{str(value)[:12]}… (local weights file)"
    return repr(value)


class TensorManifest(BaseModel):
    """The ordered list of tensors that cross the wire, optionally bound to a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensors: tuple[TensorSpec, ...]
    model: ModelBinding | None = None

    @classmethod
    def describe(cls, state: Mapping[str, np.ndarray], *, model: ModelBinding | None = None) -> TensorManifest:
        return cls(
            tensors=tuple(
                TensorSpec(name=name, shape=tuple(np.shape(value)), dtype=str(np.asarray(value).dtype))
                for name, value in state.items()
            ),
            model=model,
        )

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in self.tensors)

    def _payload(self) -> dict[str, Any]:
        payload = self.model_dump(mode="json")
        if payload["model"] is None:  # digests of unbound manifests stay what they were
            del payload["model"]
        return payload

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self._payload(), sort_keys=True).encode()).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON (for a Flower ConfigRecord string or a file)."""
        return json.dumps(self._payload(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "manifest") -> TensorManifest:
        """Parse :meth:`to_json` output; ``ExchangeError`` naming ``source`` when malformed."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
            )
            raise ExchangeError(f"{source} is not a valid exchange manifest: {problems}") from None

    def differences(self, other: TensorManifest, *, local: str = "site", remote: str = "coordinator") -> list[str]:
        """Every difference between this (local) manifest and ``other`` (received)."""
        problems: list[str] = []
        if self.model is not None and other.model is not None:
            problems += self.model.differences(other.model, local=local, remote=remote)
        elif self.model is not None or other.model is not None:
            missing = remote if other.model is None else local
            problems.append(
                f"model binding: {missing} has none (built without exchange_manifest, or an older "
                "fedneuro): both ends must bind the tensors to their model"
            )
        mine = {t.name: t for t in self.tensors}
        theirs = {t.name: t for t in other.tensors}
        only_mine = [n for n in mine if n not in theirs]
        only_theirs = [n for n in theirs if n not in mine]
        if only_mine:
            problems.append(f"tensors: {remote} lacks {len(only_mine)} of {local}'s ({_names(only_mine)})")
        if only_theirs:
            problems.append(f"tensors: {remote} sent {len(only_theirs)} unknown to {local} ({_names(only_theirs)})")
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(
                    f"{name}: {local} has {a.shape} {a.dtype}, {remote} sent {b.shape} {b.dtype}"
                )
        if not only_mine and not only_theirs and self.names != other.names:
            problems.append(f"tensor order: {remote}'s differs from {local}'s (exchange order is by name)")
        return problems

    def check_matches(self, other: TensorManifest, *, local: str = "site", remote: str = "coordinator") -> None:
        """Raise ExchangeError listing every difference between this manifest and ``other``."""
        problems = self.differences(other, local=local, remote=remote)
        if problems:
            raise ExchangeError(
                f"model mismatch between {local} and {remote} ({len(problems)} difference(s)):\n  "
                + "\n  ".join(problems)
                + "\nBoth ends must build the model from the same study file ([model] backbone, "
                "weights, [model.adapter], [data] classes, [study] seed) and fedneuro version."
            )

    def check(self, state: Mapping[str, np.ndarray], *, source: str) -> None:
        """Raise ExchangeError listing every difference between ``state`` and this manifest."""
        problems: list[str] = []
        expected = {t.name: t for t in self.tensors}
        missing = [n for n in expected if n not in state]
        extra = [n for n in state if n not in expected]
        if missing:
            problems.append(f"missing tensors: {missing}")
        if extra:
            problems.append(f"unexpected tensors: {extra}")
        for name, value in state.items():
            spec = expected.get(name)
            if spec is None:
                continue
            array = np.asarray(value)
            if tuple(array.shape) != spec.shape:
                problems.append(f"{name}: shape {tuple(array.shape)}, expected {spec.shape}")
            if str(array.dtype) != spec.dtype:
                problems.append(f"{name}: dtype {array.dtype}, expected {spec.dtype}")
            elif np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                problems.append(f"{name}: contains NaN or Inf")
        if problems:
            raise ExchangeError(f"{source} does not match the exchange manifest: " + "; ".join(problems))


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit})" if len(names) > limit else "")
