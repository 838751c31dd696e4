"""Governance: what a site allows (its configuration, consent gate); no torch here."""
