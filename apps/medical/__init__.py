"""Deepfield medical imaging app: disease detection from image folders, NPZ arrays (MedMNIST)
and DICOM, with calibration, an operating point and Grad-CAM."""
