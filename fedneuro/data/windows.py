"""Cutting a continuous (C, N) signal into windows, and per-window artefact rejection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Rejection", "event_windows", "fixed_windows", "reject_windows"]


def fixed_windows(data: np.ndarray, n_times: int, stride: int) -> np.ndarray:
    """(C, N) -> (n, C, n_times), windows every ``stride`` samples from the first sample."""
    if stride < 1:
        raise ValueError(f"Invalid value for the 'stride' parameter: must be >= 1, got {stride}.")
    starts = np.arange(0, data.shape[1] - n_times + 1, stride)
    return _gather(data, starts, n_times)


def event_windows(
    data: np.ndarray, starts: np.ndarray, n_times: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``n_times`` samples at ``starts``; returns (windows, inside mask).

    Windows reaching outside the signal are left out; ``inside[i]`` says whether the
    window of ``starts[i]`` was cut.
    """
    starts = np.asarray(starts, dtype=np.int64)
    inside = (starts >= 0) & (starts + n_times <= data.shape[1])
    return _gather(data, starts[inside], n_times), inside


def _gather(data: np.ndarray, starts: np.ndarray, n_times: int) -> np.ndarray:
    if len(starts) == 0:
        return np.empty((0, data.shape[0], n_times), dtype=data.dtype)
    idx = starts[:, None] + np.arange(n_times)[None, :]
    return data[:, idx].transpose(1, 0, 2)


@dataclass(frozen=True)
class Rejection:
    """Which windows pass (``ok``) and how many failed each test."""

    ok: np.ndarray
    n_flat: int
    n_extreme: int


def reject_windows(
    windows: np.ndarray, *, flat_v: float | None, extreme_v: float | None
) -> Rejection:
    """Reject windows where any channel's peak-to-peak is below ``flat_v`` or above
    ``extreme_v`` (volts; None disables that test)."""
    ptp = windows.max(axis=-1) - windows.min(axis=-1)
    flat = (ptp < flat_v).any(axis=1) if flat_v is not None else np.zeros(len(windows), bool)
    extreme = (
        (ptp > extreme_v).any(axis=1) if extreme_v is not None else np.zeros(len(windows), bool)
    )
    return Rejection(
        ok=~(flat | extreme), n_flat=int(flat.sum()), n_extreme=int((extreme & ~flat).sum())
    )
