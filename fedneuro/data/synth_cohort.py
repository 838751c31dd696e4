"""Synthetic cohorts shared by the EEG and MRI generators: balanced diagnoses, a few refusals."""

from __future__ import annotations

import numpy as np


def diagnoses_and_consent(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """Balanced 'normal'/'abnormal' diagnoses; about 10 % refused or withdrew consent.

    Refusals alternate between classes so both stay represented after consent filtering.
    """
    diagnosis = np.array(["normal"] * ((n + 1) // 2) + ["abnormal"] * (n // 2))
    rng.shuffle(diagnosis)
    n_out = 1 if n < 8 else max(2, round(0.1 * n))
    by_class = [list(rng.permutation(np.flatnonzero(diagnosis == c))) for c in ("normal", "abnormal")]
    out: list[int] = []
    while len(out) < n_out:
        out.append(int(by_class[len(out) % 2].pop()))
    consent = ["yes"] * n
    for k, idx in enumerate(sorted(out)):
        consent[idx] = ("no", "withdrawn")[k % 2]
    return diagnosis, consent


def participant_id(index: int, n: int) -> str:
    return f"sub-{index + 1:0{max(3, len(str(n)))}d}"
