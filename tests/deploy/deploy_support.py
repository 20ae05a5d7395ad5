"""Shared by the deployment-file tests: where the files are, the tools that read them, the image's facts."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import REPO_ROOT

DEPLOY_DIR = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY_DIR / "docker" / "Dockerfile"
HEALTHCHECK_SCRIPT = DEPLOY_DIR / "docker" / "grpc_health_check.py"
# Where the Dockerfile installs the health-check script (`COPY ... /usr/local/bin/paygate-healthcheck`).
HEALTHCHECK_COMMAND = "paygate-healthcheck"


def tool(name: str) -> str:
    """The path of a command-line tool: on PATH, or beside this interpreter (the venv's hadolint); else skip."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f'{name} is not installed here (deploy/README.md, "What the tests check, and what they cannot")')
    return found


def healthcheck_module() -> ModuleType:
    """deploy/docker/grpc_health_check.py as a module (it is a script in the image, not a package)."""
    spec = importlib.util.spec_from_file_location("paygate_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dockerfile_stages() -> dict[str, list[str]]:
    """The Dockerfile's instructions per stage name (continuation lines joined, comments dropped)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line.removesuffix(chr(92)).strip()}".strip()
        if line.endswith(chr(92)):
            continue
        if pending.upper().startswith("FROM "):
            match = re.search(r"\sAS\s+(\S+)$", pending, re.IGNORECASE)
            current = stages.setdefault(match.group(1) if match else str(len(stages)), [])
        current.append(pending)
        pending = ""
    return stages


def image_user_id() -> int:
    """The numeric uid the runtime stage runs as (`USER uid:gid`)."""
    users = [line.split()[1] for line in dockerfile_stages()["runtime"] if line.upper().startswith("USER ")]
    assert len(users) == 1, users
    return int(users[0].split(":")[0])


def image_exposed_ports() -> set[int]:
    lines = [line for line in dockerfile_stages()["runtime"] if line.upper().startswith("EXPOSE ")]
    return {int(port.split("/")[0]) for line in lines for port in line.split()[1:]}
