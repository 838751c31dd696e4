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


#: Diseases other than the demo's (abnormal EEG) that disease-specific consents name.
_OTHER_DISEASES = ("MONDO:0005180", "MONDO:0004975", "MONDO:0005098")  # Parkinson's, Alzheimer's, stroke
_NA = "n/a"


def duo_consents(rng: np.random.Generator, consent: list[str]) -> list[dict[str, str]]:
    """GA4GH DUO consent columns matching ``consent`` ("yes", "no", "withdrawn").

    ``consent_duo`` (terms joined by ``;``), ``consent_date``, ``consent_expiry`` and
    ``consent_withdrawn`` (n/a when empty). "no" has no consent; "withdrawn" consented (HMB)
    and later withdrew. Of the n "yes": n // 20 DS consents on another disease, n // 20
    HMB;IRB, one expired consent (when n >= 10), about 10 % each GRU and HMB;NCU, the rest
    HMB. Fixed shares rather than independent draws, so that every site, however small,
    keeps at least 85 % of "yes" usable by a non-commercial HMB study even without an
    ethics approval. Dates are fixed in the past (2016-2024).
    """
    yes = [int(i) for i in rng.permutation([i for i, c in enumerate(consent) if c == "yes"])]
    n = len(yes)
    shares = [("ds", n // 20), ("expired", 1 if n >= 10 else 0), ("HMB;IRB", n // 20),
              ("GRU", round(0.1 * n)), ("HMB;NCU", round(0.1 * n))]
    kind: dict[int, str] = {}
    start = 0
    for name, count in shares:
        kind.update((i, name) for i in yes[start : start + count])
        start += count
    rows = []
    for i, status in enumerate(consent):
        if status == "no":
            rows.append({"consent_duo": _NA, "consent_date": _NA, "consent_expiry": _NA, "consent_withdrawn": _NA})
            continue
        given = _day(rng, "2018-01-01", "2022-12-31")
        expiry = withdrawn = _NA
        terms = kind.get(i, "HMB")
        if status == "withdrawn":
            terms = "HMB"
            withdrawn = str(given + np.timedelta64(int(rng.integers(100, 700)), "D"))
        elif terms == "ds":
            terms = f"DS:{_OTHER_DISEASES[int(rng.integers(len(_OTHER_DISEASES)))]}"
        elif terms == "expired":
            given = _day(rng, "2016-01-01", "2017-12-31")
            terms, expiry = "HMB", str(given + np.timedelta64(5 * 365, "D"))
        elif rng.random() < 0.1:  # a few time-limited consents, well into the future
            expiry = str(given + np.timedelta64(int(rng.integers(15, 20)) * 365, "D"))
        rows.append({"consent_duo": terms, "consent_date": str(given), "consent_expiry": expiry,
                     "consent_withdrawn": withdrawn})
    return rows


def _day(rng: np.random.Generator, first: str, last: str) -> np.datetime64:
    start, stop = np.datetime64(first, "D"), np.datetime64(last, "D")
    return start + np.timedelta64(int(rng.integers(0, int((stop - start).astype(int)) + 1)), "D")


#: participants.json descriptions of the columns :func:`duo_consents` writes.
DUO_CONSENT_COLUMNS = {
    "consent_duo": {
        "Description": "Consented data uses as GA4GH Data Use Ontology terms, separated by ';' "
        "(e.g. HMB, GRU, HMB;NCU, DS:MONDO:0005180); n/a = no consent",
    },
    "consent_date": {"Description": "Date the consent was given (YYYY-MM-DD)"},
    "consent_expiry": {"Description": "Date the consent expires (YYYY-MM-DD); n/a = no expiry"},
    "consent_withdrawn": {"Description": "Date the consent was withdrawn (YYYY-MM-DD); n/a = not withdrawn"},
}
