"""A site's own configuration: where its data and its durable state live.

The site owns this file; nothing in it comes from the coordinator.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fedneuro.governance.policy import SitePolicy


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    bids_root: Path = Field(description="the site's BIDS EEG dataset (read-only)")
    state_dir: Path = Field(description="writable: privacy ledger, noise secret, logs")
    policy: SitePolicy = Field(default_factory=SitePolicy)
    device: str = Field(default="auto", description="where this site trains: auto (CUDA if present), cpu, cuda, cuda:N")
    signing_key: Path | None = Field(
        default=None,
        description="the site's Ed25519 signing key (PEM, signing.key of the site kit): signs its run-plan "
        "approvals, and its public half checks them before any run touches data (as the SuperNode sees the path)",
    )
    noise_seed: int | None = Field(
        default=None,
        description="fixed DP noise seed, for reproducible simulations only; None = a "
        "secret generated once at the site (whoever knows the seed can remove the noise)",
    )

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "privacy-ledger.jsonl"

    def noise_seed_for(self, study_id: str, server_round: int) -> int:
        """A per-round DP noise seed, never shared with another site or round."""
        base = str(self.noise_seed) if self.noise_seed is not None else self._noise_secret().hex()
        return derive_seed(base, self.name, study_id, server_round, "dp-noise")

    def _noise_secret(self) -> bytes:
        path = self.state_dir / "noise-secret.key"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
            os.replace(tmp, path)
        return path.read_bytes()


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
