"""Shared, session-scoped fixtures. Data-layer fixtures are prefixed ``data_``."""

from __future__ import annotations

import logging
from pathlib import Path

import mne
import pytest

from fedneuro.data.spec import DataSpec, InputContract

# pytest (>= 8) attaches its log-file handler to every non-propagating logger, MNE's among
# them; MNE then echoes each warning to stdout, which corrupts the JSON a CLI command prints
# under CliRunner. Letting MNE's records propagate to the root logger keeps pytest's handlers
# off MNE's logger (and still captures its records). Tests only: the CLI never sees this.
assert mne.utils.logger is logging.getLogger("mne")
logging.getLogger("mne").propagate = True

# Small on purpose: 3 sites x 12 participants x 20 s keeps the data tests fast.
DATA_N_PARTICIPANTS = 12
DATA_DURATION_S = 20.0
DATA_SEED = 7


@pytest.fixture(scope="session")
def data_spec() -> DataSpec:
    return DataSpec()


@pytest.fixture(scope="session")
def data_contract() -> InputContract:
    from fedneuro.data.synth import STANDARD_1020_19

    return InputContract(channels=STANDARD_1020_19, sfreq=200.0, input_window_seconds=4.0)


@pytest.fixture(scope="session")
def data_consortium(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three default sites, small; treat as read-only (copy before corrupting)."""
    from fedneuro.data.synth import synthesize_consortium

    out = tmp_path_factory.mktemp("consortium")
    sites = synthesize_consortium(
        out,
        participants_per_site=DATA_N_PARTICIPANTS,
        duration_s=DATA_DURATION_S,
        seed=DATA_SEED,
    )
    return dict(sites)


@pytest.fixture(scope="session")
def data_windows(data_consortium, data_contract, data_spec):  # type: ignore[no-untyped-def]
    """Harmonised WindowSet of each default site (eligible participants only)."""
    from fedneuro.data.bids import eligible_participants, read_participants
    from fedneuro.data.harmonise import load_site_windows

    out = {}
    for name, root in data_consortium.items():
        cohort = eligible_participants(read_participants(root, data_spec), data_spec)
        out[name] = load_site_windows(root, cohort, data_contract, data_spec)
    return out


# --------------------------------------------------------------------------- more data fixtures
DATA_EVENT_CLASSES = {"standard": 0, "target": 1}


@pytest.fixture(scope="session")
def data_event_spec() -> DataSpec:
    """Event-locked windows of the synthetic oddball task (labels from events)."""
    return DataSpec(label_source="events", classes=DATA_EVENT_CLASSES, task="oddball")


@pytest.fixture(scope="session")
def data_event_contract() -> InputContract:
    """A 1-s, 200 Hz window: event-locked tests need not pay for 4-s windows."""
    from fedneuro.data.synth import STANDARD_1020_19

    return InputContract(channels=STANDARD_1020_19, sfreq=200.0, input_window_seconds=1.0)


@pytest.fixture(scope="session")
def data_oddball_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One BIDS oddball site (BrainVision, 256 Hz): 8 participants x 60 s, read-only."""
    from fedneuro.data.synth import DEFAULT_PROFILES, synthesize_site

    return synthesize_site(
        tmp_path_factory.mktemp("oddball"), DEFAULT_PROFILES[0], n_participants=8,
        duration_s=60.0, seed=DATA_SEED, format="BrainVision", task="oddball",
    )
