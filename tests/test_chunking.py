"""Chunking: heading-aware section paths, token bounds, numbered steps and tables kept whole."""

from pathlib import Path

from bot.core.tokens import count_tokens
from bot.ingest.chunking import Chunker, split_blocks
from bot.ingest.loaders import build_document


def _doc(body: str):
    return build_document(Path("x.md"), {"id": "x", "title": "X"}, body, "md")


def test_section_path_is_kept_and_prepended_to_embedded_text():
    body = "# X\n\n## Refunds\n\n### EU\n\nUsers in the EU get 14 days.\n\n## Other\n\nSomething else.\n"
    chunks = Chunker(256).run(_doc(body), {"title": "X"})
    assert [c.section_path for c in chunks] == [("Refunds", "EU"), ("Other",)]
    assert chunks[0].embed_text.startswith("X > Refunds > EU\n")
    assert chunks[0].text == "Users in the EU get 14 days."


def test_numbered_steps_stay_in_one_chunk_with_their_lead_in():
    steps = "\n".join(f"{i}. Do step number {i} carefully and record it in Switchboard." for i in range(1, 13))
    body = f"# X\n\n## Steps\n\nTo reset 2FA:\n{steps}\n"
    chunks = Chunker(max_tokens=120).run(_doc(body), {"title": "X"})
    assert len(chunks) == 1  # a 12-step list exceeds 120 tokens but fits the structured allowance
    assert chunks[0].text.startswith("To reset 2FA:\n1. Do step")


def test_long_sections_are_split_within_the_token_bound():
    sentences = " ".join(f"Sentence {i} explains one more detail of the refund policy." for i in range(200))
    chunks = Chunker(max_tokens=100).run(_doc(f"# X\n\n## Long\n\n{sentences}\n"), {"title": "X"})
    assert len(chunks) > 5
    assert all(count_tokens(c.text) <= 100 for c in chunks)
    assert all(c.section_path == ("Long",) for c in chunks)


def test_tables_are_blocks():
    body = "# X\n\n## SLA\n\n| Priority | First response |\n|---|---|\n| P1 | 15 minutes |\n| P2 | 2 hours |\n"
    (block,) = split_blocks(body)
    assert block.kind == "table" and block.text.count("\n") == 3


def test_chunk_ids_are_stable_and_change_with_content():
    a = Chunker(256).run(_doc("# X\n\nBody one.\n"), {})
    b = Chunker(256).run(_doc("# X\n\nBody one.\n"), {})
    c = Chunker(256).run(_doc("# X\n\nBody two.\n"), {})
    assert [x.chunk_id for x in a] == [x.chunk_id for x in b]
    assert a[0].chunk_id != c[0].chunk_id
