"""Backends: the OpenAI-compatible HTTP endpoint and the embedded local model."""
