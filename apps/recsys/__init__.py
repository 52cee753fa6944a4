"""Deepfield recsys app (see its issue; not built yet)."""
