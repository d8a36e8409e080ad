"""What a step is: definitions (pydantic, extra="forbid"), fields, messages, tools, loading.

Implementation modules are private; the public names are exported from :mod:`chatstep`.
"""

# Loaded first, so that ``steps.completion`` (a StepBase subclass that ``definitions`` imports
# back for the ``Step`` union) is always imported from a fully defined ``definitions``.
from chatstep.steps import definitions as _definitions  # noqa: F401
