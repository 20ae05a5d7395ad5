"""The Compose file (deploy/compose/), read by the Compose implementations installable here.

- `docker-compose config -q` (v1, 1.29 on Debian 12) accepts it with the variables of env.example filled in, and
  `docker compose config -q` (v2, the Compose specification) too where that plugin is installed;
- without the required secrets both refuse, naming the variable (the check can fail, and a forgotten .env stops
  the start instead of running with empty passwords);
- from the configuration the tool resolved: every long-running service has a healthcheck, the one-shot jobs none;
  the start order waits on health (PostgreSQL, Redis) and on the migration's success; the Paygate health checks
  speak TLS with files of the mounted `paygate certs dev` layout; command lines parse with the real `paygate`
  parser; the build points at deploy/docker/Dockerfile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.cli import build_parser
from stack.dev_certs import LEAVES
from tests.deploy.deploy_support import DEPLOY_DIR, DOCKERFILE, HEALTHCHECK_COMMAND, healthcheck_module, tool

COMPOSE_DIR = DEPLOY_DIR / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ONE_SHOT = {"migrate", "reconcile"}
PAYGATE_TLS_MOUNT = "/etc/paygate/tls"
PLACEHOLDERS = {
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "PAYGATE_MASTER_KEY": "placeholder-not-a-fernet-key",
    "GRAFANA_ADMIN_PASSWORD": "placeholder",
    "PAYGATE_NOTIFY_BASE_URL": "https://pay-callbacks.example.com",
}


def _env_file(directory: Path, *, fill: bool) -> Path:
    """env.example as an operator copies it: the required values filled in (or left empty)."""
    lines = []
    for line in (COMPOSE_DIR / "env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={PLACEHOLDERS[name]}" if fill and line == f"{name}=" and name in PLACEHOLDERS else line)
    path = directory / "compose.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _v1() -> list[str]:
    return [tool("docker-compose")]


def _v2() -> list[str]:
    docker = shutil.which("docker")
    found = docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False, timeout=60)
    if not found or found.returncode != 0:
        pytest.skip("the `docker compose` (v2) plugin is not installed here; docker-compose v1 checked the file")
    return [str(docker), "compose"]


def _config(command: list[str], env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: a variable of the caller's shell must not stand in for one that env.example lacks.
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG"}}
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=COMPOSE_DIR,
        env=env,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The configuration as docker-compose v1 resolved it (interpolated, normalised)."""
    result = _config(_v1(), _env_file(tmp_path_factory.mktemp("compose"), fill=True))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("implementation", [_v1, _v2], ids=["docker-compose-v1", "docker-compose-v2"])
def test_compose_accepts_the_file(implementation: Callable[[], list[str]], tmp_path: Path) -> None:
    result = _config(implementation(), _env_file(tmp_path, fill=True), "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("implementation", [_v1, _v2], ids=["docker-compose-v1", "docker-compose-v2"])
def test_a_missing_secret_stops_compose_naming_it(implementation: Callable[[], list[str]], tmp_path: Path) -> None:
    result = _config(implementation(), _env_file(tmp_path, fill=False), "-q")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/compose/.env" in result.stderr


def _healthcheck_disabled(healthcheck: dict[str, Any] | None) -> bool:
    # v1 writes a disabled check as test: [NONE]; the Compose specification as disable: true.
    return healthcheck is not None and (healthcheck.get("disable") is True or healthcheck.get("test") == ["NONE"])


def test_long_running_services_have_healthchecks_and_jobs_none(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert {"postgres", "redis", "migrate", "worker-1", "worker-2", "gateway", "notify-edge"} <= set(services)
    for name, service in services.items():
        healthcheck = service.get("healthcheck")
        if name in ONE_SHOT:
            assert _healthcheck_disabled(healthcheck), name
        else:
            assert (
                healthcheck
                and not _healthcheck_disabled(healthcheck)
                and healthcheck["test"][0]
                in {
                    "CMD",
                    "CMD-SHELL",
                }
            ), name


def _waits_for(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_the_start_order_waits_for_health_and_the_migration(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert _waits_for(services["migrate"]) == {"postgres": "service_healthy"}
    for name in ("worker-1", "worker-2", "gateway"):
        assert _waits_for(services[name])["migrate"] == "service_completed_successfully", name
        assert _waits_for(services[name])["redis"] == "service_healthy", name
    assert _waits_for(services["notify-edge"])["migrate"] == "service_completed_successfully"
    for name, service in services.items():
        for dependency, condition in _waits_for(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s missing healthcheck"


def test_paygate_health_checks_speak_tls_with_the_mounted_files(resolved: dict[str, Any]) -> None:
    parser = healthcheck_module().build_parser()
    dev_files = {f"{leaf.name}.{suffix}" for leaf in LEAVES for suffix in ("pem", "key")}
    dev_files |= {"ca.pem", "internal-ca.pem"}
    checked = set()
    for name, service in resolved["services"].items():
        test = service.get("healthcheck", {}).get("test", [])
        if HEALTHCHECK_COMMAND not in test:
            continue
        args = parser.parse_args(test[test.index(HEALTHCHECK_COMMAND) + 1 :])
        assert args.ca, f"{name}: production mode serves only TLS"
        mounts = {volume["target"] for volume in service["volumes"]}
        for path in filter(None, (args.ca, args.cert, args.key)):
            directory, _, file_name = path.rpartition("/")
            assert directory == PAYGATE_TLS_MOUNT and directory in mounts, f"{name}: {path}"
            assert file_name in dev_files, f"{name}: `paygate certs dev` writes no {file_name}"
        checked.add(name)
    assert checked == {"worker-1", "worker-2", "gateway"}


def test_commands_parse_and_the_build_uses_the_dockerfile(resolved: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in resolved["services"].items():
        if "build" not in service:
            continue
        build = service["build"]
        assert (Path(build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name
        if "command" in service:
            parser.parse_args(service["command"])  # argparse exits (SystemExit) on an unknown flag
    assert resolved["services"]["reconcile"]["entrypoint"] == ["paygate", "reconcile"]
