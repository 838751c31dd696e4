"""The coordinator's Flower ServerApp: wiring of fedneuro's layers, nothing else."""
