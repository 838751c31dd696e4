"""Synthetic hospital sites written as real BIDS datasets (via mne-bids) or loose files.

Formats: EDF (default), BDF, BrainVision, EEGLAB as BIDS or loose files; FIF as loose files
only (BIDS keeps FIF for MEG). Tasks: ``rest`` (labels per participant) and ``oddball``
(events.tsv / annotations with standard and target stimuli; targets evoke a P300-like
parietal positivity, so event-locked labels are learnable).

Each site differs the way hospitals do (sampling rate, channel naming, old 10-20 names,
missing electrodes, extra ECG channel, amplifier gain, sensor noise, mains frequency), so
the harmonisation code meets the problems it is built for. Signals are resting-state-like:
spatially correlated 1/f background, a waxing/waning posterior alpha rhythm, blinks,
occasional electrode pops, mains interference and sensor noise. "abnormal" participants
carry intermittent focal delta/theta slowing over one fronto-temporal region and a slower,
weaker posterior rhythm, with per-participant severity so the task is learnable but not
trivial.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedneuro.atomic import partial_dir_for, swap_dir_into_place, write_text_atomic
from fedneuro.data.synth_cohort import DUO_CONSENT_COLUMNS, diagnoses_and_consent, duo_consents, participant_id

if TYPE_CHECKING:
    import mne

__all__ = [
    "DEFAULT_PROFILES",
    "FORMATS",
    "TASKS",
    "STANDARD_1020_19",
    "SiteProfile",
    "synthesize_consortium",
    "synthesize_site",
]

logger = logging.getLogger(__name__)

STANDARD_1020_19: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
    "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)

MIN_PARTICIPANTS = 4
MIN_DURATION_S = 10.0
TASK = "rest"
#: Task names and what they write.
TASKS: tuple[str, ...] = ("rest", "oddball")
#: Formats (mne-bids' spelling) -> file extension; FIF only in the loose layout.
FORMATS: dict[str, str] = {
    "EDF": ".edf", "BDF": ".bdf", "BrainVision": ".vhdr", "EEGLAB": ".set", "FIF": ".fif",
}
#: Oddball event values and their codes in the written events.
ODDBALL_EVENT_ID: dict[str, int] = {"standard": 1, "target": 2}
_EXPORT_FMT = {"EDF": "edf", "BDF": "bdf", "BrainVision": "brainvision", "EEGLAB": "eeglab"}
#: Fixed acquisition date: identical seeds must give byte-comparable datasets.
MEAS_DATE = datetime.datetime(2024, 1, 15, 9, 0, 0, tzinfo=datetime.timezone.utc)

_NEW_TO_OLD = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
_NAMINGS = ("edf-ref", "plain", "upper")
_EXTRA_TYPES = {"ECG": "ecg", "EKG": "ecg", "EOG": "eog", "EMG": "emg", "RESP": "resp"}

# Approximate 2-D scalp positions (unit disc, nose up): only used for spatial correlation.
_POS = {
    "Fp1": (-0.31, 0.95), "Fp2": (0.31, 0.95),
    "F7": (-0.81, 0.59), "F3": (-0.41, 0.53), "Fz": (0.0, 0.5), "F4": (0.41, 0.53),
    "F8": (0.81, 0.59), "T7": (-1.0, 0.0), "C3": (-0.5, 0.0), "Cz": (0.0, 0.0),
    "C4": (0.5, 0.0), "T8": (1.0, 0.0), "P7": (-0.81, -0.59), "P3": (-0.41, -0.53),
    "Pz": (0.0, -0.5), "P4": (0.41, -0.53), "P8": (0.81, -0.59),
    "O1": (-0.31, -0.95), "O2": (0.31, -0.95),
}
# Posterior-dominant alpha topography (relative amplitude).
_ALPHA_W = {
    "O1": 1.0, "O2": 1.0, "Pz": 0.8, "P3": 0.75, "P4": 0.75, "P7": 0.55, "P8": 0.55,
    "Cz": 0.3, "C3": 0.3, "C4": 0.3, "T7": 0.2, "T8": 0.2, "Fz": 0.12, "F3": 0.12,
    "F4": 0.12, "F7": 0.08, "F8": 0.08, "Fp1": 0.05, "Fp2": 0.05,
}
# Focal slowing: core region and its first ring, per hemisphere.
_FOCUS = {
    "left": (("F7", "T7", "P7"), ("Fp1", "F3", "C3", "P3", "O1")),
    "right": (("F8", "T8", "P8"), ("Fp2", "F4", "C4", "P4", "O2")),
}
_BLINK_W = {"Fp1": 1.0, "Fp2": 1.0, "F7": 0.35, "F3": 0.3, "Fz": 0.3, "F4": 0.3, "F8": 0.35}


@dataclass(frozen=True)
class SiteProfile:
    """How one simulated hospital records EEG.

    ``naming``: ``"edf-ref"`` -> ``"EEG Fp1-REF"``, ``"plain"`` -> ``"Fp1"``,
    ``"upper"`` -> ``"FP1"``. ``old_1020_names`` writes T3/T4/T5/T6 for T7/T8/P7/P8.
    ``gain`` scales every amplitude (calibration differences); ``noise_uv`` is the
    standard deviation of added white sensor noise in µV.
    """

    name: str
    sfreq: float
    naming: Literal["edf-ref", "plain", "upper"]
    old_1020_names: bool
    missing_channels: tuple[str, ...]
    extra_channels: tuple[str, ...]
    gain: float
    noise_uv: float
    line_freq: float

    def __post_init__(self) -> None:
        problems = []
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            problems.append(f"'name' must be a plain directory name, got {self.name!r}")
        if not self.sfreq >= 100:
            problems.append(f"'sfreq' must be >= 100 Hz, got {self.sfreq!r}")
        if self.naming not in _NAMINGS:
            problems.append(f"'naming' must be one of {_NAMINGS}, got {self.naming!r}")
        unknown = [c for c in self.missing_channels if c not in STANDARD_1020_19]
        if unknown:
            problems.append(
                f"'missing_channels' must name channels of STANDARD_1020_19, got {unknown}"
            )
        if len(self.missing_channels) >= len(STANDARD_1020_19):
            problems.append("'missing_channels' cannot remove every channel")
        clash = [c for c in self.extra_channels if c in STANDARD_1020_19]
        if clash:
            problems.append(f"'extra_channels' must be non-EEG channels, got {clash}")
        if not self.gain > 0:
            problems.append(f"'gain' must be > 0, got {self.gain!r}")
        if not self.noise_uv >= 0:
            problems.append(f"'noise_uv' must be >= 0, got {self.noise_uv!r}")
        if self.line_freq not in (50, 60):
            problems.append(f"'line_freq' must be 50 or 60, got {self.line_freq!r}")
        if problems:
            raise ValueError("Invalid SiteProfile: " + "; ".join(problems) + ".")

    def channel_name(self, canonical: str) -> str:
        """The name this site writes for a canonical 10-20 channel."""
        name = _NEW_TO_OLD.get(canonical, canonical) if self.old_1020_names else canonical
        if self.naming == "edf-ref":
            return f"EEG {name}-REF"
        if self.naming == "upper":
            return name.upper()
        return name

    @property
    def eeg_channels(self) -> tuple[str, ...]:
        """Canonical names of the EEG channels this site records, in file order."""
        return tuple(c for c in STANDARD_1020_19 if c not in self.missing_channels)


DEFAULT_PROFILES: tuple[SiteProfile, ...] = (
    # A US clinical system (TUH-like): 256 Hz, "EEG XX-REF", old temporal names, ECG lead.
    SiteProfile(
        name="hospital-a", sfreq=256.0, naming="edf-ref", old_1020_names=True,
        missing_channels=(), extra_channels=("ECG",), gain=1.4, noise_uv=2.0, line_freq=60.0,
    ),
    # A European ward: 200 Hz, plain names, no Fz/Pz electrodes, low-gain amplifier.
    SiteProfile(
        name="hospital-b", sfreq=200.0, naming="plain", old_1020_names=False,
        missing_channels=("Fz", "Pz"), extra_channels=(), gain=0.7, noise_uv=1.0,
        line_freq=50.0,
    ),
    # A research-grade system: 500 Hz, upper-case names, ECG lead, noisier sensors.
    SiteProfile(
        name="hospital-c", sfreq=500.0, naming="upper", old_1020_names=False,
        missing_channels=(), extra_channels=("ECG",), gain=1.15, noise_uv=3.0,
        line_freq=50.0,
    ),
)


# --------------------------------------------------------------------------- signals
@functools.lru_cache(maxsize=4)
def _spatial_mixing(channels: tuple[str, ...], length: float = 0.6) -> np.ndarray:
    """Row-normalised square root of a Gaussian spatial covariance (volume conduction)."""
    xy = np.array([_POS[c] for c in channels])
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    cov = np.exp(-d2 / length**2)
    evals, evecs = np.linalg.eigh(cov)
    mix = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    mix = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    mix.setflags(write=False)  # cached: shared between calls
    return mix


def _unit_std(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(x.std(axis=-1, keepdims=True), 1e-12)


def _slow_envelope(rng: np.random.Generator, n: int, sfreq: float, depth: float) -> np.ndarray:
    """Positive log-normal envelope varying over a few seconds, mean 1."""
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spec = np.fft.rfft(rng.standard_normal(n)) * np.exp(-((freqs / 0.15) ** 2))
    z = _unit_std(np.fft.irfft(spec, n))
    env = np.exp(depth * z)
    return env / env.mean()


def _simulate_eeg(
    rng: np.random.Generator,
    profile: SiteProfile,
    line_uv: np.ndarray,
    *,
    abnormal: bool,
    duration_s: float,
) -> np.ndarray:
    """EEG of the 19 standard channels in volts (gain applied), shape (19, n_times)."""
    chans = STANDARD_1020_19
    sf = profile.sfreq
    n = int(round(duration_s * sf))
    t = np.arange(n) / sf
    freqs = np.fft.rfftfreq(n, 1 / sf)
    n_ch = len(chans)

    # Per-participant traits.
    bg_uv = rng.lognormal(np.log(12.0), 0.2)
    beta = rng.uniform(1.3, 1.9)
    if abnormal:
        severity = rng.uniform(0.45, 1.0)
        alpha_f = rng.uniform(7.5, 8.5)
        alpha_uv = rng.uniform(9.0, 17.0) * (1.0 - 0.5 * severity)
        side = ("left", "right")[rng.integers(2)]
        delta_uv = severity * rng.uniform(14.0, 26.0)
        theta_uv = 0.6 * delta_uv
    else:
        alpha_f = rng.uniform(9.5, 10.5)
        alpha_uv = rng.uniform(9.0, 17.0)
        delta_uv = 0.0
        theta_uv = rng.uniform(0.0, 4.0)  # mild drowsiness in some normals

    # One FFT pass shapes every source: 19 background, 2 alpha, 1 delta, 1 theta.
    white = rng.standard_normal((n_ch + 4, n))
    spec = np.fft.rfft(white, axis=-1)
    f_safe = np.maximum(freqs, 0.3)
    pink = f_safe ** (-beta / 2)
    pink[0] = 0.0
    spec[:n_ch] *= pink
    spec[n_ch : n_ch + 2] *= np.exp(-0.5 * ((freqs - alpha_f) / 0.45) ** 2)
    spec[n_ch + 2] *= ((freqs >= 1.0) & (freqs <= 4.0)) / f_safe**0.5
    spec[n_ch + 3] *= (freqs >= 4.0) & (freqs <= 7.0)
    src = _unit_std(np.fft.irfft(spec, n, axis=-1))

    eeg = bg_uv * (_spatial_mixing(chans) @ src[:n_ch])

    # Alpha: left/right generators sharing most of their activity, waxing and waning.
    common = 0.8
    a_left = common * src[n_ch] + (1 - common) * src[n_ch + 1]
    a_right = common * src[n_ch] - (1 - common) * src[n_ch + 1]
    env = _slow_envelope(rng, n, sf, depth=0.5)
    xs = np.array([_POS[c][0] for c in chans])
    w = np.array([_ALPHA_W[c] for c in chans])
    w_left = w * np.where(xs < 0, 1.0, np.where(xs == 0, 0.5, 0.0))
    w_right = w * np.where(xs > 0, 1.0, np.where(xs == 0, 0.5, 0.0))
    eeg += alpha_uv * env * (np.outer(w_left, a_left) + np.outer(w_right, a_right)) / 0.8

    # Slow activity: focal and intermittent in abnormal participants, diffuse otherwise.
    if abnormal:
        core, ring = _FOCUS[side]
        wf = np.array([1.0 if c in core else 0.45 if c in ring else 0.05 for c in chans])
        burst = _slow_envelope(rng, n, sf, depth=0.9)
        slow = delta_uv * src[n_ch + 2] + theta_uv * src[n_ch + 3]
        eeg += np.outer(wf, burst * slow)
    else:
        eeg += theta_uv * np.outer(np.full(n_ch, 0.6), src[n_ch + 3])

    _add_blinks(rng, eeg, chans, sf)
    _add_pop(rng, eeg, sf)

    # Mains interference (per-electrode impedance) plus odd harmonics below Nyquist.
    phase = rng.uniform(0, 2 * np.pi)
    for k, rel in ((1, 1.0), (3, 0.2)):
        if k * profile.line_freq < sf / 2:
            eeg += np.outer(rel * line_uv, np.sin(2 * np.pi * k * profile.line_freq * t + phase))
    eeg += profile.noise_uv * rng.standard_normal((n_ch, n))
    return eeg * (profile.gain * 1e-6)


def _add_blinks(rng: np.random.Generator, eeg: np.ndarray, chans: Sequence[str], sf: float) -> None:
    n = eeg.shape[1]
    width = int(0.35 * sf)
    shape = np.sin(np.linspace(0, np.pi, width)) ** 2
    train = np.zeros(n)
    n_blinks = rng.poisson(n / sf / 6.0)
    for start in rng.integers(0, n - width, size=n_blinks):
        train[start : start + width] += rng.uniform(60.0, 150.0) * shape
    w = np.array([_BLINK_W.get(c, 0.0) for c in chans])
    eeg += np.outer(w, train)


def _add_pop(rng: np.random.Generator, eeg: np.ndarray, sf: float) -> None:
    """A rare electrode pop (step with fast decay): the windows that must be rejected."""
    if rng.random() >= 0.2:
        return
    n = eeg.shape[1]
    ch = rng.integers(eeg.shape[0])
    start = int(rng.integers(0, n - int(sf)))
    decay = np.exp(-np.arange(n - start) / (0.3 * sf))
    eeg[ch, start:] += rng.uniform(700.0, 1200.0) * decay


def _simulate_extra(
    rng: np.random.Generator, kind: str, n: int, sf: float, gain: float
) -> np.ndarray:
    """A non-EEG channel in volts: ECG beats, or noise for other types."""
    if kind == "ecg":
        rr = 60.0 / rng.uniform(55.0, 85.0)
        beats = np.cumsum(rr * (1 + 0.03 * rng.standard_normal(int(n / sf / rr) + 2)))
        train = np.zeros(n)
        idx = (beats * sf).astype(int)
        train[idx[idx < n]] = 1.0
        k = np.arange(int(0.6 * sf)) / sf
        qrs = 1000.0 * np.exp(-0.5 * ((k - 0.05) / 0.012) ** 2)
        twave = 300.0 * np.exp(-0.5 * ((k - 0.3) / 0.04) ** 2)
        sig = np.convolve(train, qrs + twave)[:n] + 10.0 * rng.standard_normal(n)
    else:
        sig = 20.0 * rng.standard_normal(n)
    return sig * (gain * 1e-6)


def _make_raw(
    profile: SiteProfile, eeg_all: np.ndarray, extras: list[np.ndarray]
) -> mne.io.RawArray:
    import mne

    keep = [STANDARD_1020_19.index(c) for c in profile.eeg_channels]
    names = [profile.channel_name(c) for c in profile.eeg_channels] + list(
        profile.extra_channels
    )
    types = ["eeg"] * len(keep) + [
        _EXTRA_TYPES.get(c.upper(), "misc") for c in profile.extra_channels
    ]
    data = np.vstack([eeg_all[keep], *extras]) if extras else eeg_all[keep]
    info = mne.create_info(names, profile.sfreq, types, verbose=False)
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_meas_date(MEAS_DATE)
    raw.info["line_freq"] = float(profile.line_freq)
    return raw


def _oddball_events(
    rng: np.random.Generator, duration_s: float, p_target: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Stimulus onsets (s) every 0.9-1.3 s and their kind (1 standard, 2 target)."""
    onsets = []
    t = 1.0
    while t < duration_s - 1.0:
        onsets.append(t)
        t += rng.uniform(0.9, 1.3)
    kinds = np.where(rng.random(len(onsets)) < p_target, 2, 1)
    return np.round(np.array(onsets), 3), kinds


def _add_evoked(
    rng: np.random.Generator,
    eeg_uv: np.ndarray,
    sf: float,
    onsets: np.ndarray,
    kinds: np.ndarray,
) -> None:
    """Add sensory N1/P2 to every stimulus and a parietal P300 to targets (µV, in place)."""
    chans = STANDARD_1020_19
    xy = np.array([_POS[c] for c in chans])
    parietal = np.exp(-((xy - np.array([0.0, -0.45])) ** 2).sum(1) / 0.5**2)
    central = np.exp(-((xy - np.array([0.0, 0.2])) ** 2).sum(1) / 0.6**2)
    p3_uv = rng.uniform(20.0, 30.0)
    p3_lat = rng.uniform(0.30, 0.40)
    k = np.arange(int(0.8 * sf)) / sf
    n = eeg_uv.shape[1]
    for onset, kind in zip(onsets, kinds):
        start = int(round(onset * sf))
        stop = min(start + len(k), n)
        wave = np.outer(central, -4.0 * np.exp(-0.5 * ((k - 0.1) / 0.025) ** 2)
                        + 3.0 * np.exp(-0.5 * ((k - 0.18) / 0.03) ** 2))
        if kind == 2:
            lat = p3_lat + rng.uniform(-0.03, 0.03)
            amp = p3_uv * rng.lognormal(0.0, 0.25)
            wave += np.outer(parietal, amp * np.exp(-0.5 * ((k - lat) / 0.08) ** 2))
        eeg_uv[:, start:stop] += wave[:, : stop - start]


# --------------------------------------------------------------------------- metadata
def _participants(
    rng: np.random.Generator, n: int, consent_rng: np.random.Generator
) -> list[dict[str, str]]:
    """Balanced, consent-stratified participant metadata, with DUO consent columns.

    The DUO columns come from their own ``consent_rng``, so ``rng``'s stream (and every
    column and signal drawn after it) is what it was before they existed.
    """
    diagnosis, consent = diagnoses_and_consent(rng, n)
    rows = []
    for i in range(n):
        rows.append(
            {
                "participant_id": participant_id(i, n),
                "age": str(int(rng.integers(18, 86))),
                "sex": ("M", "F")[rng.integers(2)],
                "hand": "L" if rng.random() < 0.1 else "R",
                "diagnosis": str(diagnosis[i]),
                "consent": consent[i],
            }
        )
    for row, duo in zip(rows, duo_consents(consent_rng, consent)):
        row.update(duo)
    return rows


def _rewrite_participants(root: Path, rows: list[dict[str, str]]) -> None:
    """Merge our columns into mne-bids' participants.tsv/.json, keeping its columns."""
    tsv = root / "participants.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    existing = {ln.split("\t")[0]: dict(zip(header, ln.split("\t"))) for ln in lines[1:] if ln}
    columns = header + [c for c in rows[0] if c not in header]
    out = ["\t".join(columns)]
    for row in rows:
        merged = {c: "n/a" for c in columns}
        merged.update(existing.get(row["participant_id"], {}))
        merged.update(row)
        out.append("\t".join(merged[c] for c in columns))
    write_text_atomic(tsv, "\n".join(out) + "\n")

    sidecar = root / "participants.json"
    meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
    meta["diagnosis"] = {
        "Description": "Clinical EEG reading (synthetic)",
        "Levels": {"normal": "normal EEG", "abnormal": "abnormal EEG (focal slowing)"},
    }
    meta["consent"] = {
        "Description": "Consent to use the recording for federated model training",
        "Levels": {"yes": "consented", "no": "refused", "withdrawn": "consent withdrawn"},
    }
    meta.update(DUO_CONSENT_COLUMNS)
    write_text_atomic(sidecar, json.dumps(meta, indent=4) + "\n")


# --------------------------------------------------------------------------- public API
def _check_sizes(n_participants: int, duration_s: float) -> None:
    if isinstance(n_participants, bool) or not isinstance(n_participants, (int, np.integer)):
        raise TypeError(
            f"n_participants must be an int, got {type(n_participants).__name__} instead."
        )
    if n_participants < MIN_PARTICIPANTS:
        raise ValueError(
            f"Invalid value for the 'n_participants' parameter: need at least "
            f"{MIN_PARTICIPANTS} (two per class for a stratified split), got "
            f"{n_participants} instead."
        )
    if not duration_s >= MIN_DURATION_S:
        raise ValueError(
            f"Invalid value for the 'duration_s' parameter: need at least {MIN_DURATION_S} "
            f"s of signal per participant to cut windows, got {duration_s!r} instead."
        )


def _normalise_format(fmt: str, layout: str) -> str:
    by_lower = {f.lower(): f for f in FORMATS}
    if str(fmt).lower() not in by_lower:
        raise ValueError(
            f"Invalid value for the 'format' parameter. Allowed values are {list(FORMATS)}, "
            f"but got {fmt!r} instead."
        )
    if layout not in ("bids", "loose"):
        raise ValueError(
            f"Invalid value for the 'layout' parameter. Allowed values are 'bids' and 'loose', "
            f"but got {layout!r} instead."
        )
    canonical = by_lower[str(fmt).lower()]
    if canonical == "FIF" and layout == "bids":
        raise ValueError(
            "Invalid combination: BIDS keeps EEG as EDF, BDF, BrainVision or EEGLAB; FIF is for "
            "MEG. Use layout='loose' for FIF files, or another format."
        )
    return canonical


def synthesize_site(
    out_dir: Path,
    profile: SiteProfile,
    *,
    n_participants: int,
    duration_s: float,
    seed: int,
    format: str = "EDF",
    task: str = TASK,
    layout: Literal["bids", "loose"] = "bids",
) -> Path:
    """Write one simulated hospital at ``out_dir / profile.name``; return its root.

    ``layout="bids"`` writes a BIDS dataset with mne-bids in ``format`` (EDF, BDF,
    BrainVision, EEGLAB); ``"loose"`` writes plain files (those formats or FIF) under
    ``<participant>/`` with a ``recordings.tsv`` and ``participants.tsv`` at the root (see
    :mod:`fedneuro.data.loose`). ``task="oddball"`` adds standard/target stimuli (events.tsv
    in BIDS, annotations in loose files). Deterministic for a given ``seed`` (the rest
    signal does not depend on format, layout or task). The site is built in a hidden sibling
    directory and renamed into place at the end, so a crash never leaves a half-written
    site; an existing site of the same name is replaced.
    """
    _check_sizes(n_participants, duration_s)
    if not isinstance(profile, SiteProfile):
        raise TypeError(f"profile must be a SiteProfile, got {type(profile).__name__} instead.")
    fmt = _normalise_format(format, layout)
    if task not in TASKS:
        raise ValueError(
            f"Invalid value for the 'task' parameter. Allowed values are {list(TASKS)}, but "
            f"got {task!r} instead."
        )
    final, tmp = partial_dir_for(out_dir, profile.name)

    children = np.random.SeedSequence(seed).spawn(n_participants + 2)
    meta_rng, site_rng = np.random.default_rng(children[0]), np.random.default_rng(children[1])
    rows = _participants(meta_rng, n_participants, np.random.default_rng([seed, 7331]))
    # Per-electrode mains pick-up is a property of the site's rooms and cables.
    line_uv = site_rng.uniform(1.0, 6.0, size=len(STANDARD_1020_19))
    line_uv[site_rng.integers(len(line_uv))] *= 3.0
    recordings: list[dict[str, str]] = []
    try:
        tmp.mkdir(parents=True)
        for row, child in zip(rows, children[2:]):
            rng = np.random.default_rng(child)
            eeg = _simulate_eeg(
                rng, profile, line_uv, abnormal=row["diagnosis"] == "abnormal",
                duration_s=duration_s,
            )
            events = None
            if task == "oddball":
                ev_rng = np.random.default_rng(child.spawn(1)[0])
                onsets, kinds = _oddball_events(ev_rng, duration_s)
                evoked = np.zeros_like(eeg)
                _add_evoked(ev_rng, evoked, profile.sfreq, onsets, kinds)
                eeg += evoked * (profile.gain * 1e-6)
                events = (onsets, kinds)
            extras = [
                _simulate_extra(rng, _EXTRA_TYPES.get(c.upper(), "misc"), eeg.shape[1],
                                profile.sfreq, profile.gain)
                for c in profile.extra_channels
            ]
            raw = _make_raw(profile, eeg, extras)
            if layout == "bids":
                _write_bids(tmp, raw, row["participant_id"], task, fmt, events)
            else:
                recordings.append(
                    _write_loose(tmp, raw, row["participant_id"], task, fmt, events, profile)
                )
        if layout == "bids":
            import mne_bids

            mne_bids.make_dataset_description(
                path=tmp, name=f"fedneuro synthetic EEG site {profile.name}",
                authors=["fedneuro synth"], overwrite=True, verbose=False,
            )
            _rewrite_participants(tmp, rows)
        else:
            _write_loose_tables(tmp, rows, recordings)
        swap_dir_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote synthetic site %s (%d participants, %s %s, task %s) to %s",
        profile.name, n_participants, layout, fmt, task, final,
    )
    return final


def _write_bids(
    root: Path,
    raw: mne.io.RawArray,
    participant_id: str,
    task: str,
    fmt: str,
    events: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    import mne_bids

    bids_path = mne_bids.BIDSPath(
        subject=participant_id.removeprefix("sub-"), task=task, datatype="eeg", root=root
    )
    kwargs: dict[str, object] = {}
    if events is not None:
        onsets, kinds = events
        samples = np.round(onsets * raw.info["sfreq"]).astype(int)
        kwargs = {
            "events": np.column_stack([samples, np.zeros_like(samples), kinds]),
            "event_id": ODDBALL_EVENT_ID,
        }
    mne_bids.write_raw_bids(
        raw, bids_path, format=fmt, allow_preload=True, overwrite=True, verbose=False, **kwargs
    )


def _write_loose(
    root: Path,
    raw: mne.io.RawArray,
    participant_id: str,
    task: str,
    fmt: str,
    events: tuple[np.ndarray, np.ndarray] | None,
    profile: SiteProfile,
) -> dict[str, str]:
    import mne

    if events is not None:
        names = {v: k for k, v in ODDBALL_EVENT_ID.items()}
        onsets, kinds = events
        raw.set_annotations(
            mne.Annotations(onsets, np.zeros(len(onsets)), [names[int(k)] for k in kinds])
        )
    rel = Path(participant_id) / f"{participant_id}_task-{task}_eeg{FORMATS[fmt]}"
    (root / participant_id).mkdir(parents=True, exist_ok=True)
    if fmt == "FIF":
        raw.save(root / rel, overwrite=True, verbose=False)
    else:
        with warnings.catch_warnings(), mne.use_log_level("error"):
            # pybv stores float32 (ample for µV-scale EEG) and says so on every export.
            warnings.filterwarnings("ignore", message="Encountered data in 'double' format")
            mne.export.export_raw(
                root / rel, raw, fmt=_EXPORT_FMT[fmt], overwrite=True, verbose=False
            )
    return {
        "path": rel.as_posix(),
        "participant_id": participant_id,
        "task": task,
        "line_freq": f"{profile.line_freq:g}",
    }


def _write_loose_tables(
    root: Path, rows: list[dict[str, str]], recordings: list[dict[str, str]]
) -> None:
    for name, table in (("participants.tsv", rows), ("recordings.tsv", recordings)):
        columns = list(table[0])
        lines = ["\t".join(columns)] + ["\t".join(r[c] for c in columns) for r in table]
        write_text_atomic(root / name, "\n".join(lines) + "\n")


_LAP_GAIN = (1.25, 0.8, 1.12, 0.89)


def _site_profiles(n_sites: int, profiles: Sequence[SiteProfile]) -> list[SiteProfile]:
    """``n_sites`` profiles: cycle the given ones, varying gain/noise on each new lap.

    The variations cycle within bounds (gain ×0.8–1.25, noise ×1.25–2): growing without bound,
    every window of the 46th site on exceeded the artefact limit."""
    out = []
    for i in range(n_sites):
        base, lap = profiles[i % len(profiles)], i // len(profiles)
        if lap == 0:
            out.append(base)
            continue
        step = (lap - 1) % len(_LAP_GAIN)
        out.append(
            dataclasses.replace(
                base,
                name=f"{base.name}-{lap + 1}",
                gain=round(base.gain * _LAP_GAIN[step], 4),
                noise_uv=round(base.noise_uv * (1 + 0.25 * (step + 1)), 4),
            )
        )
    return out


def synthesize_consortium(
    out_dir: Path,
    *,
    n_sites: int = 3,
    participants_per_site: int = 40,
    duration_s: float = 60.0,
    seed: int = 0,
    profiles: Sequence[SiteProfile] | None = None,
    format: str = "EDF",
    task: str = TASK,
    layout: Literal["bids", "loose"] = "bids",
) -> list[tuple[str, Path]]:
    """Write ``n_sites`` simulated hospitals under ``out_dir``; return (name, BIDS root).

    Sites use ``profiles`` (default ``DEFAULT_PROFILES``) in turn; beyond their number the
    profiles repeat with a ``-2``, ``-3``... name suffix and varied gain and noise. Each
    site's seed is spawned from ``seed``, so sites differ and the whole run is reproducible.
    ``format``, ``task`` and ``layout`` are those of :func:`synthesize_site`.
    """
    if isinstance(n_sites, bool) or not isinstance(n_sites, (int, np.integer)) or n_sites < 1:
        raise ValueError(
            f"Invalid value for the 'n_sites' parameter: must be an int >= 1, got "
            f"{n_sites!r} instead."
        )
    _check_sizes(participants_per_site, duration_s)
    _normalise_format(format, layout)
    if task not in TASKS:
        raise ValueError(
            f"Invalid value for the 'task' parameter. Allowed values are {list(TASKS)}, but "
            f"got {task!r} instead."
        )
    base = tuple(DEFAULT_PROFILES if profiles is None else profiles)
    if not base:
        raise ValueError("Invalid value for the 'profiles' parameter: got an empty sequence.")
    names = [p.name for p in base]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Invalid value for the 'profiles' parameter: site names must be unique, got "
            f"{names} instead."
        )
    chosen = _site_profiles(n_sites, base)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_sites)]
    return [
        (p.name, synthesize_site(out_dir, p, n_participants=participants_per_site,
                                 duration_s=duration_s, seed=s, format=format, task=task,
                                 layout=layout))
        for p, s in zip(chosen, seeds)
    ]

