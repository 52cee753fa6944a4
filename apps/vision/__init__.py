"""Deepfield vision app (see its issue; not built yet)."""
