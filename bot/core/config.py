"""One Settings object for the whole product (env prefix POLICYDESK_, optional TOML file)."""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from bot.core.errors import ConfigError

log = logging.getLogger(__name__)
TOML_FILE = Path("policydesk.toml")  # read from the working directory

from bot.core.profile import PROFILE_FILE, KBProfile, load_profile

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Per-file limits of an ingest: a KB file over them is reported and skipped, so one huge file cannot hold the
# ingest lock for minutes. 2M characters is about 2,000 chunks (about a minute of embedding on 2 cores).
DEFAULT_MAX_DOCUMENT_BYTES = 20_000_000
DEFAULT_MAX_DOCUMENT_CHARS = 2_000_000


class Settings(BaseSettings):
    """Every tunable of PolicyDesk, documented; built once and passed to the stages that need it."""

    model_config = SettingsConfigDict(
        env_prefix="POLICYDESK_", env_file=None, toml_file=TOML_FILE, extra="ignore"
    )

    # Where things live
    data_dir: Path = Field(Path(".policydesk"), description="Index, manifest, caches and the SQLite store.")
    kb_dir: Path = Field(PROJECT_ROOT / "kb", description="Knowledge-base folder ingested by default.")
    collection: str = Field("policydesk", description="Chroma collection name.")
    kb_profile: Path | None = Field(
        None, description="KB conventions file (docs/kb-profile.md): heading meanings, regions, priority/queue/link "
        "patterns. Unset = policydesk-profile.toml in kb_dir if present, else defaults for any KB.")
    max_document_bytes: int = Field(
        DEFAULT_MAX_DOCUMENT_BYTES, gt=0, description="KB files larger than this on disk are reported, not ingested."
    )
    max_document_chars: int = Field(
        DEFAULT_MAX_DOCUMENT_CHARS, gt=0, description="KB files whose text is longer are reported, not ingested."
    )

    # Chroma: embedded on disk by default, or a server for several processes / scale-out
    chroma_host: str | None = Field(None, description="Chroma server host; unset = embedded PersistentClient.")
    chroma_port: int = Field(8000, description="Chroma server port.")

    # Embeddings
    embedding_provider: Literal["local", "openai"] = "local"
    embedding_model: str = Field("text-embedding-3-small", description="OpenAI embedding model (provider openai).")
    embedding_batch_size: int = Field(
        8, description="Texts per ONNX run. 8 measured ~12% faster than 32 on 2 cores and peaks ~1 GB lower "
        "(onnxruntime's arena grows with batch x length); see docs/benchmarks.md."
    )

    # Chunking (chosen by measurement on ../shared/corpora; see docs/benchmarks.md)
    chunk_tokens: int = Field(256, description="Maximum tokens per chunk body (cl100k).")
    chunk_overlap_tokens: int = Field(32, description="Overlap when a long block must be split.")
    tokenizer_encoding: str = "cl100k_base"

    # Retrieval
    # (defaults measured on ../shared/corpora: README.md (Benchmarks))
    top_k: int = 6
    fetch_k: int = Field(40, description="Candidates taken from each dense and BM25 search before fusion.")
    fusion: Literal["score", "rrf"] = Field(
        "score", description="score: weighted sum of min-max normalised scores (measured better); "
        "rrf: reciprocal rank."
    )
    rrf_k: int = Field(60, description="Rank constant when fusion = rrf.")
    dense_weight: float = Field(0.3, description="Weight of the dense lists in the fusion.")
    lexical_weight: float = Field(0.7, description="Weight of the BM25 lists in the fusion.")
    adaptive_fusion: bool = Field(
        True, description="Move BM25's fusion weight to the dense list in the share of the question's idf mass its "
        "best chunk lacks (paraphrases); benchmarks/retrieval.py compares it on the corpora's check halves.")
    history_turns: int = Field(
        4, description="Recent user turns that steer a follow-up's search (0 = ignore history)."
    )
    history_weight: float = Field(
        1.5, description="Weight of the history-aware searches relative to the question-only ones."
    )
    near_duplicate_jaccard: float = Field(
        0.6, description="Chunks whose 5-word shingles overlap a better chunk of another document this much are "
        "moved behind the distinct ones (1 = off)."
    )

    # Answering
    composer: Literal["extractive", "chat"] = "extractive"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(None, description="OpenAI-compatible server (Ollama, vLLM, llama.cpp).")
    chat_model: str = "gpt-4o-mini"
    chat_context_window: int = 16000
    chat_max_tokens: int = 600
    chat_temperature: float = 0.0
    chat_connect_timeout_s: float = Field(
        5.0, description="Seconds to open a connection to the chat endpoint before answering extractively."
    )
    chat_read_timeout_s: float = Field(
        60.0, description="Seconds the chat endpoint may stay silent (between bytes of a reply) before the answer "
        "falls back to extractive. A non-streaming reply sends nothing until it is complete, so this also bounds "
        "the whole generation; one request is never retried (docs/models.md)."
    )
    chat_citation_protocol: Literal["auto", "quotes", "markers"] = Field(
        "auto", description="quotes: the model adds an exact quote per cited source (capable models); markers: the "
        "model only names source numbers and the verifier finds the supporting sentence (small local models); "
        "auto: quotes for OpenAI, markers for a local endpoint (openai_base_url set)."
    )
    chat_min_verified_sentences: int = Field(
        1, description="A chat answer with fewer verified sentences than this is replaced by the extractive answer "
        "for the same sources (composer extractive-fallback)."
    )
    send_max_tokens_in_extra_body: bool = Field(
        False, description="For llama.cpp/vLLM servers that ignore max_completion_tokens."
    )
    refusal_threshold: float = Field(
        0.51, description="Minimum answerability score (bot/answer/assess.py: estimated probability that the KB "
        "answers the question) to answer; the highest threshold answering >= 0.93 of the answerable cases of "
        "each eval/suites suite's FIT half (kb_agent, kb_public, kb_typed; benchmarks/answerability_fit.py, "
        "docs/quality.md)."
    )
    refusal_threshold_internal: float | None = Field(
        None, description="Optional separate threshold for agents (audience internal); unset = refusal_threshold."
    )
    caution_threshold: float = Field(
        0.29, description="Agents only: answerability at or above this but below the answer threshold gets outcome "
        "`caution` (closest guidance, marked not confirmed) instead of a refusal; the highest threshold refusing "
        "at most 0.01 of the agents' answerable cases of the suites' FIT halves (benchmarks/answerability_fit.py)."
    )
    answer_max_sentences: int = Field(5, description="Extractive answers: most sentences/items outside a how-to.")
    answer_max_words_internal: int = Field(
        120, description="Extractive agent answers: most words shown outside a numbered procedure (kept whole).")
    answer_max_words_public: int = Field(
        90, description="Extractive public answers: most words shown outside a numbered procedure (kept whole).")
    answer_max_steps: int = Field(12, description="Extractive answers: most numbered steps kept together.")
    answer_embed_units: int = Field(
        0, description="Extractive answers: best units re-ranked by their own MiniLM cosine (about 10 ms each on "
        "2 cores). 0 = units are scored by lexical overlap plus their chunk's cosine, which measured better."
    )

    # Guard rails
    max_question_chars: int = 2000
    max_history_turns: int = 20
    max_history_chars: int = 8000

    # HTTP API
    api_keys: list[SecretStr] = Field(default_factory=list, description="Keys allowed to ask as audience=internal.")
    cors_origins: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8080", "http://localhost:8080"])
    rate_limit_per_minute: int = 60
    rate_limit_shared: bool = Field(
        False, description="Keep rate-limit buckets in the store, so API processes sharing it share one limit per "
        "client (set for replicas; `serve --workers N` sets it)."
    )
    handoff_webhook_url: str | None = None
    max_request_bytes: int = 64_000
    max_header_bytes: int = Field(
        65_536, gt=1024, description="Request line + headers larger than this get 400 and the connection is closed "
        "as soon as the limit is reached (uvicorn's h11 parser; httptools has no limit)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto "
        "are believed (uvicorn forwarded_allow_ips). Empty: the peer address is the client, whatever it sends."
    )

    # Team deployment (docs/deploy.md, docs/console-auth.md)
    database_url: str | None = Field(
        None, description="Store URL, e.g. postgresql+psycopg://user:pw@host/db; unset = the SQLite file in data_dir."
    )
    users_file: Path | None = Field(
        None, description="Console users (roles, argon2 password hashes); unset = <data_dir>/users.json."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init args beat environment variables, which beat policydesk.toml."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def profile(self) -> KBProfile:
        """The KB profile in force (cached per file; the defaults when the KB has none)."""
        return load_profile(self.kb_profile or self.kb_dir / PROFILE_FILE)

    @property
    def chroma_dir(self) -> Path:
        """Folder of the embedded Chroma store."""
        return self.data_dir / "chroma"

    @property
    def db_path(self) -> Path:
        """SQLite file for conversations, feedback, handoffs and the audit log."""
        return self.data_dir / "policydesk.sqlite3"

    @property
    def users_path(self) -> Path:
        """JSON file of console users managed by `policydesk users`."""
        return self.users_file or self.data_dir / "users.json"

_ENV_PREFIX = "POLICYDESK_"


def load_settings(**overrides: Any) -> Settings:
    """Settings from arguments, POLICYDESK_ variables and policydesk.toml; a mistake raises ConfigError naming
    the file or variable and the fix, and unknown keys are warned about (a typo would otherwise be ignored)."""
    _warn_unknown_keys()
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{TOML_FILE.resolve()}: not valid TOML ({exc}); fix that line or move the file away") from exc
    except SettingsError as exc:  # a value pydantic-settings could not even decode (e.g. a list that is not JSON)
        field = _field_in(str(exc))
        raise ConfigError(f"{_source_of(field)}: could not be parsed; lists and objects are written as JSON, "
                          f"e.g. {_ENV_PREFIX}API_KEYS='[\"key1\"]'") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise ConfigError(f"{_source_of(field)}: {first['msg']} (got {first.get('input')!r}); "
                          f"see `{field}` in bot/core/config.py") from exc


def _field_in(message: str) -> str:
    m = re.search(r'field "([^"]+)"', message)
    return m.group(1) if m else ""


def _source_of(field: str) -> str:
    """Where an operator wrote this setting: the variable, the TOML key, or an option."""
    env_name = f"{_ENV_PREFIX}{field.upper()}"
    if any(k.upper() == env_name for k in os.environ):
        return f"environment variable {env_name}"
    if field in _toml_keys():
        return f"{TOML_FILE.resolve()}: key '{field}'"
    return f"setting '{field}'"


def _toml_keys() -> set[str]:
    try:
        with TOML_FILE.open("rb") as fh:
            return set(tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError):
        return set()


def _warn_unknown_keys() -> None:
    known = set(Settings.model_fields)
    for key in sorted(_toml_keys() - known):
        log.warning("%s: unknown setting '%s' is ignored%s", TOML_FILE.resolve(), key, _suggest(key, known))
    for name in sorted(k for k in os.environ if k.upper().startswith(_ENV_PREFIX)):
        key = name[len(_ENV_PREFIX):].lower()
        if key not in known:
            log.warning("environment variable %s is not a PolicyDesk setting and is ignored%s", name,
                        _suggest(key, known))


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory if needed and check it is a writable folder; ConfigError says what to do."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(f"data directory {path} is a file, not a folder: pass --data-dir (or "
                          f"{_ENV_PREFIX}DATA_DIR) a folder") from exc
    except OSError as exc:
        raise ConfigError(f"data directory {path} cannot be created ({exc.strerror}): pass --data-dir (or "
                          f"{_ENV_PREFIX}DATA_DIR) a folder you can write to") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data directory {path} is not writable: fix its permissions or pass --data-dir a "
                          "folder you can write to")
    return path


def describe_os_error(exc: BaseException, data_dir: Path | None = None) -> str | None:
    """One line for an operating-system failure an operator can fix (full disk, permissions), else None;
    data_dir is named when the failure (e.g. from SQLite or Chroma) does not say which file it was."""
    errno_ = getattr(exc, "errno", None)
    where = getattr(exc, "filename", None) or data_dir
    text = str(exc)
    if errno_ == errno.ENOSPC or "disk is full" in text:
        return (f"no space left on the disk{f' writing {where}' if where else ''}: free space there or point "
                f"--data-dir ({_ENV_PREFIX}DATA_DIR) at another disk; the index being served is unchanged")
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly database" in text:
        return (f"permission denied{f' on {where}' if where else ''}: make it writable or point --data-dir "
                "at a folder you can write to")
    return None
