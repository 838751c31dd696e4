"""Open EEG recordings with MNE: EDF, BDF, FIF, BrainVision and EEGLAB, loose or in BIDS.

Every reader runs the header checks of :mod:`fedneuro.data.preflight` first, turns MNE's
warnings into errors or report notes (MNE silently renames duplicate channels, for one), and
wraps any other failure into a ``RecordingReadError`` naming the file and its format.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fedneuro.data.channels import guess_channel_type
from fedneuro.data.errors import RecordingReadError
from fedneuro.data.preflight import brainvision_companions, preflight

if TYPE_CHECKING:
    import mne
    from mne_bids import BIDSPath

__all__ = [
    "EEG_FORMATS",
    "companion_files",
    "eeg_format",
    "notes_of",
    "read_bids_recording",
    "read_eeg_file",
]

logger = logging.getLogger(__name__)

#: File extension -> format name (mne-bids' spelling).
EEG_FORMATS: dict[str, str] = {
    ".edf": "EDF",
    ".bdf": "BDF",
    ".vhdr": "BrainVision",
    ".set": "EEGLAB",
    ".fif": "FIF",
}
_NOTE_ATTR = "_fedneuro_notes"
T = TypeVar("T")


def eeg_format(path: Path) -> str:
    """The format of ``path`` from its extension; ``RecordingReadError`` when unsupported."""
    suffix = Path(path).suffix.lower()
    try:
        return EEG_FORMATS[suffix]
    except KeyError:
        raise RecordingReadError(
            f"{Path(path).name}: unsupported EEG format {suffix or '(no extension)'!r}. "
            f"Supported: {', '.join(f'{v} ({k})' for k, v in EEG_FORMATS.items())}. Convert "
            "the recording (e.g. with MNE) to one of them."
        )


def companion_files(path: Path) -> list[Path]:
    """The files a recording is made of: ``path`` and, for BrainVision, its data and marker
    files; for EEGLAB, a ``.fdt`` of the same name if there is one."""
    path = Path(path)
    files = [path]
    fmt = EEG_FORMATS.get(path.suffix.lower())
    if fmt == "BrainVision" and path.is_file():
        data, marker = brainvision_companions(path)
        files += [f for f in (data, marker) if f is not None]
    elif fmt == "EEGLAB":
        fdt = path.with_suffix(".fdt")
        if fdt.is_file():
            files.append(fdt)
    return files


def notes_of(raw: mne.io.BaseRaw) -> tuple[str, ...]:
    """Reader notes (MNE warnings judged harmless) attached to ``raw``."""
    return tuple(getattr(raw, _NOTE_ATTR, ()))


def _guarded(fname: str, fmt: str, read: Callable[[], T]) -> tuple[T, list[str]]:
    """Run an MNE reader, collecting its warnings; duplicates and failures become errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = read()
        except RecordingReadError:
            raise
        except FileNotFoundError as err:
            missing = Path(err.filename or str(err).split("File ")[-1].split(" not")[0]).name
            raise RecordingReadError(
                f"{fname}: a file this {fmt} recording needs is missing ({missing}). Copy it "
                "next to the recording (EEGLAB keeps the signal in a .fdt file beside the "
                ".set; BrainVision in .eeg and .vmrk files beside the .vhdr)."
            ) from err
        except Exception as err:  # MNE raises many types for malformed files
            raise RecordingReadError(
                f"{fname}: cannot be read as {fmt} ({type(err).__name__}: {err}). The file is "
                "corrupt or not in that format."
            ) from err
    notes = []
    for w in caught:
        text = str(w.message)
        if "Channel names are not unique" in text:
            raise RecordingReadError(
                f"{fname}: channel names are not unique ({text}). Which channel to use "
                "would be a guess: rename or drop the duplicates."
            )
        if "Unable to map the following column" in text:
            continue  # participants.tsv columns have no place in mne.Info; expected.
        notes.append(text.splitlines()[0])
    return result, notes


def _finish(raw: mne.io.BaseRaw, fname: str, notes: list[str]) -> mne.io.BaseRaw:
    if raw.n_times < 1 or len(raw.ch_names) < 1:
        raise RecordingReadError(
            f"{fname}: holds {len(raw.ch_names)} channels and {raw.n_times} samples; nothing "
            "to use."
        )
    for note in notes:
        logger.info("%s: %s", fname, note)
    setattr(raw, _NOTE_ATTR, tuple(notes))
    return raw


def read_eeg_file(path: Path, *, line_freq: float | None = None) -> mne.io.BaseRaw:
    """Open a loose EEG file (not preloaded) by its extension.

    Formats without channel types (EDF, BDF, BrainVision, EEGLAB) get non-EEG types for
    names that clearly are not scalp electrodes (ECG, EOG, EMG...). ``line_freq`` sets the
    power-line frequency when the caller knows it (these formats do not store it).
    """
    import mne

    path = Path(path)
    fmt = eeg_format(path)
    preflight(path, fmt)
    if fmt == "FIF":
        reader: Callable[[], mne.io.BaseRaw] = lambda: mne.io.read_raw_fif(  # noqa: E731
            path, preload=False, verbose="warning"
        )
    else:
        reader = lambda: mne.io.read_raw(path, preload=False, verbose="warning")  # noqa: E731
    raw, notes = _guarded(path.name, fmt, reader)
    if fmt != "FIF":
        types = {
            name: kind
            for name, kind in (
                (n, guess_channel_type(n)) for n, t in zip(raw.ch_names, raw.get_channel_types())
                if t == "eeg"
            )
            if kind is not None
        }
        if types:
            raw.set_channel_types(types, on_unit_change="ignore", verbose=False)
    if line_freq is not None:
        raw.info["line_freq"] = float(line_freq)
    return _finish(raw, path.name, notes)


def read_bids_recording(bids_path: BIDSPath) -> mne.io.BaseRaw:
    """Open one recording of a BIDS dataset with mne-bids (channels.tsv types, line_freq
    from the sidecar), after the header checks of its data file."""
    from mne_bids import read_raw_bids

    fpath = Path(bids_path.fpath)
    fmt = eeg_format(fpath)
    preflight(fpath, fmt)
    raw, notes = _guarded(fpath.name, fmt, lambda: read_raw_bids(bids_path, verbose="warning"))
    return _finish(raw, fpath.name, notes)
