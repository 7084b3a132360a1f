"""Methods defined outside the package, loaded through the ``plugins`` key."""
