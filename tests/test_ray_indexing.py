"""`rag index --ray` on a small local Ray: the same passages and vectors as a plain `rag index`, the same
manifest facts, and failures as one line with the index in service untouched."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import SEEDS_DIR, settings_for_test
from rag.errors import RagError
from rag.indexing import build_index
from rag.ray_indexing import LOCAL, RayEmbedder, ray_cluster
from rag.store import IndexStore, served_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PRINTED = ROOT / "eval" / "collections" / "printed-pdf" / "docs"  # the smallest development collection (`make collections`)
SAME_FACTS = ("embedding_model", "dimension", "chunker", "documents", "index_type", "sentence_vectors", "n_chunks",
              "n_sentences", "chunk_counts", "sources")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One small local Ray for the module. Ray writes an auth token under the home folder: a temporary one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        with ray_cluster(LOCAL):  # removes its logs when it stops
            yield


def ray_build(settings, onnx_from: Path | None = None):
    if onnx_from is not None:  # the model's ONNX export, already made and checked: not made again
        shutil.copytree(onnx_from, settings.index_dir / "onnx")
    return build_index(settings, RayEmbedder(settings))


def assert_same_index(plain_dir: Path, ray_dir: Path) -> None:
    plain, ray = IndexStore.load(plain_dir), IndexStore.load(ray_dir)
    assert [c.chunk_id for c in ray.chunks] == [c.chunk_id for c in plain.chunks]
    for name in SAME_FACTS:
        assert getattr(ray.manifest, name) == getattr(plain.manifest, name), name
    for mine, theirs in ((ray.vectors, plain.vectors), (ray.sentence_vectors, plain.sentence_vectors)):
        cosine = np.sum(np.asarray(mine) * np.asarray(theirs), axis=1)
        assert cosine.min() >= 0.9999, cosine.min()
    np.testing.assert_array_equal(np.asarray(ray.sentence_owner), np.asarray(plain.sentence_owner))


@pytest.fixture(scope="module")
def seeds_on_ray(local_ray, tmp_path_factory):
    settings = settings_for_test(index_dir=tmp_path_factory.mktemp("ray-seeds") / "index", seeds_dir=SEEDS_DIR)
    ray_build(settings)
    return settings


def test_seeds_on_ray_equal_a_plain_index(seed_index, seeds_on_ray):
    """The plain index embedded with sentence-transformers, the Ray one with the ONNX export `rag index` makes."""
    assert_same_index(seed_index.index_dir, seeds_on_ray.index_dir)


def descends_from_us(pid: int) -> bool:
    """The process was started under this test process (our local Ray), not anyone else's."""
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == os.getpid():
            return True
    return False


def actor_processes() -> list[int]:
    """Processes whose title Ray set to one of our embedding actors'."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"MapBatches(_EmbedPassages)" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile
    return found


def kill_one_actor_mid_job(killed: list[int], stop: threading.Event) -> None:
    """Once an embedding actor of ours is up and working, kill it (SIGKILL), once."""
    while not stop.is_set():
        ours = [pid for pid in actor_processes() if descends_from_us(pid)]
        if ours:
            stop.wait(5)  # the model loaded, a batch under way
            os.kill(ours[0], signal.SIGKILL)
            killed.append(ours[0])
            return
        stop.wait(0.5)


def test_a_development_collection_on_ray_equals_a_plain_index_even_with_an_actor_killed(seeds_on_ray, tmp_path, embedder):
    if not PRINTED.is_dir():
        pytest.fail(f"{PRINTED} is missing: run `make collections` (`make test` does)")
    plain = settings_for_test(index_dir=tmp_path / "plain", seeds_dir=PRINTED)
    build_index(plain, embedder)
    on_ray = settings_for_test(index_dir=tmp_path / "ray", seeds_dir=PRINTED)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=kill_one_actor_mid_job, args=(killed, stop))
    killer.start()
    try:
        report = ray_build(on_ray, onnx_from=seeds_on_ray.index_dir / "onnx")
    finally:
        stop.set()
        killer.join()
    assert killed, "no embedding actor was seen to kill"
    assert report.embedded_chunks > 100
    assert_same_index(plain.index_dir, on_ray.index_dir)  # Ray restarted the actor and ran its batch again


def test_ray_writes_to_qdrant_as_a_plain_index_does(seeds_on_ray, tmp_path):
    from rag.stores import load_store

    settings = settings_for_test(store="qdrant", qdrant_path=tmp_path / "qdrant", index_dir=tmp_path / "index", seeds_dir=SEEDS_DIR)
    ray_build(settings, onnx_from=seeds_on_ray.index_dir / "onnx")
    store, plain = load_store(settings), IndexStore.load(seeds_on_ray.index_dir)
    assert store.chunks == plain.chunks
    first = plain.chunks[0].chunk_id
    assert float(store.sentence_vectors_of(first).ravel() @ plain.sentence_vectors_of(first).ravel()) > 0


def test_a_failing_ray_job_leaves_the_index_in_service(seeds_on_ray, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(seeds_on_ray.index_dir, index_dir)
    before = served_version(index_dir)
    broken = settings_for_test(index_dir=index_dir, seeds_dir=SEEDS_DIR, embedding_batch_size=0)  # every batch fails in the actors
    with pytest.raises(RagError, match="embedding on Ray failed.*index in service is unchanged"):
        build_index(broken, RayEmbedder(broken), rebuild=True)
    assert served_version(index_dir) == before
    assert not list(index_dir.glob(".building-*"))


def test_an_unreachable_cluster_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RagError, match=f"cannot join the Ray cluster at '127.0.0.1:{port}'"):
        with ray_cluster(f"127.0.0.1:{port}"):
            pass


def test_rag_index_with_a_bad_ray_address_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(Path(sys.executable).with_name("rag")), "index", "--index", str(tmp_path / "index"),
                             "--ray-address", address], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot join the Ray cluster at '{address}'")


def test_without_ray_installed_the_fix_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RagError, match=r"pip install 'ray\[data\]"):
        with ray_cluster(LOCAL):
            pass
