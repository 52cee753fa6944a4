"""Deepfield's domain applications, one package per domain."""
