"""The site's Flower ClientApp: wiring of fedneuro's layers, nothing else."""
