"""The Chroma side of the index: our embedding function, the client, and one owner per embedded store.

Two processes that each open a PersistentClient on one folder corrupt each other's view (a reader's segment
cache stops matching the files, and every query fails with "Error finding id" until a restart; chroma issue
7040 can also hang them). So the process that opens an embedded store owns it, by holding an exclusive lock
(owner.lock in the data directory) for as long as it lives; another process is refused with a message that says
what to do. With a Chroma server (POLICYDESK_CHROMA_HOST) the server owns the vectors and any number of
processes may read and ingest.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from bot.core.config import Settings
from bot.core.errors import IndexUnavailableError


def register_chroma_ef():
    """A Chroma embedding function that wraps ours, registered so reopening a collection never needs Chroma's."""
    from chromadb.api.types import Documents, EmbeddingFunction
    from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

    if "policydesk" in known_embedding_functions:
        return known_embedding_functions["policydesk"]

    class PolicyDeskEF(EmbeddingFunction[Documents]):
        """Delegates to the configured LangChain Embeddings; built lazily."""

        def __init__(self, embedder=None, embedder_name: str = ""):
            self._embedder = embedder
            self._name = embedder_name

        def __call__(self, input: Documents):
            if self._embedder is None:
                raise IndexUnavailableError("This collection is queried with precomputed PolicyDesk vectors only.")
            return [np.asarray(v, dtype=np.float32) for v in self._embedder.embed_documents(list(input))]

        @staticmethod
        def name() -> str:
            return "policydesk"

        def get_config(self) -> dict[str, Any]:
            return {"embedder": self._name}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> PolicyDeskEF:
            return PolicyDeskEF(None, config.get("embedder", ""))

        def default_space(self):
            return "cosine"

    register_embedding_function(PolicyDeskEF)
    return PolicyDeskEF


def open_chroma(settings: Settings):
    """A Chroma client: HttpClient when a server is configured, else a PersistentClient under the data dir
    (whose caller must own the store first: claim_embedded_store)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_host:
        try:
            return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
        except Exception as exc:
            raise IndexUnavailableError(
                f"Chroma server at {settings.chroma_host}:{settings.chroma_port} is not reachable ({exc}). "
                "Start it with `uv run chroma run --path DIR --host 127.0.0.1 --port PORT` or unset "
                "POLICYDESK_CHROMA_HOST to use the embedded store."
            ) from exc
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


def claim_embedded_store(data_dir: Path) -> FileLock:
    """Make this process the owner of the embedded store under data_dir, or raise IndexUnavailableError naming
    the process that owns it. Re-entrant within one process (one lock object per path); ownership lasts while
    the returned lock is referenced, so keep it as long as the client."""
    # thread_local=False: the console (Streamlit script threads) and the API worker threads share the ownership
    lock = FileLock(str(data_dir / "owner.lock"), is_singleton=True, thread_local=False)
    if lock.is_locked:
        return lock
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise IndexUnavailableError(
            f"The index in {data_dir} is owned by another process ({_owner_of(data_dir)}). Re-sync through it "
            "(the console's Re-sync button, or restart `policydesk serve` after stopping it), stop it before "
            "`policydesk ingest`, or run a Chroma server (POLICYDESK_CHROMA_HOST) so several processes can share "
            "the index."
        ) from exc
    (data_dir / "owner.json").write_text(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:300]}))
    return lock


def _owner_of(data_dir: Path) -> str:
    try:
        owner = json.loads((data_dir / "owner.json").read_text())
        return f"pid {owner['pid']}: {owner['command']}"
    except (OSError, ValueError, KeyError):
        return "unknown pid"
