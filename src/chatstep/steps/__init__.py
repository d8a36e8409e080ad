"""What a step is: definitions (pydantic, extra="forbid"), fields, messages, tools, loading.

Implementation modules are private; the public names are exported from :mod:`chatstep`.
"""
