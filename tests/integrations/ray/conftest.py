"""A Ray cluster of three nodes on loopback, a redis-server, and the project's test server.

Ray must never listen beyond 127.0.0.1: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps the
cluster utility from rewriting 127.0.0.1 to the host's address. Each node has one CPU and a
small object store; chatstep's tasks ask for 0.25 CPU, so Ray's own tasks still get one.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported

import socket
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "chatstep[ray]")')

from ray.cluster_utils import Cluster  # noqa: E402

from chatstep.testing import TestServer  # noqa: E402

FAKE_KEY = "sk-test-ray-0000-fake"
_NODE: dict[str, Any] = {
    "num_cpus": 1,
    "node_ip_address": "127.0.0.1",
    "object_store_memory": 80 * 1024 * 1024,
}


@pytest.fixture(scope="session")
def default_server() -> Iterator[TestServer]:
    """The server of steps that name no base_url (the README's): workers read OPENAI_* from
    their environment, as on a real cluster, so it runs before the cluster starts."""
    with TestServer() as server:
        yield server


_NODE_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATSTEP_HISTORY")


@pytest.fixture(scope="session")
def cluster(default_server: TestServer) -> Iterator[Cluster]:
    # The nodes (and the workers they start) keep the environment they were started with:
    # set it for them only, and give the rest of the session its own back at once. Other
    # tests' servers are named by their steps' base_url.
    node_env = {
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": default_server.base_url,
        "CHATSTEP_HISTORY": "off",
    }
    saved = {name: os.environ.get(name) for name in _NODE_ENV}
    os.environ.update(node_env)
    try:
        nodes = Cluster(
            initialize_head=True,
            head_node_args={**_NODE, "include_dashboard": False},
        )
        for _ in range(2):
            nodes.add_node(**_NODE)
        nodes.wait_for_nodes()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        ray.init(address=nodes.address, namespace="chatstep", log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture
def ray_env(cluster: Cluster, default_server: TestServer) -> dict[str, str]:
    """The environment of a ``chatstep map --engine ray`` subprocess on the test cluster."""
    return {
        **os.environ,
        "RAY_ADDRESS": cluster.address,
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": default_server.base_url,
        "CHATSTEP_HISTORY": "off",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
