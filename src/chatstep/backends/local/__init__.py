"""The embedded local model behind the backend interface (private; needs the ``[local]`` extra)."""
