"""The service tests' shared server: one real BentoML server for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served import Server, serve


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A started server on loopback over the hand-written run of ``served.py``."""
    with serve(tmp_path_factory.mktemp("service-data")) as started:
        yield started
