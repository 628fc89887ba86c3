"""The offline guarantee: with every non-loopback connection refused, a full ingest + search succeeds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_full_ingest_and_search_offline(fixture_kb_dir, tmp_path):
    """A fresh interpreter with sockets patched to refuse everything but loopback, and an empty tiktoken cache."""
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken"), HF_HUB_OFFLINE="0")
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "offline_driver.py"), str(fixture_kb_dir),
                          str(tmp_path / "data")], check=False, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["added"] == 12 and result["failed"] == {}
    assert result["top"] == "help-coin-refunds"
    assert result["tokens"] == [15339, 1917]
    assert any((tmp_path / "tiktoken").iterdir())  # tiktoken's own download was refused; the verified fill ran
    assert any("openaipublic" in a for a in result["attempts"])  # proof the guard was active and needed


def test_tiktoken_cache_fill_matches_pinned_hash(tmp_path):
    from bot.core.tokens import fill_cache

    path = fill_cache("o200k_base", tmp_path)
    assert path.stat().st_size > 1_000_000


def test_corrupt_model_file_is_refused(tmp_path, monkeypatch):
    from bot.core.errors import ModelIntegrityError
    from bot.ingest import embeddings

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")
    real_tok = embeddings._model_files()[1]
    monkeypatch.setattr(embeddings, "_model_files", lambda: (fake, real_tok))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        embeddings.LocalMiniLMEmbeddings()
