from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from paygate.client import PaygateClient
from tests.support import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One real `paygate serve --workers 3` (SQLite + private Redis) shared by the e2e tests."""
    running = start_stack(Path(tmp_path_factory.mktemp("stack")), workers=3)
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


@pytest.fixture(scope="session")
def credentials(stack: Stack) -> tuple[str, str]:
    return stack.create_key("e2e-tests")


@pytest.fixture
def client(stack: Stack, credentials: tuple[str, str]) -> Iterator[PaygateClient]:
    key_id, secret = credentials
    with stack.client(key_id, secret) as signed:
        yield signed
