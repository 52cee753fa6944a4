"""Deepfield medical imaging: disease detection from image folders, MedMNIST NPZ and DICOM."""
