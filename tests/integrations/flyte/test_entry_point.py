"""flytekit finds chatstep's connectors through the ``flytekit.plugins`` entry point."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points


def test_the_entry_point_names_the_flyte_module() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="flytekit.plugins")}
    assert found.get("chatstep") == "chatstep.integrations.flyte"


def test_importing_flytekit_registers_the_connectors() -> None:
    code = (
        "import flytekit\n"
        "from flytekit.extend.backend.base_connector import ConnectorRegistry\n"
        "print(type(ConnectorRegistry.get_connector('chatstep')).__name__)\n"
        "print(type(ConnectorRegistry.get_connector('chatstep-batch')).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ChatStepConnector", "BatchConnector"]
