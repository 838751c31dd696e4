"""Channel-name normalisation: many hospital spellings -> canonical 10-20 names.

Clinical EDFs spell the same electrode as ``"EEG Fp1-REF"``, ``"FP1"``, ``"Fp1-A1"`` or
(old 10-20 nomenclature) ``"T3"`` for today's ``"T7"``. Everything downstream keys on the
canonical spelling used by MNE's standard montages (``"Fp1"``, ``"Fz"``, ``"T7"``...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ChannelMapping",
    "OLD_TO_NEW_1020",
    "guess_channel_type",
    "map_to_montage",
    "normalise_channel_name",
]

#: Old (Jasper 1958) temporal names -> modified combinatorial nomenclature (ACNS 2006).
OLD_TO_NEW_1020: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

# Suffixes that name a *reference*, not a second electrode: "Fp1-REF", "Fp1-LE", "C3-A1".
# "Cz" is deliberately absent: "Fz-Cz" is a bipolar derivation in the double banana.
_REFERENCE_SUFFIXES = frozenset(
    {"REF", "LE", "RE", "AR", "AV", "AVG", "AVE", "CAR", "A1", "A2", "M1", "M2", "A1A2",
     "M1M2", "LM", "RM", "MAST", "EAR", "EARS"}
)
_PREFIX_RE = re.compile(r"^EEG[-_\s]+", re.IGNORECASE)
# Channel-name prefixes that are never scalp EEG, with their MNE channel type.
_NON_EEG_PREFIXES: tuple[tuple[str, str], ...] = (
    ("ECG", "ecg"), ("EKG", "ecg"), ("EOG", "eog"), ("VEOG", "eog"), ("HEOG", "eog"),
    ("EMG", "emg"), ("RESP", "resp"), ("SPO2", "misc"), ("PULSE", "misc"), ("PHOTIC", "stim"),
    ("TRIG", "stim"), ("STATUS", "stim"), ("STI", "stim"),
)


def _electrode_names() -> dict[str, str]:
    """Upper-case spelling -> canonical spelling for every 10-10 (plus ear/mastoid) site."""
    rows = {
        "Fp": (1, 2), "AF": (3, 4, 7, 8), "F": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
        "FC": (1, 2, 3, 4, 5, 6), "FT": (7, 8, 9, 10), "C": (1, 2, 3, 4, 5, 6),
        "T": (7, 8, 9, 10), "TP": (7, 8, 9, 10), "CP": (1, 2, 3, 4, 5, 6),
        "P": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10), "PO": (3, 4, 7, 8, 9, 10), "O": (1, 2),
        "I": (1, 2), "N": (1, 2),
    }
    canonical: list[str] = []
    for prefix, numbers in rows.items():
        canonical.append(f"{prefix}z")
        canonical.extend(f"{prefix}{n}" for n in numbers)
    canonical.extend(["A1", "A2", "M1", "M2"])
    names = {name.upper(): name for name in canonical}
    for old in OLD_TO_NEW_1020:
        names[old] = OLD_TO_NEW_1020[old]
    return names


_ELECTRODES = _electrode_names()


def normalise_channel_name(name: str) -> str:
    """Map a hospital channel name to its canonical 10-20 spelling.

    ``"EEG Fp1-REF"``, ``"EEG FP1-LE"``, ``"FP1"``, ``"fp1"``, ``"Fp1-A1"`` -> ``"Fp1"``;
    old names ``T3/T4/T5/T6`` -> ``T7/T8/P7/P8``. Names that are not scalp electrodes
    (``"ECG"``) and bipolar derivations (``"Fp1-F7"``) come back stripped but unchanged.
    """
    if not isinstance(name, str):
        raise TypeError(f"channel name must be a str, got {type(name).__name__} ({name!r})")
    cleaned = " ".join(name.split()).rstrip(".")
    core = _PREFIX_RE.sub("", cleaned)
    head, sep, tail = core.partition("-")
    if sep and tail.strip().upper() not in _REFERENCE_SUFFIXES:
        # Bipolar ("Fp1-F7") or unknown suffix: not a monopolar electrode, keep as is.
        return cleaned
    return _ELECTRODES.get(head.strip().upper(), cleaned)


def guess_channel_type(name: str) -> str | None:
    """MNE channel type of a name that is clearly not scalp EEG (``"ECG"`` -> ``"ecg"``,
    ``"EOG left"`` -> ``"eog"``), else None. For formats that store no channel types."""
    core = _PREFIX_RE.sub("", " ".join(str(name).split())).upper()
    if normalise_channel_name(str(name)) in _ELECTRODES.values():
        return None
    for prefix, kind in _NON_EEG_PREFIXES:
        if core.startswith(prefix):
            return kind
    return None


@dataclass(frozen=True)
class ChannelMapping:
    """Where each montage channel comes from in a recording.

    ``source_index[i]`` is the index in the source names of ``montage[i]``, or ``None``
    when the recording lacks that channel (listed again in ``missing``). ``unused`` holds
    the source names (as given) that map to no montage channel.
    """

    montage: tuple[str, ...]
    source_index: tuple[int | None, ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]

    @property
    def found(self) -> tuple[str, ...]:
        """Montage channels present in the recording, in montage order."""
        return tuple(m for m, i in zip(self.montage, self.source_index) if i is not None)


def map_to_montage(names: Sequence[str], montage: Sequence[str]) -> ChannelMapping:
    """Match source channel ``names`` to the ``montage`` channels, by normalised name.

    Raises ``ValueError`` when two source channels normalise to the same montage channel
    (which one to use would be a guess), listing every such clash at once.
    """
    if isinstance(names, str) or isinstance(montage, str):
        raise TypeError("names and montage must be sequences of channel names, not a str")
    canon_montage = [normalise_channel_name(m) for m in montage]
    dup_montage = sorted({m for m in canon_montage if canon_montage.count(m) > 1})
    if dup_montage:
        raise ValueError(
            f"Invalid value for the 'montage' parameter: channels {dup_montage} appear more "
            f"than once after normalisation (got {list(montage)}). List each channel once."
        )
    wanted = set(canon_montage)
    by_name: dict[str, list[int]] = {}
    for idx, src in enumerate(names):
        by_name.setdefault(normalise_channel_name(src), []).append(idx)
    clashes = {
        canon: [names[i] for i in idxs]
        for canon, idxs in by_name.items()
        if canon in wanted and len(idxs) > 1
    }
    if clashes:
        detail = "; ".join(f"{srcs} -> {canon!r}" for canon, srcs in sorted(clashes.items()))
        raise ValueError(
            f"Ambiguous channel names: several source channels normalise to the same "
            f"montage channel ({detail}). Drop or rename the duplicates before harmonising."
        )
    source_index = tuple(by_name[m][0] if m in by_name else None for m in canon_montage)
    used = {i for i in source_index if i is not None}
    return ChannelMapping(
        montage=tuple(canon_montage),
        source_index=source_index,
        missing=tuple(m for m, i in zip(canon_montage, source_index) if i is None),
        unused=tuple(n for i, n in enumerate(names) if i not in used),
    )
