"""The OpenAI Batch API (private modules; the public names are exported from :mod:`chatstep`)."""
