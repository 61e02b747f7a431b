"""Shared fixtures: no network beyond the loopback, and the heavy things (model, seed index) built once."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

# Before anything imports sentence-transformers / huggingface_hub: never ask the hub for files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = ROOT / "seeds"
GOLDEN_PATH = ROOT / "eval" / "golden.jsonl"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class NetworkBlocked(RuntimeError):
    """A test tried to reach a host other than the loopback."""


def _check_address(family: int, address) -> None:
    if family == getattr(socket, "AF_UNIX", None):
        return  # a local socket file, not the network
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host not in LOCAL_HOSTS:
        raise NetworkBlocked(f"network access to {address!r} is blocked in tests; only {sorted(LOCAL_HOSTS)}")


@pytest.fixture(autouse=True)
def block_network(monkeypatch):
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def connect(self, address):
        _check_address(self.family, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check_address(self.family, address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        _check_address(socket.AF_INET, address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)


def settings_for_test(**values):
    """Settings for a test: explicit paths, no stray `.env` from the working directory."""
    from rag.settings import Settings

    return Settings(_env_file=None, **values)


@pytest.fixture
def make_settings():
    return settings_for_test


@pytest.fixture
def seeds_copy(tmp_path) -> Path:
    """A private copy of the seed articles, free to edit."""
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS_DIR, folder)
    return folder


@pytest.fixture
def index_copy(tmp_path, seed_index) -> Path:
    """A private copy of the built seed index folder, free to damage."""
    folder = tmp_path / "index"
    shutil.copytree(seed_index.index_dir, folder)
    return folder


@pytest.fixture(scope="session")
def embedder():
    from rag.embedding import Embedder

    model = Embedder()
    _ = model.model  # load now, once for the whole session
    return model


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory, embedder):
    """Settings whose index_dir holds an index of the five seed articles, built once."""
    from rag.indexing import build_index

    settings = settings_for_test(index_dir=tmp_path_factory.mktemp("seed-index") / "index", seeds_dir=SEEDS_DIR)
    build_index(settings, embedder)
    return settings


@pytest.fixture(scope="session")
def pipeline(seed_index, embedder):
    from rag.factory import build_pipeline

    return build_pipeline(seed_index, embedder=embedder)  # the session's model, not another
