"""The one place that turns exchanged tensors and metrics into Flower records and back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from fedneuro.models.manifest import ExchangeError, TensorManifest


def encode_arrays(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named tensors -> ArrayRecord, keeping names and order (Flower stores raw bytes)."""
    return ArrayRecord(
        array_dict=OrderedDict(
            (name, Array(np.ascontiguousarray(value))) for name, value in state.items()
        )
    )


def decode_arrays(record: ArrayRecord, manifest: TensorManifest | None = None, *, source: str = "arrays") -> dict[str, np.ndarray]:
    """ArrayRecord -> named numpy arrays, checked against ``manifest`` when given.

    Raises :class:`ExchangeError` naming ``source`` and the tensor when bytes do not decode.
    """
    state: dict[str, np.ndarray] = {}
    undecodable: list[str] = []
    for name, array in record.items():
        try:
            state[name] = array.numpy()
        except (ValueError, TypeError, EOFError, OSError) as error:  # np.load of hostile bytes
            undecodable.append(f"tensor {name!r} cannot be decoded ({error})")
    if undecodable:
        raise ExchangeError(f"{source}: " + "; ".join(undecodable))
    if manifest is not None:
        manifest.check(state, source=source)
    return state


def payload_bytes(record: ArrayRecord) -> int:
    """Bytes of tensor data (plus names) a record carries on the wire."""
    return record.count_bytes()


def encode_ordered(state: Mapping[str, np.ndarray], manifest: TensorManifest) -> list[np.ndarray]:
    """Named tensors -> a list in the manifest's order, for Flower's SecAgg+ (legacy
    ``Parameters`` carry no names; the manifest is what both ends agree the order is)."""
    manifest.check(dict(state), source="tensors to send")
    return [np.ascontiguousarray(state[t.name]) for t in manifest.tensors]


def decode_ordered(arrays: list[np.ndarray], manifest: TensorManifest, *, source: str) -> dict[str, np.ndarray]:
    """A manifest-ordered list of tensors -> named arrays, checked against the manifest."""
    if len(arrays) != len(manifest.tensors):
        raise ExchangeError(
            f"{source}: {len(arrays)} tensors received, but the exchange manifest lists {len(manifest.tensors)}"
        )
    state = {t.name: np.asarray(a) for t, a in zip(manifest.tensors, arrays, strict=True)}
    manifest.check(state, source=source)
    return state
