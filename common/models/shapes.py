"""Feature-map sizes of the target networks, computed from the input size alone."""

from __future__ import annotations


class ShapeError(ValueError):
    """A model cannot take images of the given size (too small, or not a multiple of
    its patch); raised while its layer sizes are computed, before any weight."""


def conv_out(size: int, kernel: int, padding: int = 0) -> int:
    """Output length of a stride-1 convolution."""
    return size + 2 * padding - kernel + 1


def pooled(size: int) -> int:
    """Output length of a 2×2 max-pool (floor)."""
    return size // 2


def need(size: int, what: str, image: tuple[int, ...]) -> int:
    """``size`` if at least 1, else :class:`ShapeError` naming the layer."""
    if size < 1:
        h, w = image
        raise ShapeError(f"{h}×{w} images leave nothing after {what}")
    return size
