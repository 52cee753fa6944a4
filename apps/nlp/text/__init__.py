"""Deepfield text classification: sentiment and topics from raw text (apps.nlp.text)."""
