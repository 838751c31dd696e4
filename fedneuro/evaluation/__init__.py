"""Evaluation of trained models: metrics with participant-bootstrap intervals, baseline
protocols (centralised, local-only, leave-one-site-out) beside the federated run, reports.

Submodules import numpy, scikit-learn and torch on use; importing this package is cheap.
"""
