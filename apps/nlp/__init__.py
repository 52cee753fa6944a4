"""Deepfield nlp app (see its issue; not built yet)."""
