"""Render the Markdown sources in kb/_src/ to kb/formats/ as HTML, PDF and DOCX.

Run from the repository root:

    uv run python kb/_src/build_formats.py

Each source is plain Markdown WITHOUT front matter (kb/_src/ is ignored by ingest, so the
sources never duplicate ids in kb/ proper). The document metadata lives in DOCS below and is
written next to every generated file as ``kb/formats/<file name>.meta.yaml`` with the same
fields as the YAML front matter of the Markdown documents.

Supported Markdown subset: ``#``/``##``/``###`` headings, paragraphs, numbered lists
(``1.``), bullet lists (``-``), pipe tables, and inline ``**bold**``, ```code``` and
``[text](kb:doc-id)`` links.
"""

from __future__ import annotations

import html
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from docx import Document
from docx.shared import Pt
from fpdf import FPDF

SRC_DIR = Path(__file__).resolve().parent
KB_DIR = SRC_DIR.parent
OUT_DIR = KB_DIR / "formats"

# Front-matter fields, in the same order as the Markdown documents.
FIELDS = [
    "id",
    "title",
    "type",
    "audience",
    "regions",
    "products",
    "version",
    "effective_date",
    "owner",
    "last_reviewed",
    "review_every_days",
    "url",
]

DOCS = [
    {
        "source": "help-coin-packs.md",
        "format": "html",
        "meta": {
            "id": "help-coin-packs",
            "title": "Coin packs and prices",
            "type": "help_article",
            "audience": "public",
            "regions": ["global"],
            "products": ["coins", "live"],
            "version": "2.0",
            "effective_date": "2026-07-01",
            "owner": "Payments Operations",
            "last_reviewed": "2026-09-14",
            "review_every_days": 365,
            "url": "https://help.loopline.example/articles/help-coin-packs",
        },
    },
    {
        "source": "help-shop-order-tracking.md",
        "format": "pdf",
        "meta": {
            "id": "help-shop-order-tracking",
            "title": "Track your Loopline Shop order",
            "type": "help_article",
            "audience": "public",
            "regions": ["global"],
            "products": ["shop"],
            "version": "1.2",
            "effective_date": "2026-01-12",
            "owner": "Shop Support",
            "last_reviewed": "2026-09-22",
            "review_every_days": 365,
            "url": "https://help.loopline.example/articles/help-shop-order-tracking",
        },
    },
    {
        "source": "sop-payout-hold-review.md",
        "format": "docx",
        "meta": {
            "id": "sop-payout-hold-review",
            "title": "Creator payout holds: review and release",
            "type": "sop",
            "audience": "internal",
            "regions": ["global"],
            "products": ["payouts", "live"],
            "version": "1.1",
            "effective_date": "2026-02-01",
            "owner": "Creator Support",
            "last_reviewed": "2026-10-20",
            "review_every_days": 180,
            "url": "https://wiki.loopline.internal/support/sop-payout-hold-review",
        },
    },
]


# --------------------------------------------------------------------------- parsing


@dataclass
class Block:
    kind: str  # h1 | h2 | h3 | p | ol | ul | table
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


_OL = re.compile(r"^\d+\.\s+(.*)$")
_UL = re.compile(r"^[-*]\s+(.*)$")


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_markdown(text: str) -> list[Block]:
    if text.startswith("---"):
        raise ValueError("sources in kb/_src must not carry YAML front matter")
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    para: list[str] = []

    def flush_para() -> None:
        if para:
            blocks.append(Block("p", " ".join(s.strip() for s in para)))
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            flush_para()
            i += 1
            continue
        m = re.match(r"^(#{1,3})\s+(.*)$", line)
        if m:
            flush_para()
            blocks.append(Block(f"h{len(m.group(1))}", m.group(2).strip()))
            i += 1
            continue
        if line.lstrip().startswith("|"):
            flush_para()
            table = [line]
            i += 1
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                table.append(lines[i].rstrip())
                i += 1
            header = _split_row(table[0])
            body = [r for r in table[1:] if not re.match(r"^\s*\|?[\s:|-]+\|?\s*$", r)]
            blocks.append(Block("table", header=header, rows=[_split_row(r) for r in body]))
            continue
        for kind, rx in (("ol", _OL), ("ul", _UL)):
            if rx.match(line):
                flush_para()
                items: list[str] = []
                while i < len(lines) and rx.match(lines[i].rstrip()):
                    items.append(rx.match(lines[i].rstrip()).group(1).strip())
                    i += 1
                blocks.append(Block(kind, items=items))
                break
        else:
            para.append(line)
            i += 1
    flush_para()
    return blocks


# --------------------------------------------------------------------------- inline helpers

_LINK = re.compile(r"\[([^\]]+)\]\((kb:[a-z0-9-]+)\)")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def plain(text: str) -> str:
    """Strip inline Markdown, keeping link text."""
    text = _LINK.sub(r"\1", text)
    text = _BOLD.sub(r"\1", text)
    return _CODE.sub(r"\1", text)


def inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _CODE.sub(r"<code>\1</code>", out)


_LATIN1 = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u20ac": "EUR ",
}


def latin1(text: str) -> str:
    for k, v in _LATIN1.items():
        text = text.replace(k, v)
    return text.encode("latin-1", "replace").decode("latin-1")


# --------------------------------------------------------------------------- renderers


def render_html(blocks: list[Block], meta: dict) -> str:
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(meta['title'])}</title>",
        f'<meta name="doc-id" content="{meta["id"]}">',
        f'<link rel="canonical" href="{meta["url"]}">',
        "</head>",
        "<body>",
        "<article>",
    ]
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{inline_html(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{inline_html(b.text)}</p>")
        elif b.kind in ("ol", "ul"):
            body.append(f"<{b.kind}>")
            body.extend(f"  <li>{inline_html(it)}</li>" for it in b.items)
            body.append(f"</{b.kind}>")
        elif b.kind == "table":
            body.append("<table>")
            body.append(
                "  <thead><tr>" + "".join(f"<th>{inline_html(c)}</th>" for c in b.header) + "</tr></thead>"
            )
            body.append("  <tbody>")
            for r in b.rows:
                body.append("    <tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>")
            body.append("  </tbody>")
            body.append("</table>")
    tail = ["</article>", "</body>", "</html>", ""]
    return "\n".join(head + body + tail)


def render_pdf(blocks: list[Block], meta: dict, out: Path) -> None:
    pdf = FPDF(format="A4")
    pdf.set_title(latin1(meta["title"]))
    pdf.set_author("Loopline " + latin1(meta["owner"]))
    pdf.set_subject(meta["id"])
    # Fixed creation date (the last review date) so rebuilds stay byte-stable.
    pdf.set_creation_date(datetime.fromisoformat(meta["last_reviewed"]).replace(tzinfo=UTC))
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(18, 18, 18)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    sizes = {"h1": 18, "h2": 13, "h3": 11}
    for b in blocks:
        if b.kind in sizes:
            pdf.ln(3 if b.kind != "h1" else 0)
            pdf.set_font("Helvetica", "B", sizes[b.kind])
            pdf.multi_cell(width, sizes[b.kind] * 0.5, latin1(plain(b.text)), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif b.kind == "p":
            pdf.set_font("Helvetica", "", 10)
            pdf.multi_cell(width, 5, latin1(plain(b.text)), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif b.kind in ("ol", "ul"):
            pdf.set_font("Helvetica", "", 10)
            for n, it in enumerate(b.items, start=1):
                marker = f"{n}." if b.kind == "ol" else "-"
                pdf.set_x(pdf.l_margin + 2)
                pdf.cell(7, 5, marker)
                pdf.multi_cell(width - 9, 5, latin1(plain(it)), new_x="LMARGIN", new_y="NEXT")
                pdf.ln(0.8)
            pdf.ln(1.5)
        elif b.kind == "table":
            pdf.set_font("Helvetica", "", 9)
            ncols = len(b.header)
            col_widths = (22, 43, 35) if ncols == 3 else None
            with pdf.table(
                col_widths=col_widths,
                text_align="LEFT",
                line_height=4.6,
                first_row_as_headings=True,
            ) as table:
                row = table.row()
                for c in b.header:
                    row.cell(latin1(plain(c)))
                for r in b.rows:
                    row = table.row()
                    for c in r:
                        row.cell(latin1(plain(c)))
            pdf.ln(3)
    pdf.output(str(out))


def _add_runs(paragraph, text: str) -> None:
    """Add text to a python-docx paragraph, keeping **bold** as bold runs."""
    text = _LINK.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    pos = 0
    for m in _BOLD.finditer(text):
        if m.start() > pos:
            paragraph.add_run(text[pos : m.start()])
        paragraph.add_run(m.group(1)).bold = True
        pos = m.end()
    if pos < len(text):
        paragraph.add_run(text[pos:])


def render_docx(blocks: list[Block], meta: dict, out: Path) -> None:
    doc = Document()
    doc.styles["Normal"].font.name = "Calibri"
    doc.styles["Normal"].font.size = Pt(10.5)
    props = doc.core_properties
    props.title = meta["title"]
    props.author = "Loopline " + meta["owner"]
    props.subject = meta["id"]
    props.keywords = ", ".join(meta["products"])
    reviewed = datetime.fromisoformat(meta["last_reviewed"]).replace(tzinfo=UTC)
    props.created = props.modified = reviewed
    props.last_modified_by = "Loopline " + meta["owner"]
    props.revision = 1
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            doc.add_heading(plain(b.text), level=int(b.kind[1]))  # real "Heading N" styles
        elif b.kind == "p":
            _add_runs(doc.add_paragraph(), b.text)
        elif b.kind == "ol":
            for it in b.items:
                _add_runs(doc.add_paragraph(style="List Number"), it)
        elif b.kind == "ul":
            for it in b.items:
                _add_runs(doc.add_paragraph(style="List Bullet"), it)
        elif b.kind == "table":
            table = doc.add_table(rows=1, cols=len(b.header))
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, b.header):
                cell.text = ""
                cell.paragraphs[0].add_run(plain(text)).bold = True
            for r in b.rows:
                cells = table.add_row().cells
                for cell, text in zip(cells, r):
                    cell.text = plain(text)
            doc.add_paragraph()
    doc.save(str(out))
    _normalise_zip(out)


def _normalise_zip(path: Path) -> None:
    """Rewrite the DOCX zip with fixed entry timestamps so rebuilds are byte-stable."""
    with zipfile.ZipFile(path) as zin:
        entries = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, data)


# --------------------------------------------------------------------------- metadata


_QUOTED = {"title", "version", "owner", "url"}  # quoted exactly as in the Markdown front matter


def _yaml_scalar(key: str, value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, int) or key not in _QUOTED:
        return str(value)  # ids, enums, dates and integers stay unquoted
    return '"' + value.replace('"', '\\"') + '"'


def render_meta(meta: dict, file_name: str) -> str:
    missing = [f for f in FIELDS if f not in meta]
    if missing:
        raise ValueError(f"{file_name}: missing metadata fields {missing}")
    lines = [f"# Metadata for {file_name}; generated by kb/_src/build_formats.py"]
    lines += [f"{k}: {_yaml_scalar(k, meta[k])}" for k in FIELDS]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for spec in DOCS:
        meta = spec["meta"]
        src = SRC_DIR / spec["source"]
        blocks = parse_markdown(src.read_text(encoding="utf-8"))
        if not blocks or blocks[0].kind != "h1":
            raise ValueError(f"{src.name}: must start with an H1 title")
        out = OUT_DIR / f"{meta['id']}.{spec['format']}"
        if spec["format"] == "html":
            out.write_text(render_html(blocks, meta), encoding="utf-8")
        elif spec["format"] == "pdf":
            render_pdf(blocks, meta, out)
        elif spec["format"] == "docx":
            render_docx(blocks, meta, out)
        else:
            raise ValueError(spec["format"])
        sidecar = OUT_DIR / f"{out.name}.meta.yaml"
        sidecar.write_text(render_meta(meta, out.name), encoding="utf-8")
        print(f"wrote {out.relative_to(KB_DIR.parent)} and {sidecar.name}")


if __name__ == "__main__":
    main()
