"""Fraud detection and credit risk on tables: networks, baselines and cost-based thresholds."""
