"""Recommendations: rating prediction (biased MF, neural CF) and top-K retrieval (two-tower, keras-rs)."""
