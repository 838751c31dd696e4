"""Manifest of the exchanged tensors: names, shapes, dtypes. numpy only, so both ends can check."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict


class ExchangeError(ValueError):
    """Exchanged tensors that do not match what both ends agreed to exchange."""


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: tuple[int, ...]
    dtype: str


class TensorManifest(BaseModel):
    """The ordered list of tensors that cross the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def describe(cls, state: Mapping[str, np.ndarray]) -> TensorManifest:
        return cls(
            tensors=tuple(
                TensorSpec(name=name, shape=tuple(np.shape(value)), dtype=str(np.asarray(value).dtype))
                for name, value in state.items()
            )
        )

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in self.tensors)

    def digest(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()

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
