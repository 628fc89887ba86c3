"""tiktoken that works offline: a verified cache fill from the bundled quicktok ranks when the normal load fails."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import tiktoken

from bot.core.errors import ModelIntegrityError

log = logging.getLogger(__name__)

# quicktok's encoding names for tiktoken's
_QUICKTOK_NAMES = {"cl100k_base": "cl100k_base", "o200k_base": "o200k_base"}


def _bpe_source(encoding: str) -> tuple[str, str]:
    """The (url, expected sha256) tiktoken itself uses for an encoding, read from tiktoken_ext."""
    import tiktoken_ext.openai_public as public

    captured: dict[str, str] = {}

    def capture(url: str, expected_hash: str | None = None):  # stands in for the loader, records its arguments
        captured["url"], captured["hash"] = url, expected_hash or ""
        raise _Captured

    original = public.load_tiktoken_bpe
    public.load_tiktoken_bpe = capture
    try:
        getattr(public, encoding)()
    except _Captured:
        pass
    finally:
        public.load_tiktoken_bpe = original
    return captured["url"], captured["hash"]


class _Captured(Exception):
    pass


def _export_ranks(encoding: str) -> bytes:
    """Serialise quicktok's bundled ranks in tiktoken's file format (base64 token, space, rank)."""
    import quicktok

    enc = quicktok.get_encoding(_QUICKTOK_NAMES[encoding])
    lines = []
    for rank in range(enc.n_vocab):
        if enc.is_special_token(rank):
            continue
        try:
            token = enc.decode_single_token_bytes(rank)
        except Exception:  # noqa: BLE001, S112 - gaps in the rank space (cl100k has a few) are not tokens
            continue
        lines.append(base64.b64encode(token) + b" " + str(rank).encode())
    return b"\n".join(lines) + b"\n"


def fill_cache(encoding: str, cache_dir: Path) -> Path:
    """Write the verified rank file where tiktoken looks for it; raise if the hash does not match."""
    url, expected = _bpe_source(encoding)
    data = _export_ranks(encoding)
    digest = hashlib.sha256(data).hexdigest()
    if expected and digest != expected:
        raise ModelIntegrityError(
            f"Bundled {encoding} ranks do not match tiktoken's pinned sha256 ({digest} != {expected}); "
            "reinstall quicktok-v1 or set TIKTOKEN_CACHE_DIR to a folder with the official file."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    fd, tmp = tempfile.mkstemp(dir=cache_dir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)
    return target


def _default_cache_dir() -> Path:
    return Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """tiktoken.get_encoding, falling back to a verified offline cache fill when the download fails."""
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # noqa: BLE001 - network refused or no DNS: the offline case
        log.info("tiktoken could not load %s (%s); filling its cache from bundled ranks", name, type(exc).__name__)
    cache_dir = _default_cache_dir()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache_dir))  # tiktoken reads only the environment
    fill_cache(name, Path(os.environ["TIKTOKEN_CACHE_DIR"]))
    return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding of a chat model, offline; unknown models count with o200k_base."""
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = "o200k_base"
    return get_encoding(name)


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    """Number of tokens in text."""
    return len(get_encoding(encoding).encode_ordinary(text))
