"""Artifacts on disk: folder layout and atomic publishing (layout), the typed manifest, the one way in (open)."""
