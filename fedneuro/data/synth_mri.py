"""Synthetic hospital sites with structural (and optionally functional) MRI, as BIDS.

Each participant's head is an analytic phantom (scaled down to fit a 64 mm field of view,
so sites are generated in about a second): scalp, skull shell, CSF, a grey-matter ribbon,
white matter and two lateral ventricles, with partial-volume edges. It is evaluated at
the world position of every voxel of the site's grid, so sites differ the way scanners do
- voxel size, storage orientation (RAS, LAS, PSR...), an oblique tilt, intensity scale,
data type, smooth bias field and Rician noise - without any resampling in the generator.
Heads vary in size and pose. "abnormal" participants carry atrophy: enlarged ventricles
and a thinned cortex over one lateral temporo-parietal region.

The anatomy of participant k depends only on the seed, not on the site profile: the same
seed with two profiles gives the same heads scanned differently (a harmonisation test).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fedneuro.atomic import partial_dir_for, swap_dir_into_place
from fedneuro.data.synth_cohort import DUO_CONSENT_COLUMNS, diagnoses_and_consent, duo_consents, participant_id

__all__ = [
    "DEFAULT_MRI_PROFILES",
    "MIN_PARTICIPANTS",
    "MRISiteProfile",
    "site_affine",
    "synthesize_mri_consortium",
    "synthesize_mri_site",
]

logger = logging.getLogger(__name__)

#: Two per class, so a stratified split has both classes on both sides.
MIN_PARTICIPANTS = 4
BOLD_TASK = "rest"
BOLD_VOXEL_MM = 3.0
BOLD_TR_S = 2.0
_AXES = ({"L", "R"}, {"A", "P"}, {"I", "S"})

# Head-frame geometry (mm; x right, y anterior, z superior) and tissue boundaries as
# fractions of the head ellipsoid's radius.
_HEAD_SEMI_AXES = np.array([23.0, 27.0, 23.0])
_SCALP_OUT, _SKULL_OUT, _SKULL_IN, _BRAIN_OUT, _WM_OUT = 1.0, 0.92, 0.84, 0.80, 0.64
_EDGE_MM = 0.6  # partial-volume edge width
_VENTRICLE_CENTRES = np.array([[-5.5, 2.0, 4.0], [5.5, 2.0, 4.0]])
_VENTRICLE_AXES = np.array([2.2, 8.0, 3.2])
# Relative intensities per tissue: scalp, skull, csf, gm, wm.
_T1W = np.array([0.85, 0.08, 0.15, 0.62, 1.0])
_BOLD = np.array([0.25, 0.05, 1.0, 0.75, 0.55])


@dataclass(frozen=True)
class MRISiteProfile:
    """How one simulated hospital acquires structural MRI.

    ``orientation``: nibabel axis codes of the stored array (``"RAS"``: first axis to the
    Right...). ``tilt_deg`` rotates the slab about the left-right axis (oblique). Intensities
    are ``intensity_scale`` x (white matter = 1), with a smooth multiplicative bias field of
    strength ``bias`` and Rician noise of standard deviation ``noise`` (relative to white
    matter), stored as ``dtype``.
    """

    name: str
    voxel_size_mm: tuple[float, float, float]
    orientation: str
    tilt_deg: float
    intensity_scale: float
    noise: float
    bias: float
    dtype: Literal["int16", "float32"]
    field_strength_t: float = 3.0
    fov_mm: float = 64.0

    def __post_init__(self) -> None:
        problems = []
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            problems.append(f"'name' must be a plain directory name, got {self.name!r}")
        if len(self.voxel_size_mm) != 3 or not all(0.3 <= v <= 4 for v in self.voxel_size_mm):
            problems.append(
                f"'voxel_size_mm' must be 3 sizes in [0.3, 4] mm, got {self.voxel_size_mm!r}"
            )
        codes = str(self.orientation).upper()
        if len(codes) != 3 or any(
            sum(c in axis for c in codes) != 1 for axis in _AXES
        ):
            problems.append(
                "'orientation' must be 3 axis codes, one of L/R, A/P and I/S each (e.g. "
                f"'RAS', 'LAS', 'PSR'), got {self.orientation!r}"
            )
        if not -30 <= self.tilt_deg <= 30:
            problems.append(f"'tilt_deg' must be in [-30, 30], got {self.tilt_deg!r}")
        if not self.intensity_scale > 0:
            problems.append(f"'intensity_scale' must be > 0, got {self.intensity_scale!r}")
        if self.dtype == "int16" and not 10 <= self.intensity_scale <= 8000:
            problems.append(
                f"int16 storage needs 'intensity_scale' in [10, 8000], got "
                f"{self.intensity_scale!r}"
            )
        if not 0 <= self.noise <= 0.5:
            problems.append(f"'noise' must be in [0, 0.5], got {self.noise!r}")
        if not 0 <= self.bias <= 0.5:
            problems.append(f"'bias' must be in [0, 0.5], got {self.bias!r}")
        if self.dtype not in ("int16", "float32"):
            problems.append(f"'dtype' must be 'int16' or 'float32', got {self.dtype!r}")
        if not 56 <= self.fov_mm <= 256:
            problems.append(
                f"'fov_mm' must be in [56, 256] (the head is 54 mm), got {self.fov_mm!r}"
            )
        if problems:
            raise ValueError("Invalid MRISiteProfile: " + "; ".join(problems) + ".")


DEFAULT_MRI_PROFILES: tuple[MRISiteProfile, ...] = (
    # 3 T research scanner: 1 mm isotropic, stored RAS, 16-bit integers.
    MRISiteProfile(
        name="hospital-a", voxel_size_mm=(1.0, 1.0, 1.0), orientation="RAS", tilt_deg=0.0,
        intensity_scale=1000.0, noise=0.03, bias=0.10, dtype="int16", field_strength_t=3.0,
    ),
    # 1.5 T clinical scanner: 1.2 mm, radiological LAS storage, higher gain, stronger bias.
    MRISiteProfile(
        name="hospital-b", voxel_size_mm=(1.2, 1.2, 1.2), orientation="LAS", tilt_deg=0.0,
        intensity_scale=3000.0, noise=0.04, bias=0.20, dtype="int16", field_strength_t=1.5,
    ),
    # Sagittal acquisition exported as float: 1.5 mm, PSR storage, 8 degree oblique.
    MRISiteProfile(
        name="hospital-c", voxel_size_mm=(1.5, 1.5, 1.5), orientation="PSR", tilt_deg=8.0,
        intensity_scale=1.0, noise=0.05, bias=0.15, dtype="float32", field_strength_t=3.0,
    ),
)


# --------------------------------------------------------------------------- geometry
def site_affine(
    orientation: str, voxel_size_mm: Sequence[float], fov_mm: float, tilt_deg: float = 0.0
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(affine, shape) of a grid covering ``fov_mm`` centred on the world origin, its
    array axes stored in ``orientation`` and tilted ``tilt_deg`` about left-right."""
    from nibabel.orientations import axcodes2ornt

    ornt = axcodes2ornt(tuple(orientation.upper()))
    vox = np.asarray(voxel_size_mm, dtype=np.float64)
    shape = tuple(int(round(fov_mm / v)) for v in vox)
    rzs = np.zeros((3, 3))
    for j, (axis, flip) in enumerate(ornt):
        rzs[int(axis), j] = flip * vox[j]
    t = np.radians(tilt_deg)
    tilt = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    rzs = tilt @ rzs
    affine = np.eye(4)
    affine[:3, :3] = rzs
    affine[:3, 3] = -rzs @ ((np.array(shape) - 1) / 2)
    return affine, shape  # type: ignore[return-value]


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    a, b, c = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Anatomy:
    """One participant's head: drawn from the seed alone (never from the profile)."""

    head_scale: float
    shift_mm: np.ndarray
    rotation: np.ndarray
    ventricle_scale: float
    thinning: float
    side: int
    bias_coef: np.ndarray
    bold_phase: float


def _draw_anatomy(rng: np.random.Generator, *, abnormal: bool, age: int) -> _Anatomy:
    head_scale = float(np.clip(rng.normal(1.0, 0.035), 0.93, 1.07))
    shift = rng.uniform(-2.0, 2.0, size=3)
    angles = rng.uniform(-4.0, 4.0, size=3)
    ventricles = float(np.exp(rng.normal(0.0, 0.1)) * (1 + 0.004 * (age - 50)))
    enlargement = float(rng.uniform(1.3, 1.8))
    thinning = float(rng.uniform(0.35, 0.6))
    side = int(rng.choice([-1, 1]))
    bias_coef = rng.standard_normal(6)
    phase = float(rng.uniform(0, 2 * np.pi))
    return _Anatomy(
        head_scale=head_scale, shift_mm=shift, rotation=_rotation(angles),
        ventricle_scale=ventricles * (enlargement if abnormal else 1.0),
        thinning=thinning if abnormal else 0.0, side=side, bias_coef=bias_coef,
        bold_phase=phase,
    )


def _expit(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)  # type: ignore[no-any-return]


def _tissues(world: np.ndarray, anat: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the world points (3, N) in the head, and their partial-volume fractions
    (5, n_head) of scalp, skull, csf, gm, wm. Elsewhere every fraction is ~0 (< 1e-5
    beyond 12 edge widths), so it is not computed."""
    p = anat.rotation.T @ (world - anat.shift_mm[:, None]) / anat.head_scale
    semi = _HEAD_SEMI_AXES[:, None]
    rho = np.sqrt(((p / semi) ** 2).sum(axis=0))
    w = _EDGE_MM / float(_HEAD_SEMI_AXES.mean())
    head = np.flatnonzero(rho < _SCALP_OUT + 12 * w)
    return head, _head_tissues(p[:, head], rho[head], w, anat)


def _head_tissues(p: np.ndarray, rho: np.ndarray, w: float, anat: _Anatomy) -> np.ndarray:
    semi = _HEAD_SEMI_AXES[:, None]

    def inside(r: np.ndarray | float) -> np.ndarray:
        return _expit((r - rho) / w)

    x, z = p[0] / semi[0], p[2] / semi[2]
    region = _expit((anat.side * x - 0.3) / 0.08) * np.exp(-(((z + 0.1) / 0.5) ** 2))
    brain_out = _BRAIN_OUT - anat.thinning * (_BRAIN_OUT - _WM_OUT) * region
    f_scalp, f_skull_out, f_skull_in = inside(_SCALP_OUT), inside(_SKULL_OUT), inside(_SKULL_IN)
    f_brain, f_wm = inside(brain_out), inside(_WM_OUT)
    frac = np.stack(
        [f_scalp - f_skull_out, f_skull_out - f_skull_in, f_skull_in - f_brain,
         f_brain - f_wm, f_wm]
    )
    v = anat.ventricle_scale
    axes = _VENTRICLE_AXES * np.array([v, 1 + 0.35 * (v - 1), v])
    vent = np.zeros(p.shape[1])
    for centre in _VENTRICLE_CENTRES:
        rv = np.sqrt((((p - centre[:, None]) / axes[:, None]) ** 2).sum(axis=0))
        vent = np.maximum(vent, _expit((1.0 - rv) * axes.min() / _EDGE_MM))
    brain = frac[3] + frac[4]
    frac[2] += vent * brain
    frac[3:] *= 1.0 - vent
    return frac


def _bias_field(world: np.ndarray, strength: float, coef: np.ndarray) -> np.ndarray:
    u = world / 32.0
    basis = np.stack(
        [u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[2] ** 2 - 1.0 / 3.0]
    )
    return np.exp(strength * (coef @ basis) / np.sqrt(len(coef)))  # type: ignore[no-any-return]


def _grid_world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return affine[:3, :3] @ ijk + affine[:3, 3:4]


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return signal
    n = rng.standard_normal((2, signal.size)).reshape(2, *signal.shape)
    return np.sqrt((signal + sigma * n[0]) ** 2 + (sigma * n[1]) ** 2)


def _store(values: np.ndarray, profile: MRISiteProfile) -> np.ndarray:
    scaled = values * profile.intensity_scale
    if profile.dtype == "int16":
        return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)
    return scaled.astype(np.float32)


def _t1w(
    profile: MRISiteProfile, anat: _Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    affine, shape = site_affine(
        profile.orientation, profile.voxel_size_mm, profile.fov_mm, profile.tilt_deg
    )
    world = _grid_world(affine, shape)
    head, frac = _tissues(world, anat)
    signal = np.zeros(world.shape[1])
    signal[head] = _T1W @ frac * _bias_field(world[:, head], profile.bias, anat.bias_coef)
    image = _rician(rng, signal, profile.noise).reshape(shape)
    return _store(image, profile), affine


def _bold(
    profile: MRISiteProfile, anat: _Anatomy, rng: np.random.Generator, n_volumes: int
) -> tuple[np.ndarray, np.ndarray]:
    vox = (BOLD_VOXEL_MM,) * 3
    affine, shape = site_affine(profile.orientation, vox, profile.fov_mm, profile.tilt_deg)
    world = _grid_world(affine, shape)
    head, frac = _tissues(world, anat)
    base = _BOLD @ frac * _bias_field(world[:, head], profile.bias, anat.bias_coef)
    t = np.arange(n_volumes) * BOLD_TR_S
    drift = 0.01 * t / max(t[-1], 1.0)
    fluct = 0.02 * np.sin(2 * np.pi * 0.05 * t + anat.bold_phase)
    series = np.zeros((world.shape[1], n_volumes))
    series[head] = base[:, None] * (1 + drift[None, :] + frac[3][:, None] * fluct[None, :])
    image = _rician(rng, series, profile.noise).reshape(*shape, n_volumes)
    return _store(image, profile), affine


# --------------------------------------------------------------------------- files
def _save_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = None
) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], tr))
    nib.save(img, path)


def _write_json(path: Path, payload: dict[str, object]) -> None:
    path.write_text(json.dumps(payload, indent=4) + "\n", encoding="utf-8")


def _participants(rng: np.random.Generator, n: int, consent_rng: np.random.Generator) -> list[dict[str, str]]:
    """Balanced diagnoses; a few participants per site refused or withdrew consent; GA4GH DUO
    consent terms from a separate generator (so images and labels do not depend on them)."""
    diagnosis, consent = diagnoses_and_consent(rng, n)
    rows = [
        {
            "participant_id": participant_id(i, n),
            "age": str(int(rng.integers(20, 86))),
            "sex": ("M", "F")[int(rng.integers(2))],
            "diagnosis": str(diagnosis[i]),
            "consent": consent[i],
        }
        for i in range(n)
    ]
    for row, duo in zip(rows, duo_consents(consent_rng, consent), strict=True):
        row.update(duo)
    return rows


def _write_metadata(root: Path, profile: MRISiteProfile, rows: list[dict[str, str]]) -> None:
    from fedneuro import __version__

    _write_json(
        root / "dataset_description.json",
        {
            "Name": f"fedneuro synthetic MRI site {profile.name}",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "Authors": ["fedneuro synth"],
            "GeneratedBy": [{"Name": "fedneuro.data.synth_mri", "Version": __version__}],
        },
    )
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(r[c] for c in columns) for r in rows]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_json(
        root / "participants.json",
        {
            "age": {"Description": "age at scan", "Units": "year"},
            "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}},
            "diagnosis": {
                "Description": "Clinical MRI reading (synthetic)",
                "Levels": {
                    "normal": "no atrophy",
                    "abnormal": "atrophy: enlarged ventricles, regional cortical thinning",
                },
            },
            "consent": {
                "Description": "Consent to use the images for federated model training",
                "Levels": {"yes": "consented", "no": "refused", "withdrawn": "withdrawn"},
            },
            **DUO_CONSENT_COLUMNS,
        },
    )


def _sidecar(profile: MRISiteProfile) -> dict[str, object]:
    return {
        "Modality": "MR",
        "MagneticFieldStrength": profile.field_strength_t,
        "Manufacturer": "fedneuro-synthetic",
        "ManufacturersModelName": f"phantom-{profile.name}",
        "SeriesDescription": "synthetic T1w (scaled-down head phantom)",
        "ScanningSequence": "GR\\IR",
        "RepetitionTime": 2.3,
        "EchoTime": 0.003,
        "InversionTime": 0.9,
        "FlipAngle": 9,
    }


def _check_n(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"Invalid value for the {name!r} parameter: must be an int >= {minimum}, got "
            f"{value!r} instead."
        )


# --------------------------------------------------------------------------- public API
def synthesize_mri_site(
    out_dir: str | Path,
    profile: MRISiteProfile,
    *,
    n_participants: int,
    seed: int,
    n_bold_volumes: int = 0,
) -> Path:
    """Write one simulated hospital's MRI as a BIDS dataset at ``out_dir / profile.name``.

    Every participant gets ``sub-XXX/anat/sub-XXX_T1w.nii.gz`` (+ JSON sidecar); with
    ``n_bold_volumes`` > 0 also ``func/sub-XXX_task-rest_bold.nii.gz`` (3 mm, TR 2 s).
    Deterministic for a given ``seed``; built in a hidden sibling directory and renamed
    into place (an existing dataset of the same name is replaced). Returns the BIDS root.
    """
    _check_n("n_participants", n_participants, MIN_PARTICIPANTS)
    _check_n("n_bold_volumes", n_bold_volumes, 0)
    if not isinstance(profile, MRISiteProfile):
        raise TypeError(
            f"profile must be an MRISiteProfile, got {type(profile).__name__} instead."
        )
    final, tmp = partial_dir_for(out_dir, profile.name)
    children = np.random.SeedSequence(seed).spawn(n_participants + 1)
    rows = _participants(np.random.default_rng(children[0]), n_participants, np.random.default_rng([seed, 7331]))
    try:
        tmp.mkdir()
        for row, child in zip(rows, children[1:]):
            anat_ss, noise_ss = child.spawn(2)
            anat = _draw_anatomy(
                np.random.default_rng(anat_ss), abnormal=row["diagnosis"] == "abnormal",
                age=int(row["age"]),
            )
            noise_rng = np.random.default_rng(noise_ss)
            pid = row["participant_id"]
            folder = tmp / pid / "anat"
            folder.mkdir(parents=True)
            data, affine = _t1w(profile, anat, noise_rng)
            _save_nifti(folder / f"{pid}_T1w.nii.gz", data, affine)
            _write_json(folder / f"{pid}_T1w.json", _sidecar(profile))
            if n_bold_volumes:
                folder = tmp / pid / "func"
                folder.mkdir()
                data, affine = _bold(profile, anat, noise_rng, n_bold_volumes)
                stem = f"{pid}_task-{BOLD_TASK}_bold"
                _save_nifti(folder / f"{stem}.nii.gz", data, affine, tr=BOLD_TR_S)
                _write_json(
                    folder / f"{stem}.json",
                    {"TaskName": BOLD_TASK, "RepetitionTime": BOLD_TR_S, "EchoTime": 0.03,
                     "MagneticFieldStrength": profile.field_strength_t},
                )
        _write_metadata(tmp, profile, rows)
        swap_dir_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote synthetic MRI site %s (%d participants) to %s", profile.name, n_participants,
        final,
    )
    return final


def synthesize_mri_consortium(
    out_dir: str | Path,
    *,
    n_sites: int = 3,
    participants_per_site: int = 40,
    seed: int = 0,
    profiles: Sequence[MRISiteProfile] | None = None,
    n_bold_volumes: int = 0,
) -> list[tuple[str, Path]]:
    """Write ``n_sites`` simulated hospitals under ``out_dir``; return (name, BIDS root).

    Sites use ``profiles`` (default ``DEFAULT_MRI_PROFILES``) in turn; beyond their number
    they repeat with a ``-2``, ``-3``... suffix and more noise. Each site's seed is spawned
    from ``seed``: sites hold different participants, and the whole run is reproducible.
    """
    _check_n("n_sites", n_sites, 1)
    _check_n("participants_per_site", participants_per_site, MIN_PARTICIPANTS)
    base = tuple(DEFAULT_MRI_PROFILES if profiles is None else profiles)
    if not base:
        raise ValueError("Invalid value for the 'profiles' parameter: got an empty sequence.")
    names = [p.name for p in base]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Invalid value for the 'profiles' parameter: site names must be unique, got "
            f"{names} instead."
        )
    chosen = []
    for i in range(n_sites):
        prof, lap = base[i % len(base)], i // len(base)
        if lap:
            prof = dataclasses.replace(
                prof, name=f"{prof.name}-{lap + 1}",
                noise=round(min(prof.noise * (1 + 0.25 * lap), 0.5), 4),
            )
        chosen.append(prof)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_sites)]
    return [
        (p.name, synthesize_mri_site(out_dir, p, n_participants=participants_per_site,
                                     seed=s, n_bold_volumes=n_bold_volumes))
        for p, s in zip(chosen, seeds)
    ]
