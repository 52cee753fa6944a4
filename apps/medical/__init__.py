"""Deepfield medical app (see its issue; not built yet)."""
