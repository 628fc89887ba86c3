"""Run a full ingest + search in a fresh interpreter with every non-loopback connection refused.

Usage: python offline_driver.py KB_DIR DATA_DIR   (prints a JSON line with what happened)
"""

import json
import socket
import sys

ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect


def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or str(host).startswith("127.") or host in ("localhost", "::1"):
        return _real_connect(self, address)
    ATTEMPTS.append(str(address))
    raise ConnectionRefusedError(f"network disabled: {address}")


socket.socket.connect = _guarded
_real_getaddrinfo = socket.getaddrinfo


def _no_dns(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        ATTEMPTS.append(f"dns:{host}")
        raise socket.gaierror(f"name resolution disabled: {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _no_dns


def main() -> None:
    """Ingest the KB, search it, and report results and refused connection attempts."""
    from pathlib import Path

    from bot.core.config import Settings
    from bot.core.models import Audience, Filters
    from bot.core.tokens import get_encoding
    from bot.ingest.index import KnowledgeIndex
    from bot.search.retrieval import HybridSearcher

    kb, data = Path(sys.argv[1]), Path(sys.argv[2])
    index = KnowledgeIndex(Settings(data_dir=data, kb_dir=kb))
    report = index.sync()
    results = HybridSearcher(index).search("refund unused coins", Filters(audience=Audience.PUBLIC), k=3)
    print(json.dumps({"added": len(report.added), "failed": report.failed,
                      "top": results[0].chunk.doc_id if results else None,
                      "tokens": get_encoding("cl100k_base").encode("hello world"), "attempts": ATTEMPTS}))


if __name__ == "__main__":
    main()
