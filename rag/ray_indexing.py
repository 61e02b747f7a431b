"""Embedding on Ray: `rag index --ray [ADDRESS]`.

Reading and chunking stay on this machine (they are cheap next to embedding); the passages and
their answer units are embedded in Ray Data by a pool of actors, each loading the same model files
and ONNX export as `rag index` (`rag.embedding.Embedder`), so the vectors are the same. Every
vector comes back before anything is written: a worker that dies is retried by Ray, and a job that
fails anyway fails the build with the index in service untouched. The rest of the build (the
manifest, writing to the configured store) is `rag.indexing`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator

import numpy as np

from rag.embedding import Embedder, Units
from rag.errors import RagError
from rag.settings import Settings

log = logging.getLogger(__name__)

LOCAL = "local"  # `--ray` without an address: a small Ray on this machine, for this build only
LOCAL_CPUS = 2
LOCAL_OBJECT_STORE = 200 * 1024**2


class RayEmbedder(Embedder):
    """An `Embedder` whose passages are embedded on Ray; queries, the tokenizer and the ONNX export stay local."""

    def __init__(self, settings: Settings):
        super().__init__(settings.embedding_model, settings.embedding_batch_size,
                         onnx_cache=settings.index_dir / "onnx", runtime=settings.embedding_runtime,
                         index_precision=settings.index_precision)
        self.actors, self.actor_cpus, self.rows_per_task = settings.ray_actors, settings.ray_actor_cpus, settings.ray_batch_size

    @property
    def prepares_large_builds(self) -> bool:
        return False  # its actors load their own models

    def encode_passages(self, texts: list[str], units: list[Units], progress: bool = False,
                        pooled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return super().encode_passages(texts, units, progress, pooled)
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = progress
        rows = [{"row": i, "text": t, "heading_end": u.heading_end, "spans": json.dumps(u.spans)} for i, (t, u) in enumerate(zip(texts, units))]
        embedded = ray.data.from_items(rows).map_batches(
            _EmbedPassages,
            fn_constructor_kwargs={"model": self.model_name, "batch_size": self.batch_size, "onnx_cache": self.onnx_cache,
                                   "runtime": self.runtime, "index_precision": self.index_precision, "pooled": pooled},
            batch_size=self.rows_per_task,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.actor_cpus,  # Ray Data restarts a dead actor and retries its batch (max_restarts=-1 by default)
        )
        try:
            done = sorted(embedded.take_all(), key=lambda r: r["row"])
        except Exception as exc:  # noqa: BLE001 - Ray wraps the cause in many kinds; none is the user's to read as a traceback
            raise RagError(f"embedding on Ray failed ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}); "
                           "nothing was written and the index in service is unchanged: run `rag index --ray` again") from exc
        dimension = len(done[0]["vector"])
        passages = np.stack([np.asarray(r["vector"], dtype=np.float32) for r in done])
        unit_vectors = np.frombuffer(b"".join(r["units"] for r in done), dtype=np.float32).reshape(-1, dimension)
        return passages, unit_vectors


class _EmbedPassages:
    """A Ray actor: one embedding model, loaded once, embedding batches of passages with their units."""

    def __init__(self, model: str, batch_size: int, onnx_cache, runtime: str, index_precision: str, pooled: bool):
        self.embedder = Embedder(model, batch_size, onnx_cache=onnx_cache, runtime=runtime, index_precision=index_precision)
        self.pooled = pooled

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        units = [Units(int(end), [tuple(s) for s in json.loads(spans)]) for end, spans in zip(batch["heading_end"], batch["spans"])]
        passages, unit_vectors = self.embedder.encode_passages(list(batch["text"]), units, pooled=self.pooled)
        bounds = np.cumsum([0] + [len(u.spans) for u in units])
        per_row = [unit_vectors[bounds[i] : bounds[i + 1]].astype(np.float32).tobytes() for i in range(len(units))]
        return {"row": batch["row"], "vector": passages, "units": np.array(per_row, dtype=object)}


@contextlib.contextmanager
def ray_cluster(address: str) -> Iterator[None]:
    """Join the cluster at `address`, or with `LOCAL` start a small one here and shut it down after.
    A Ray already started in this process is used as it is."""
    try:
        import ray
    except ImportError:
        raise RagError("`rag index --ray` needs Ray: pip install 'ray[data]>=2.60'") from None
    if address != LOCAL:
        _check_reachable(address)
    if ray.is_initialized():
        yield
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # read when ray.data is imported
    logs = tempfile.mkdtemp(prefix="rag-ray-") if address == LOCAL else None
    try:
        if logs:
            ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE, _temp_dir=logs, **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as exc:  # noqa: BLE001 - a bad address or a cluster that does not answer: the same fix
        raise RagError(_cannot_join(address, exc.__class__.__name__)) from None
    try:
        yield
    except BaseException:
        if logs:
            log.warning("the local Ray's logs are kept in %s", logs)
        logs = None
        raise
    finally:
        ray.shutdown()
        if logs:  # a Ray started for one build leaves nothing behind
            shutil.rmtree(logs, ignore_errors=True)


def _check_reachable(address: str) -> None:
    """A cluster's host:port answers, checked first: Ray itself waits minutes for a wrong one."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if not match:
        return  # `auto` and the like: Ray looks the cluster up itself, and fails fast
    try:
        socket.create_connection((match[1], int(match[2])), timeout=5).close()
    except OSError as exc:
        raise RagError(_cannot_join(address, exc.__class__.__name__)) from None


def _cannot_join(address: str, cause: str) -> str:
    return (f"cannot join the Ray cluster at {address!r} ({cause}); give the head node's address "
            "(ray://HEAD:10001, HEAD:6379, or auto on a cluster node), or `--ray` alone for a local Ray")
