"""Hypernetworks that generate client parameters from embeddings."""
