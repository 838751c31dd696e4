"""Federation layer: the wire codec, strategies, the coordinator's round loop."""
