"""Recommendations: rating prediction (MF, neural CF), top-K retrieval (two-tower, keras-rs)."""
