"""Deepfield vision app: image classification from folders, IDX, NPZ or CSV manifests."""
