"""Site set-up for tests that run the real ClientApp: a site configuration file whose site has
imported its consents (from the synthetic participants.tsv) and accepts the demo's purpose,
as a site operator would with `fedneuro consent import` and a policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedneuro.governance.consent import import_consent_file


def write_site_config(folder: Path, name: str, bids_root: Path, *, noise_seed: int, policy: dict[str, Any] | None = None,
                      consents: bool = True, **fields: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state_dir = folder / name
    if consents:
        import_consent_file(state_dir, bids_root / "participants.tsv")
    body = {"name": name, "bids_root": str(bids_root), "state_dir": str(state_dir), "noise_seed": noise_seed,
            "policy": {"accepted_purposes": ["HMB"], **(policy or {})}, **fields}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(body))
    return path


def small_cohort(study):  # type: ignore[no-untyped-def]
    """The study with cohort floors the 12-participant test sites can meet (the demo asks for 20)."""
    governance = study.governance.model_copy(update={"min_cohort": 3, "min_participants_per_metric": 2})
    return study.model_copy(update={"governance": governance})
