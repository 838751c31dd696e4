"""Recordings -> model-ready windows under a backbone's input contract.

Per recording: normalise channel names, map them onto ``contract.channels``, interpolate
missing/flat montage channels, re-reference (average, none, or named channels), notch the
mains, band-pass, resample to ``contract.sfreq``, cut fixed-stride or event-locked windows,
reject flat/extreme windows, normalise amplitude. Thresholds and choices come from the
study's ``DataSpec``. :func:`load_site_windows` does this for a site's eligible cohort,
optionally through an on-disk cache (:mod:`fedneuro.data.cache`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedneuro.data.bids import EligibleCohort
from fedneuro.data.cache import CachedRecording, WindowCache
from fedneuro.data.conditioning import Conditioned, condition_recording, source_name
from fedneuro.data.errors import EventsError, HarmonisationError
from fedneuro.data.events import Event, class_of, events_from_annotations, read_events_tsv
from fedneuro.data.layout import RecordingRef, SiteIndex
from fedneuro.data.preflight import preflight
from fedneuro.data.readers import eeg_format, read_bids_recording, read_eeg_file
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.data.windows import event_windows, fixed_windows, reject_windows
from fedneuro.data.windowset import HarmonisationReport, RecordingReport, WindowSet

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
    "harmonise_event_windows",
    "harmonise_recording",
    "load_site_windows",
    "read_recording",
]

logger = logging.getLogger(__name__)

#: Default flat threshold (volts): ``DataSpec.flat_ptp_uv`` is the setting.
FLAT_PTP_V = 0.1e-6
#: Default extreme threshold (volts): ``DataSpec.extreme_ptp_uv`` is the setting.
EXTREME_PTP_V = 500e-6
#: Default scale under normalisation "none": ``DataSpec.scale_uv`` is the setting.
NONE_SCALE_V = 100e-6
# MAD -> standard deviation for Gaussian data.
_MAD_TO_STD = 1.4826


# --------------------------------------------------------------------------- one recording
def _finish(
    prep: Conditioned,
    windows: np.ndarray,
    spec: DataSpec,
    n_channels: int,
    n_times: int,
    *,
    none_cut: str,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Reject, normalise and check windows; returns (kept windows, kept mask, report fields).

    ``none_cut`` is the note recorded when no window could be cut at all."""
    flat_v, extreme_v = spec.reject_thresholds_v()
    rej = reject_windows(windows, flat_v=flat_v, extreme_v=extreme_v)
    kept = windows[rej.ok]
    scale: float | None
    if spec.normalisation == "none":
        scale = spec.scale_uv * 1e-6
    elif len(kept):
        flat_ch = kept.transpose(1, 0, 2).reshape(n_channels, -1)
        med = np.median(flat_ch, axis=1, keepdims=True)
        mad = np.median(np.abs(flat_ch - med), axis=1)
        scale = float(np.median(mad) * _MAD_TO_STD)
    else:
        scale = None
    if scale is not None and scale > 0:
        out = (kept / scale).astype(np.float32)
    else:
        out = np.empty((0, n_channels, n_times), dtype=np.float32)
    if not np.isfinite(out).all():
        raise HarmonisationError(f"{prep.fname}: harmonised windows contain NaN or inf values.")
    notes = list(prep.fields["notes"])
    if not len(windows):
        notes.append(none_cut)
    elif not len(out):
        ptp_uv = float(np.median(windows.max(-1) - windows.min(-1))) * 1e6
        note = (
            f"every window was rejected ({rej.n_flat} flat, {rej.n_extreme} extreme; median "
            f"peak-to-peak {ptp_uv:.3g} µV)"
        )
        if spec.extreme_ptp_uv and ptp_uv > 10 * spec.extreme_ptp_uv or (
            spec.flat_ptp_uv and ptp_uv < spec.flat_ptp_uv
        ):
            note += ": amplitudes this far off usually mean wrong units in the file (V vs µV)"
        notes.append(note)
    fields = dict(
        prep.fields,
        n_windows=len(out),
        n_rejected=int((~rej.ok).sum()),
        scale=scale,
        n_rejected_flat=rej.n_flat,
        n_rejected_extreme=rej.n_extreme,
        notes=tuple(notes),
    )
    return out, rej.ok, fields


def harmonise_recording(
    raw: mne.io.BaseRaw, contract: InputContract, spec: DataSpec
) -> tuple[np.ndarray, RecordingReport]:
    """Bring one recording to ``contract`` as fixed-stride windows (n, C, T) float32.

    ``raw`` is not modified. Raises ``HarmonisationError`` (naming the file) when the
    recording cannot be used: too many missing or flat channels, no EEG channels, NaN/inf
    samples, an implausible sampling rate, absent reference channels.
    """
    prep = condition_recording(raw, contract, spec)
    stride = (
        int(round(spec.window_stride_seconds * contract.sfreq))
        if spec.window_stride_seconds
        else contract.n_times
    )
    win = fixed_windows(prep.data, contract.n_times, max(stride, 1))
    short = (
        f"shorter than one window ({prep.fields['duration_s']:.3g} s < "
        f"{contract.input_window_seconds:g} s)"
    )
    out, _, fields = _finish(
        prep, win, spec, contract.n_chans, contract.n_times, none_cut=short
    )
    return out, RecordingReport(**fields)


def harmonise_event_windows(
    raw: mne.io.BaseRaw, events: Sequence[Event], contract: InputContract, spec: DataSpec
) -> tuple[np.ndarray, np.ndarray, RecordingReport]:
    """Event-locked windows: one per event whose value maps to a class of ``spec.classes``.

    Each window starts ``spec.event_tmin`` s from the onset and is ``contract.n_times``
    long (samples after ``spec.event_tmax`` are zero-filled). Returns (X, y, report);
    windows leaving the recording are counted in ``n_events_outside``.
    """
    fname = source_name(raw)
    offset, n_signal = spec.event_window(contract)
    labelled: list[tuple[float, int]] = []
    ignored: dict[str, int] = {}
    for ev in events:
        key = class_of(ev.value, spec.classes)
        if key is None:
            shown = "n/a" if ev.value is None else ev.value
            ignored[shown] = ignored.get(shown, 0) + 1
        else:
            labelled.append((ev.onset, spec.classes[key]))
    if not labelled:
        raise EventsError(
            f"{fname}: none of its {len(events)} events has a value of a study class "
            f"(values found: {sorted(ignored)}; data.classes: {sorted(spec.classes)}). Map the "
            "event values in data.classes, or set data.event_column."
        )
    prep = condition_recording(raw, contract, spec)
    onsets = np.array([o for o, _ in labelled])
    classes = np.array([c for _, c in labelled], dtype=np.int64)
    starts = np.round(onsets * contract.sfreq).astype(np.int64) + offset
    win, inside = event_windows(prep.data, starts, contract.n_times)
    outside = f"every event window ({len(labelled)} events) reaches outside the recording"
    out, ok, fields = _finish(
        prep, win, spec, contract.n_chans, contract.n_times, none_cut=outside
    )
    if n_signal < contract.n_times:
        out[..., n_signal:] = 0.0
    y = classes[inside][ok]
    report = RecordingReport(
        **fields,
        n_events=len(labelled),
        n_events_outside=int((~inside).sum()),
        events_ignored=tuple(sorted(ignored.items())),
    )
    return out, y, report


# --------------------------------------------------------------------------- a site
def read_recording(path: Path | BIDSPath | RecordingRef) -> mne.io.BaseRaw:
    """Open one recording (lazily, quietly): a ``RecordingRef`` of a site index, a
    ``BIDSPath``, or the path of a file in a BIDS dataset.

    A BIDS recording's events.tsv is checked first: mne-bids would stop on a malformed one
    with a bare ``KeyError``.
    """
    from mne_bids import BIDSPath, get_bids_path_from_fname

    if isinstance(path, RecordingRef):
        if path.bids_path is None:
            return read_eeg_file(path.path, line_freq=path.line_freq)
        events = path.bids_events()
        if events is not None:
            read_events_tsv(events, None)
        return read_bids_recording(path.bids_path)
    bids_path = path if isinstance(path, BIDSPath) else get_bids_path_from_fname(path)
    return read_bids_recording(bids_path)


def _events_for(ref: RecordingRef, raw: mne.io.BaseRaw, spec: DataSpec) -> list[Event]:
    source = ref.events_path or ref.bids_events()
    if source is not None:
        if not source.is_file():
            raise EventsError(f"{ref.name}: its events file {source} does not exist.")
        events = read_events_tsv(source, spec.event_column)
    else:
        events = events_from_annotations(raw)
    if not events:
        where = source.name if source is not None else "no events.tsv, no annotations in the file"
        raise EventsError(
            f"{ref.name}: has no events ({where}); event-locked windows (data.label_source = "
            "'events') need them."
        )
    return events


def _recording_windows(
    ref: RecordingRef, contract: InputContract, spec: DataSpec, cache: WindowCache | None
) -> tuple[np.ndarray, np.ndarray, RecordingReport, bool]:
    """(X, y event classes or empty, report, from_cache) of one recording."""
    key = None
    if cache is not None:
        # Header checks first: hashing a half-present recording would only say "not found".
        preflight(ref.path, eeg_format(ref.path))
        key = cache.key(ref.files(), spec, contract, {"line_freq": ref.line_freq})
        hit = cache.load(key)
        if hit is not None:
            rep = dataclasses.replace(
                RecordingReport.from_dict(hit.report),
                file=ref.name,
                participant_id=ref.participant_id,
            )
            return hit.X, hit.y, rep, True
    raw = read_recording(ref)
    if spec.label_source == "events":
        X, y, rep = harmonise_event_windows(raw, _events_for(ref, raw, spec), contract, spec)
    else:
        X, rep = harmonise_recording(raw, contract, spec)
        y = np.empty(0, dtype=np.int64)
    rep = dataclasses.replace(rep, file=ref.name, participant_id=ref.participant_id)
    if cache is not None and key is not None and cache.writable:
        try:
            cache.store(key, CachedRecording(X=X, y=y, report=rep.to_dict()))
        except OSError as error:
            # A cache that cannot be written (read-only or full state folder) must not cost the
            # site its data: say so once, then go on without caching.
            cache.writable = False
            logger.warning("window cache %s cannot be written (%s): continuing without the cache", cache.directory, error)
    return X, y, rep, False


def load_site_windows(
    bids_root: Path,
    cohort: EligibleCohort,
    contract: InputContract,
    spec: DataSpec,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    cache_dir: Path | None = None,
) -> WindowSet:
    """Harmonise the recordings of the eligible ``cohort`` of one site into windows.

    ``bids_root`` is the site's root: a BIDS dataset, or a loose-file site with a
    recordings table (:mod:`fedneuro.data.loose`). Only recordings of participants in
    ``cohort`` are listed, hashed and opened. Every recording is tried; with
    ``on_error="raise"`` one ``HarmonisationError`` then lists all the refused files, with
    ``"skip"`` they are left out and listed in ``report.refused`` (path -> reason).
    With ``cache_dir``, harmonised windows are kept there per recording and reused while
    the file content, preprocessing settings and contract are unchanged.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(
            f"Invalid value for the 'on_error' parameter. Allowed values are 'raise' and "
            f"'skip', but got {on_error!r} instead."
        )
    if spec.label_source == "events":
        spec.event_window(contract)  # a window longer than the backbone's fails here
    root = Path(bids_root)
    index = SiteIndex(root)
    cache = WindowCache(Path(cache_dir)) if cache_dir is not None else None
    report = HarmonisationReport()
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    ids: list[str] = []
    for pid, label in zip(cohort.participant_ids, cohort.labels):
        refs = index.recordings(pid, spec)
        if not refs:
            report.without_windows[pid] = f"no EEG recording (task={spec.task!r}) found"
            continue
        px: list[np.ndarray] = []
        py: list[np.ndarray] = []
        for ref in refs:
            try:
                X, y, rec, hit = _recording_windows(ref, contract, spec, cache)
            except Exception as err:  # collect every bad file, report them together
                why = str(err)
                for prefix in (f"{ref.name}: ", f"{ref.path.name}: "):
                    why = why.removeprefix(prefix)
                if not isinstance(err, HarmonisationError):
                    why = f"{type(err).__name__}: {why}"
                report.refused[ref.name] = why
                continue
            report.cache_hits += int(hit)
            report.recordings.append(rec)
            if len(X):
                px.append(X)
                py.append(y if spec.label_source == "events" else np.full(len(X), label))
        n_win = sum(len(x) for x in px)
        if n_win == 0:
            report.without_windows.setdefault(pid, "every window was rejected or refused")
            continue
        xs.extend(px)
        ys.extend(np.asarray(v, dtype=np.int64) for v in py)
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
