"""The collection as its keeper manages it from the browser: add articles, remove one, re-index.

Files are checked (type, size, count, a safe name) and kept in `RAG_LIBRARY_DIR` (indexed with the seeds from then on); indexing is
`rag index`'s own code under its lock, so a build is all or nothing and the previous version keeps
serving until the new one is complete. A removed article's file is moved into `RAG_DATA_DIR/removed-articles`, never deleted.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import InputError
from rag.indexing import IndexReport, build_index
from rag.ingest import SUPPORTED_SUFFIXES
from rag.settings import Settings
from rag.stores import PassageStore

REMOVED = "removed-articles"  # where removed articles' files go, in the data folder (never indexed)
UNSAFE = re.compile(r"[^\w.\- ]+")


@dataclass
class Upload:
    saved: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "name: why", one per file


def safe_name(name: str) -> str:
    """A file name that stays inside the library folder: no directories, no dot-files, plain characters."""
    base = UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip(" .")
    return base or "article"


class Library:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.folder = settings.library_dir

    def check_allowed(self) -> None:
        if not self.settings.library_uploads:
            raise InputError("adding and removing articles is turned off (RAG_LIBRARY_UPLOADS=false)")

    def add(self, files: list[tuple[str, Path]]) -> Upload:
        """Copy uploaded files (original name, where the upload is) into the library folder, each checked."""
        self.check_allowed()
        if len(files) > self.settings.library_max_files:
            raise InputError(f"{len(files)} files at once; the limit is {self.settings.library_max_files} "
                             "(RAG_LIBRARY_MAX_FILES): add them in smaller batches")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        upload = Upload()
        for name, path in files:
            reason = self._refusal(name, path)
            if reason:
                upload.refused.append(f"{Path(name).name}: {reason}")
                continue
            target = self._free_path(safe_name(name))
            shutil.copyfile(path, target)
            upload.saved.append(target)
        return upload

    def _refusal(self, name: str, path: Path) -> str | None:
        if not name.lower().endswith(SUPPORTED_SUFFIXES):
            return "not a .txt, .md, .html or .pdf file"
        size_mb = path.stat().st_size / 1e6
        if size_mb > self.settings.library_max_mb:
            return f"{size_mb:.1f} MB; the limit is {self.settings.library_max_mb:g} MB (RAG_LIBRARY_MAX_MB)"
        return None

    def _free_path(self, name: str) -> Path:
        """`name` in the library folder, numbered when taken: an upload never overwrites an article."""
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, n = self.folder / name, 2
        while candidate.exists():
            candidate, n = self.folder / f"{stem}-{n}{suffix}", n + 1
        return candidate

    def remove(self, doc_id: str, store: PassageStore) -> Path:
        """Move the article's file aside (into the data folder); the next index drops it."""
        self.check_allowed()
        source = store.manifest.sources.get(doc_id)
        if doc_id not in store.documents or not source:
            raise InputError(f"no article {doc_id!r} in the index")
        if not Path(source).is_file():
            raise InputError(f"the file of {doc_id!r} ({source}) is gone already; re-index to drop it")
        aside = self.settings.data_dir / REMOVED
        aside.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = aside / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(source).name}"
        shutil.move(source, target)
        return target

    def reindex(self, embedder, added: list[Path] | None = None, progress: bool = False) -> IndexReport:
        """`rag index`'s build, with the new files; raises IndexLockedError while another build runs."""
        return build_index(self.settings, embedder, extra_paths=added or [], progress=progress)
