"""The data layer's exceptions: each message names the file (or field) and the fix."""

from __future__ import annotations

__all__ = [
    "BIDSDatasetError",
    "EventsError",
    "HarmonisationError",
    "RecordingReadError",
]


class BIDSDatasetError(ValueError):
    """A site's dataset (BIDS tree or loose-file table) cannot be used as it is."""


class HarmonisationError(ValueError):
    """A recording cannot be brought to the input contract; the message names the file."""


class RecordingReadError(HarmonisationError):
    """A recording file cannot be read: missing, empty, truncated, malformed or unsupported."""


class EventsError(HarmonisationError):
    """A recording's events (events.tsv or annotations) cannot be used for event windows."""
