"""Fraud detection on card transactions: supervised network, autoencoder, baselines, cost-based thresholds."""
