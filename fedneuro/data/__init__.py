"""Data layer: synthetic sites, BIDS reading, harmonisation to a model's input contract, splits."""
