"""The ClientApp: local training on private data, replies with deltas."""
