"""Hypernetworks that generate client parameters from embeddings: per-tensor heads,
the chunked generator and LoRA adapters. Plain torch modules with no Flower code, in
``common/`` because server strategies and client-side models (HyperFedZero's
classifier generator) both use them."""
