"""Pieces that two or more Deepfield apps use: config, runs, training, evaluation, scoring, IO."""
