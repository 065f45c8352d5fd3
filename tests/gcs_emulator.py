"""A real Google Cloud Storage emulator for tests: gcp-storage-emulator, in memory, on 127.0.0.1.

A pytest plugin (conftest.py registers it), so a test takes the fixture by name:

    def test_something(gcs_emulator):
        gcs.upload_bytes(b"x", f"gs://{gcs_emulator.bucket}/a")

The fixture starts a fresh server per test (a thread in this process, so subprocesses reach it too) with one empty
bucket, and sets STORAGE_EMULATOR_HOST for that test only: google-cloud-storage then sends every request there,
anonymously. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from typing import Iterator

import pytest

HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Emulator:
    """A running emulator: its endpoint (the STORAGE_EMULATOR_HOST value) and its one bucket."""

    endpoint: str
    bucket: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_emulator(bucket: str = "b") -> Iterator[Emulator]:
    """Runs an in-memory emulator holding one empty bucket until the block ends."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server(HOST, port, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        yield Emulator(endpoint=f"http://{HOST}:{port}", bucket=bucket)
    finally:
        server.stop()


@pytest.fixture
def gcs_emulator(monkeypatch) -> Iterator[Emulator]:
    """An emulator with bucket `b`, and STORAGE_EMULATOR_HOST pointing at it for this test."""
    with running_emulator() as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
        yield emulator
