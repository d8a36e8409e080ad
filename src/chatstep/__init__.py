"""chatstep: OpenAI-style chat completions as reliable, typed, templated pipeline steps."""

__version__ = "0.1.0"
