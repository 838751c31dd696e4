"""fedneuro: federated, privacy-preserving fine-tuning of neuroscience foundation models.

Importing the package is cheap on purpose: heavy libraries (torch, braindecode, mne, flwr)
are imported by the modules that need them, never here.
"""

__version__ = "0.1.0"
