"""Recordings -> model-ready windows under a backbone's input contract.

Per recording: normalise channel names, map them onto ``contract.channels``, interpolate
missing/flat montage channels, average reference, notch the mains, band-pass, resample to
``contract.sfreq``, cut windows, reject flat/extreme windows, normalise amplitude.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedneuro.data.bids import EligibleCohort, bids_paths_for
from fedneuro.data.channels import map_to_montage
from fedneuro.data.spec import DataSpec, InputContract

if TYPE_CHECKING:
    import mne
    from mne_bids import BIDSPath

__all__ = [
    "EXTREME_PTP_V",
    "FLAT_PTP_V",
    "HarmonisationError",
    "HarmonisationReport",
    "RecordingReport",
    "WindowSet",
    "harmonise_recording",
    "load_site_windows",
    "read_recording",
]

logger = logging.getLogger(__name__)

#: A window is flat when any channel's peak-to-peak is below this (volts).
FLAT_PTP_V = 0.1e-6
#: A window is an artefact when any channel's peak-to-peak exceeds this (volts).
EXTREME_PTP_V = 500e-6
#: With normalisation "none", 100 µV becomes 1.0.
NONE_SCALE_V = 100e-6
# MAD -> standard deviation for Gaussian data.
_MAD_TO_STD = 1.4826


class HarmonisationError(ValueError):
    """A recording cannot be brought to the input contract; the message names the file."""


@dataclass(frozen=True)
class RecordingReport:
    """What harmonisation did to one recording."""

    file: str
    source_sfreq: float
    channels_found: tuple[str, ...]
    interpolated: tuple[str, ...]
    dropped: tuple[str, ...]
    notched: tuple[float, ...]
    n_windows: int
    n_rejected: int
    scale: float | None
    participant_id: str | None = None


@dataclass
class HarmonisationReport:
    """Per-recording reports, refused recordings and participants left without windows."""

    recordings: list[RecordingReport] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    without_windows: dict[str, str] = field(default_factory=dict)

    @property
    def n_windows(self) -> int:
        return sum(r.n_windows for r in self.recordings)

    @property
    def n_rejected(self) -> int:
        return sum(r.n_rejected for r in self.recordings)

    def summary(self) -> str:
        """One line for logs."""
        interp = sorted({c for r in self.recordings for c in r.interpolated})
        return (
            f"{len(self.recordings)} recordings, {self.n_windows} windows kept, "
            f"{self.n_rejected} rejected, interpolated {interp or 'none'}, "
            f"{len(self.refused)} refused, {len(self.without_windows)} participants "
            "without windows"
        )


@dataclass
class WindowSet:
    """Windows of one site: ``X`` (n, C, T) float32, ``y`` and ``participant`` int64.

    ``participant[i]`` indexes ``participant_ids``; every listed participant has at
    least one window.
    """

    X: np.ndarray
    y: np.ndarray
    participant: np.ndarray
    participant_ids: list[str]
    report: HarmonisationReport

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.X.ndim != 3 or len(self.y) != n or len(self.participant) != n:
            raise ValueError(
                f"WindowSet needs X (n, C, T) with y and participant of length n; got X "
                f"{self.X.shape}, y {self.y.shape}, participant {self.participant.shape}."
            )

    def __len__(self) -> int:
        return len(self.X)

    @property
    def participant_labels(self) -> np.ndarray:
        """Class index of each entry of ``participant_ids`` (int64)."""
        labels = np.full(len(self.participant_ids), -1, dtype=np.int64)
        labels[self.participant] = self.y
        return labels

    def subset(self, participant_ids: Iterable[str]) -> WindowSet:
        """The windows of the given participants (kept in this set's order).

        Ids listed in ``report.without_windows`` (known, but nothing usable) are skipped;
        any other id without windows is an error.
        """
        wanted = set(participant_ids)
        unknown = sorted(wanted - set(self.participant_ids) - set(self.report.without_windows))
        if unknown:
            raise ValueError(
                f"Invalid value for the 'participant_ids' parameter: {unknown} have no "
                f"windows in this set (known: {len(self.participant_ids)} participants)."
            )
        keep_ids = [p for p in self.participant_ids if p in wanted]
        old_to_new = np.full(len(self.participant_ids), -1, dtype=np.int64)
        for new, pid in enumerate(keep_ids):
            old_to_new[self.participant_ids.index(pid)] = new
        mask = old_to_new[self.participant] >= 0
        report = HarmonisationReport(
            recordings=[r for r in self.report.recordings if r.participant_id in wanted],
            refused=dict(self.report.refused),
            without_windows=dict(self.report.without_windows),
        )
        return WindowSet(
            X=self.X[mask],
            y=self.y[mask],
            participant=old_to_new[self.participant[mask]],
            participant_ids=keep_ids,
            report=report,
        )


@functools.lru_cache(maxsize=1)
def _montage_name() -> str:
    import mne

    # "standard_1005" is deprecated in MNE 1.13 in favour of "colin27_1005" (same head).
    builtin = mne.channels.get_builtin_montages()
    return "colin27_1005" if "colin27_1005" in builtin else "standard_1005"


def _source_name(raw: mne.io.BaseRaw) -> str:
    fnames = getattr(raw, "filenames", ())
    return Path(fnames[0]).name if fnames and fnames[0] is not None else "<in-memory recording>"


def _interpolate(raw: mne.io.BaseRaw, bads: Sequence[str], fname: str) -> None:
    import mne

    montage = mne.channels.make_standard_montage(_montage_name())
    no_pos = [c for c in raw.ch_names if c not in montage.ch_names]
    if no_pos:
        raise HarmonisationError(
            f"{fname}: cannot interpolate {list(bads)} because channels {no_pos} have no "
            f"position in the {_montage_name()!r} montage. Use 10-05 channel names in the "
            "input contract."
        )
    raw.set_montage(montage, verbose=False)
    raw.info["bads"] = list(bads)
    raw.interpolate_bads(reset_bads=True, origin="auto", verbose=False)


def _windows(data: np.ndarray, n_times: int, stride: int) -> np.ndarray:
    """(C, N) -> (n, C, n_times) by fancy indexing (no Python loop over windows)."""
    n_win = (data.shape[1] - n_times) // stride + 1
    if n_win <= 0:
        return np.empty((0, data.shape[0], n_times), dtype=data.dtype)
    idx = np.arange(n_win)[:, None] * stride + np.arange(n_times)[None, :]
    return data[:, idx].transpose(1, 0, 2)


def harmonise_recording(
    raw: mne.io.BaseRaw, contract: InputContract, spec: DataSpec
) -> tuple[np.ndarray, RecordingReport]:
    """Bring one recording to ``contract``: windows (n, C, T) float32 and a report.

    ``raw`` is not modified. Raises ``HarmonisationError`` (naming the file) when more
    than ``spec.max_missing_channels`` montage channels are missing or flat.
    """
    import mne

    fname = _source_name(raw)
    montage = list(contract.channels)
    eeg_idx = mne.pick_types(raw.info, eeg=True, exclude=[])
    eeg_names = [raw.ch_names[i] for i in eeg_idx]
    try:
        mapping = map_to_montage(eeg_names, montage)
    except ValueError as err:
        raise HarmonisationError(f"{fname}: {err}") from err
    montage = list(mapping.montage)
    bads = set(raw.info["bads"])
    found = [
        (m, eeg_names[i])
        for m, i in zip(montage, mapping.source_index)
        if i is not None and eeg_names[i] not in bads
    ]
    missing = [m for m in montage if m not in {c for c, _ in found}]
    if len(missing) > spec.max_missing_channels or not found:
        raise HarmonisationError(
            f"{fname}: {len(missing)} of the {len(montage)} montage channels are missing or "
            f"marked bad ({missing}); the study allows {spec.max_missing_channels} "
            "(data.max_missing_channels). Fix the recording's channel names/types or "
            "exclude it."
        )

    work = raw.copy().pick([src for _, src in found]).load_data(verbose=False)
    work.rename_channels({src: m for m, src in found}, verbose=False)
    # A dead electrode (flat all along) carries no information: interpolate it as well.
    ptp = np.ptp(work.get_data(), axis=1)
    flat = [work.ch_names[i] for i in np.flatnonzero(ptp < FLAT_PTP_V)]
    interpolated = missing + flat
    if len(interpolated) > spec.max_missing_channels:
        raise HarmonisationError(
            f"{fname}: channels {missing} are missing and {flat} are flat, "
            f"{len(interpolated)} in all; the study allows {spec.max_missing_channels} "
            "(data.max_missing_channels). Check the electrodes or exclude the recording."
        )
    sfreq = float(work.info["sfreq"])
    if missing:
        info = mne.create_info(missing, sfreq, "eeg", verbose=False)
        filler = mne.io.RawArray(np.zeros((len(missing), work.n_times)), info, verbose=False)
        work.add_channels([filler], force_update_info=True)
    work.reorder_channels(montage)
    if interpolated:
        _interpolate(work, interpolated, fname)

    work.set_eeg_reference("average", projection=False, verbose=False)
    notched: tuple[float, ...] = ()
    line_freq = raw.info.get("line_freq")
    if spec.notch:
        if line_freq:
            freqs = np.arange(line_freq, sfreq / 2.0, line_freq)
            if freqs.size:
                work.notch_filter(freqs, n_jobs=1, verbose=False)
                notched = tuple(float(f) for f in freqs)
        else:
            logger.warning("%s: no line_freq in the recording's info, notch skipped", fname)
    h_freq = spec.h_freq if spec.h_freq is not None and spec.h_freq < sfreq / 2.0 else None
    l_freq = spec.l_freq or None
    if l_freq is not None or h_freq is not None:
        work.filter(l_freq, h_freq, n_jobs=1, verbose=False)
    if not np.isclose(sfreq, contract.sfreq):
        work.resample(contract.sfreq, n_jobs=1, verbose=False)

    stride = (
        int(round(spec.window_stride_seconds * contract.sfreq))
        if spec.window_stride_seconds
        else contract.n_times
    )
    win = _windows(work.get_data(), contract.n_times, max(stride, 1))
    ptp_win = win.max(axis=-1) - win.min(axis=-1)
    ok = ~((ptp_win < FLAT_PTP_V).any(axis=1) | (ptp_win > EXTREME_PTP_V).any(axis=1))
    kept = win[ok]
    scale: float | None
    if spec.normalisation == "none":
        scale = NONE_SCALE_V
    elif len(kept):
        flat_ch = kept.transpose(1, 0, 2).reshape(len(montage), -1)
        med = np.median(flat_ch, axis=1, keepdims=True)
        mad = np.median(np.abs(flat_ch - med), axis=1)
        scale = float(np.median(mad) * _MAD_TO_STD)
    else:
        scale = None
    if scale is not None and scale > 0:
        out = (kept / scale).astype(np.float32)
    else:
        out = np.empty((0, len(montage), contract.n_times), dtype=np.float32)
    if not np.isfinite(out).all():
        raise HarmonisationError(f"{fname}: harmonised windows contain NaN or inf values.")
    report = RecordingReport(
        file=fname,
        source_sfreq=sfreq,
        channels_found=tuple(m for m, _ in found if m not in flat),
        interpolated=tuple(interpolated),
        dropped=tuple(n for n in raw.ch_names if n not in {src for _, src in found}),
        notched=notched,
        n_windows=len(out),
        n_rejected=int((~ok).sum()),
        scale=scale,
    )
    return out, report


def read_recording(path: Path | BIDSPath) -> mne.io.BaseRaw:
    """Open one recording of a BIDS dataset with mne-bids (lazily, quietly)."""
    from mne_bids import BIDSPath, get_bids_path_from_fname, read_raw_bids

    bids_path = path if isinstance(path, BIDSPath) else get_bids_path_from_fname(path)
    with warnings.catch_warnings():
        # participants.tsv columns such as diagnosis/consent have no place in mne.Info;
        # mne-bids says so on every read. Expected, so silenced here (only here).
        warnings.filterwarnings(
            "ignore", message="Unable to map the following column", category=RuntimeWarning
        )
        return read_raw_bids(bids_path, verbose=False)


def load_site_windows(
    bids_root: Path,
    cohort: EligibleCohort,
    contract: InputContract,
    spec: DataSpec,
    *,
    on_error: Literal["raise", "skip"] = "raise",
) -> WindowSet:
    """Harmonise the recordings of the eligible ``cohort`` of one site into windows.

    Only recordings of participants in ``cohort`` are listed and opened. Every recording
    is tried; with ``on_error="raise"`` one ``HarmonisationError`` then lists all the
    refused files, with ``"skip"`` they are left out and listed in ``report.refused``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(
            f"Invalid value for the 'on_error' parameter. Allowed values are 'raise' and "
            f"'skip', but got {on_error!r} instead."
        )
    report = HarmonisationReport()
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    ids: list[str] = []
    for pid, label in zip(cohort.participant_ids, cohort.labels):
        paths = bids_paths_for(bids_root, pid, spec)
        if not paths:
            report.without_windows[pid] = f"no EEG recording (task={spec.task!r}) found"
            continue
        n_before = len(xs)
        for bp in paths:
            fname = Path(bp.fpath).name
            try:
                win, rec = harmonise_recording(read_recording(bp), contract, spec)
            except Exception as err:  # collect every bad file, report them together
                why = str(err).removeprefix(f"{fname}: ")
                if not isinstance(err, HarmonisationError):
                    why = f"{type(err).__name__}: {why}"
                report.refused[fname] = why
                continue
            report.recordings.append(dataclasses.replace(rec, participant_id=pid))
            if len(win):
                xs.append(win)
        n_win = sum(len(x) for x in xs[n_before:])
        if n_win == 0:
            report.without_windows.setdefault(pid, "every window was rejected or refused")
            continue
        ys.append(np.full(n_win, label, dtype=np.int64))
        parts.append(np.full(n_win, len(ids), dtype=np.int64))
        ids.append(pid)
    if report.refused and on_error == "raise":
        listing = "\n".join(f"  {f}: {why}" for f, why in sorted(report.refused.items()))
        raise HarmonisationError(
            f"{len(report.refused)} recording(s) under {bids_root} could not be harmonised:\n"
            f"{listing}\nFix them, or pass on_error='skip' to train without them."
        )
    logger.info("%s: %s", bids_root, report.summary())
    X = (
        np.concatenate(xs)
        if xs
        else np.empty((0, contract.n_chans, contract.n_times), dtype=np.float32)
    )
    return WindowSet(
        X=X,
        y=np.concatenate(ys) if ys else np.empty(0, dtype=np.int64),
        participant=np.concatenate(parts) if parts else np.empty(0, dtype=np.int64),
        participant_ids=ids,
        report=report,
    )
