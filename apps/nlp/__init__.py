"""Deepfield NLP: text classification (`apps.nlp.text`, the `nlp` app) and speech recognition
of spoken words and short word sequences (`apps.nlp.speech`, the `speech` app)."""
