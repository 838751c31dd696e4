"""Signal conditioning of one recording: channels onto the montage, reference, filters,
resampling. What comes out is continuous signal on the contract's channels and rate."""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedneuro.data.channels import map_to_montage, normalise_channel_name
from fedneuro.data.errors import HarmonisationError
from fedneuro.data.readers import notes_of
from fedneuro.data.spec import DataSpec, InputContract

if TYPE_CHECKING:
    import mne

__all__ = ["Conditioned", "condition_recording", "source_name"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _montage_name() -> str:
    import mne

    # "standard_1005" is deprecated in MNE 1.13 in favour of "colin27_1005" (same head).
    builtin = mne.channels.get_builtin_montages()
    return "colin27_1005" if "colin27_1005" in builtin else "standard_1005"


def source_name(raw: mne.io.BaseRaw) -> str:
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


@contextlib.contextmanager
def _notes_from_warnings(notes: list[str]) -> Iterator[None]:
    """Record MNE's warnings (filter longer than the signal...) as report notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message).splitlines()[0]
        if text not in notes:
            notes.append(text)


@dataclass
class Conditioned:
    """A recording on the contract's channels and sampling rate, before windowing.

    ``fields`` are the RecordingReport fields known at this point."""

    data: np.ndarray  # (C, N) volts at contract.sfreq
    fname: str
    fields: dict[str, Any]


def _check_sfreq(sfreq: float, spec: DataSpec, fname: str) -> None:
    if not np.isfinite(sfreq) or sfreq > spec.max_sfreq:
        raise HarmonisationError(
            f"{fname}: sampling rate {sfreq} Hz is not plausible for EEG (the study accepts up "
            f"to {spec.max_sfreq:g} Hz, data.max_sfreq). Check the file's header."
        )
    if sfreq < spec.lowest_sfreq:
        why = (
            f"data.min_sfreq = {spec.min_sfreq:g} Hz"
            if spec.min_sfreq is not None
            else f"the study band needs more than 2 x {spec.lowest_sfreq / 2:g} Hz"
        )
        raise HarmonisationError(
            f"{fname}: sampled at {sfreq:g} Hz, below the {spec.lowest_sfreq:g} Hz the study "
            f"accepts ({why}). Such a recording cannot carry the study's frequency band."
        )


def _reference_sources(
    raw: mne.io.BaseRaw, spec: DataSpec, montage: Sequence[str], fname: str
) -> list[str]:
    """Source names of the named reference channels (empty for 'average'/'none')."""
    if not isinstance(spec.reference, list):
        return []
    wanted = [normalise_channel_name(r) for r in spec.reference]
    in_montage = [r for r in wanted if r in montage]
    if in_montage:
        raise HarmonisationError(
            f"{fname}: reference channel(s) {in_montage} are channels of the backbone's "
            "montage; re-referenced to themselves they would be zero. Choose reference "
            "channels outside the montage (e.g. ['A1', 'A2']) or data.reference = 'average'."
        )
    by_name = {normalise_channel_name(n): n for n in raw.ch_names}
    absent = [r for r in wanted if r not in by_name]
    if absent:
        raise HarmonisationError(
            f"{fname}: reference channel(s) {absent} (data.reference) are not in the "
            f"recording (channels: {raw.ch_names}). Record them, or use data.reference = "
            "'average'."
        )
    return [by_name[r] for r in wanted]


def condition_recording(
    raw: mne.io.BaseRaw, contract: InputContract, spec: DataSpec
) -> Conditioned:
    """Pick/order the montage (interpolating missing and flat channels), re-reference, notch,
    band-pass and resample one recording; ``raw`` is not modified."""
    import mne

    fname = source_name(raw)
    sfreq = float(raw.info["sfreq"])
    _check_sfreq(sfreq, spec, fname)
    montage = list(contract.channels)
    eeg_idx = mne.pick_types(raw.info, eeg=True, exclude=[])
    if not len(eeg_idx):
        kinds = dict(zip(raw.ch_names, raw.get_channel_types()))
        raise HarmonisationError(
            f"{fname}: no EEG channels (channels and types: {kinds}). Check channels.tsv "
            "types, or the channel names if the format stores no types."
        )
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
            f"(data.max_missing_channels). EEG channels in the file: {eeg_names}. Fix the "
            "recording's channel names/types or exclude it."
        )
    ref_src = _reference_sources(raw, spec, montage, fname)

    picks = [src for _, src in found] + [r for r in ref_src if r not in {s for _, s in found}]
    work = raw.copy().pick(picks).load_data(verbose=False)
    data = work.get_data()
    bad_rows = ~np.isfinite(data).all(axis=1)
    if bad_rows.any():
        bad = [work.ch_names[i] for i in np.flatnonzero(bad_rows)]
        n_bad = int((~np.isfinite(data)).sum())
        raise HarmonisationError(
            f"{fname}: {n_bad} sample(s) are NaN or infinite (channels {bad}). Re-export the "
            "recording, or mark those channels bad (channels.tsv status) to interpolate them."
        )
    reference = (
        np.mean(data[[work.ch_names.index(r) for r in ref_src]], axis=0) if ref_src else None
    )
    work.pick([src for _, src in found])
    work.rename_channels({src: m for m, src in found}, verbose=False)
    # A dead electrode (flat all along) carries no information: interpolate it as well.
    flat_v, extreme_v = spec.reject_thresholds_v()
    ptp = np.ptp(work.get_data(), axis=1)
    flat = [work.ch_names[i] for i in np.flatnonzero(ptp < flat_v if flat_v else ptp <= 0)]
    interpolated = missing + flat
    if len(interpolated) > spec.max_missing_channels:
        raise HarmonisationError(
            f"{fname}: channels {missing} are missing and {flat} are flat, "
            f"{len(interpolated)} in all; the study allows {spec.max_missing_channels} "
            "(data.max_missing_channels). Check the electrodes or exclude the recording."
        )
    if reference is not None:
        work.apply_function(lambda x: x - reference, channel_wise=False, verbose=False)
    if missing:
        info = mne.create_info(missing, sfreq, "eeg", verbose=False)
        filler = mne.io.RawArray(np.zeros((len(missing), work.n_times)), info, verbose=False)
        work.add_channels([filler], force_update_info=True)
    work.reorder_channels(montage)
    if interpolated:
        _interpolate(work, interpolated, fname)

    if spec.reference == "average":
        work.set_eeg_reference("average", projection=False, verbose=False)
    notes = list(notes_of(raw))
    notched: tuple[float, ...] = ()
    line_freq = raw.info.get("line_freq")
    if spec.notch:
        if line_freq:
            freqs = np.arange(line_freq, sfreq / 2.0, line_freq)
            if freqs.size:
                with _notes_from_warnings(notes):
                    work.notch_filter(freqs, n_jobs=1, verbose=False)
                notched = tuple(float(f) for f in freqs)
        else:
            logger.warning("%s: no line_freq in the recording's info, notch skipped", fname)
            notes.append(
                "no power-line frequency known, notch skipped (BIDS: PowerLineFrequency in "
                "the eeg.json sidecar; loose files: the line_freq column)"
            )
    h_freq = spec.h_freq if spec.h_freq is not None and spec.h_freq < sfreq / 2.0 else None
    l_freq = spec.l_freq or None
    with _notes_from_warnings(notes):  # e.g. a recording shorter than the filter
        if l_freq is not None or h_freq is not None:
            work.filter(l_freq, h_freq, n_jobs=1, verbose=False)
        if not np.isclose(sfreq, contract.sfreq):
            work.resample(contract.sfreq, n_jobs=1, verbose=False)
    used = {src for _, src in found} | set(ref_src)
    fields = dict(
        file=fname,
        source_sfreq=sfreq,
        channels_found=tuple(m for m, _ in found if m not in flat),
        interpolated=tuple(interpolated),
        dropped=tuple(n for n in raw.ch_names if n not in used),
        notched=notched,
        duration_s=raw.n_times / sfreq,
        n_channels=len(raw.ch_names),
        missing=tuple(missing),
        reference=spec.reference if isinstance(spec.reference, str) else "+".join(ref_src),
        notes=tuple(notes),
    )
    return Conditioned(data=work.get_data(), fname=fname, fields=fields)
