"""Spoken-word recognition (keyword spotting) from audio files, with librosa features."""
