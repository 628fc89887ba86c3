"""Load knowledge-base files (Markdown + YAML front matter, HTML, PDF, DOCX, text) into validated Documents."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from bot.core.config import DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MAX_DOCUMENT_CHARS
from bot.core.errors import DocumentError
from bot.core.models import DOC_TYPES, REGIONS, Audience, Document

SUPPORTED_SUFFIXES = (".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".txt")
SIDECAR_SUFFIX = ".meta.yaml"
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
KNOWN_FIELDS = {
    "id", "title", "type", "audience", "regions", "products", "version", "effective_date", "supersedes",
    "owner", "last_reviewed", "review_every_days", "url",
}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster; same safe semantics
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


@dataclass
class LoadResult:
    """Documents that loaded and, per failing file, the problem."""

    documents: list[Document] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def discover(paths: Iterable[Path]) -> tuple[list[Path], dict[str, str]]:
    """KB files under the given files or folders, and the entries refused (symlinks that leave the folder,
    loops, broken links); skips README.md, sidecars and _/.-prefixed folders."""
    found: list[Path] = []
    refused: dict[str, str] = {}
    for root in paths:
        root = Path(root)
        if root.is_file():
            found.append(root)
            continue
        real_root = root.resolve()
        for p in sorted(root.rglob("*")):
            rel_parts = p.relative_to(root).parts
            if any(part.startswith(("_", ".")) for part in rel_parts[:-1]) or p.name.startswith("."):
                continue
            if p.is_symlink():
                problem = _symlink_problem(p, real_root)
                if problem:
                    refused[str(p)] = str(DocumentError(str(p), problem))
                    continue
            if not p.is_file():
                continue
            if p.name.lower() == "readme.md" or p.name.endswith(SIDECAR_SUFFIX):
                continue
            if p.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(p)
    return found, refused


def _symlink_problem(link: Path, real_root: Path) -> str | None:
    """Why a symlink in the KB is not followed, or None when it points at a file inside the KB folder."""
    try:
        target = link.resolve(strict=True)
    except RuntimeError:  # Python 3.11 raises RuntimeError on a symlink loop
        return "symlink loop; remove the link or point it at a file inside the KB folder"
    except OSError as exc:
        return f"broken symlink ({exc.strerror}); remove it or restore its target"
    if not target.is_relative_to(real_root):
        return (f"symlink to {target}, outside the KB folder {real_root}; not indexed: copy the file into the KB "
                "folder if it belongs there")
    if target.is_dir():
        return "symlinked folder; not followed: move the folder into the KB folder instead"
    return None


def load_paths(paths: Iterable[Path], *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
               max_chars: int = DEFAULT_MAX_DOCUMENT_CHARS, established: Mapping[str, str] | None = None) -> LoadResult:
    """Load every KB file under paths; one bad file is reported and never stops the rest.

    When two files claim one id, the file `established` (id -> path, from the index being replaced) names keeps
    it, else the first in path order; the other file is reported, so a newcomer cannot take over a document."""
    files, refused = discover(paths)
    result = LoadResult(failures=dict(refused))
    claims: dict[str, list[Document]] = {}
    for path in files:
        try:
            doc = load_document(path, max_bytes=max_bytes, max_chars=max_chars)
        except DocumentError as exc:
            result.failures[str(path)] = str(exc)
            continue
        claims.setdefault(doc.id, []).append(doc)
    established = established or {}
    for doc_id, docs in claims.items():
        owner = next((d for d in docs if d.path == established.get(doc_id)), docs[0])
        result.documents.append(owner)
        for d in docs:
            if d is not owner:
                result.failures[d.path] = str(DocumentError(
                    d.path, f"duplicate id '{doc_id}', already used by {owner.path}; give this file its own id",
                    "id"))
    return result


def load_document(path: Path, *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
                  max_chars: int = DEFAULT_MAX_DOCUMENT_CHARS) -> Document:
    """Load and validate one file of any supported format, refusing files over the size limits."""
    suffix = path.suffix.lower()
    loader: Callable[[Path], tuple[dict[str, Any], str]] | None = _LOADERS.get(suffix)
    if loader is None:
        raise DocumentError(str(path), f"unsupported file type '{suffix}' (use {', '.join(SUPPORTED_SUFFIXES)})")
    size = path.stat().st_size
    if size > max_bytes:
        raise DocumentError(str(path), f"file is {size:,} bytes, over the limit of {max_bytes:,} "
                            "(POLICYDESK_MAX_DOCUMENT_BYTES); split it into smaller documents")
    try:
        meta, body = loader(path)
    except DocumentError:
        raise
    except Exception as exc:  # a parser failing on a corrupt file: report it against the file
        raise DocumentError(str(path), f"could not be read as {suffix[1:].upper()}: {exc}") from exc
    if len(body) > max_chars:
        raise DocumentError(str(path), f"text is {len(body):,} characters, over the limit of {max_chars:,} "
                            "(POLICYDESK_MAX_DOCUMENT_CHARS); split it into smaller documents")
    meta = {**meta, **read_sidecar(path)}
    if not body.strip():
        raise DocumentError(str(path), "the document has no text")
    return build_document(path, meta, body, suffix.lstrip("."))


def read_sidecar(path: Path) -> dict[str, Any]:
    """The fields of a document's `.meta.yaml` sidecar ({} when it has none)."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return {}
    return _parse_yaml(sidecar, _read_text(sidecar))


def _parse_yaml(path: Path, text: str) -> dict[str, Any]:
    try:
        # Aliases are refused before anything is built: a few hundred bytes of nested aliases expand into
        # gigabytes (the "billion laughs"), and front matter never needs them.
        if any(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=_YAML_LOADER)):
            raise DocumentError(str(path), "front matter uses YAML aliases (*name); write the values out instead")
        data = yaml.load(text, Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(str(path), f"front matter is not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise DocumentError(str(path), "front matter must be a mapping of field: value")
    return data


def load_markdown(path: Path) -> tuple[dict[str, Any], str]:
    """Front matter (as written, no defaults) and body of a Markdown file."""
    text = _read_text(path)
    m = _FRONT_MATTER_RE.match(text)
    if not m:
        if text.startswith("---"):
            raise DocumentError(str(path), "front matter starts with '---' but has no closing '---' line")
        return {}, text
    return _parse_yaml(path, m.group(1)), text[m.end():]


def _load_text(path: Path) -> tuple[dict[str, Any], str]:
    return {}, _read_text(path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), f"not UTF-8 text (byte {exc.start}); re-save the file as UTF-8") from exc


# why: HTML to Markdown-ish text: one walk over the parsed tree, a branch per tag kind
def _load_html(path: Path) -> tuple[dict[str, Any], str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_text(path), "html.parser")
    meta: dict[str, Any] = {}
    for tag in soup.find_all("meta"):
        name = (tag.get("name") or "").lower()
        if name.startswith("policydesk:") and tag.get("content") is not None:
            meta[name.split(":", 1)[1]] = tag["content"]
    if soup.title and soup.title.string and "title" not in meta:
        meta["title"] = soup.title.string.strip()
    for tag in soup(["script", "style", "nav", "footer", "head"]):
        tag.decompose()
    lines: list[str] = []
    root = soup.body or soup
    for el in root.find_all(["h1", "h2", "h3", "h4", "p", "li", "tr", "pre"]):
        if el.find_parent(["li", "tr"]) is not None and el.name != "tr":
            continue
        text = " ".join(el.get_text(" ", strip=True).split())
        if not text:
            continue
        if el.name in ("h1", "h2", "h3", "h4"):
            lines += ["", "#" * int(el.name[1]) + " " + text, ""]
        elif el.name == "li":
            parent = el.find_parent(["ol", "ul"])
            if parent is not None and parent.name == "ol":
                lines.append(f"{len(el.find_previous_siblings('li')) + 1}. {text}")
            else:
                lines.append(f"- {text}")
        elif el.name == "tr":
            cells = [" ".join(c.get_text(" ", strip=True).split()) for c in el.find_all(["td", "th"])]
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines += [text, ""]
    return meta, "\n".join(lines)


def _load_pdf(path: Path) -> tuple[dict[str, Any], str]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    meta: dict[str, Any] = {}
    if reader.metadata and reader.metadata.title:
        meta["title"] = str(reader.metadata.title)
    pages = [page.extract_text() or "" for page in reader.pages]
    return meta, "\n\n".join(pages)


def _load_docx(path: Path) -> tuple[dict[str, Any], str]:
    import docx

    d = docx.Document(str(path))
    meta: dict[str, Any] = {}
    if d.core_properties.title:
        meta["title"] = d.core_properties.title
    lines: list[str] = []
    counter = 0
    for para in d.paragraphs:
        text = para.text.strip()
        style = (para.style.name or "").lower() if para.style is not None else ""
        if not text:
            continue
        if style.startswith("heading") or style == "title":
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            lines += ["", "#" * level + " " + text, ""]
            counter = 0
        elif "list number" in style:
            counter += 1
            lines.append(f"{counter}. {text}")
        elif "list" in style:
            lines.append(f"- {text}")
        else:
            counter = 0
            lines += [text, ""]
    for table in d.tables:
        lines.append("")
        for row in table.rows:
            lines.append("| " + " | ".join(c.text.strip() for c in row.cells) + " |")
    return meta, "\n".join(lines)


_LOADERS: dict[str, Callable[[Path], tuple[dict[str, Any], str]]] = {
    ".md": load_markdown, ".markdown": load_markdown, ".txt": _load_text,
    ".html": _load_html, ".htm": _load_html, ".pdf": _load_pdf, ".docx": _load_docx,
}


def _first_heading(body: str) -> str | None:
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("#"):
            return s.lstrip("#").strip() or None
        if s:
            return s[:120]
    return None


def _as_date(path: Path, name: str, value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise DocumentError(str(path), f"'{value}' is not a date; use YYYY-MM-DD", name) from exc


def _as_list(path: Path, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int)) for v in value):
        raise DocumentError(str(path), f"must be a list of names, got {value!r}", name)
    return tuple(str(v) for v in value)


# why: validates every front-matter field with a message naming the file and field
def build_document(path: Path, meta: dict[str, Any], body: str, fmt: str) -> Document:
    """Validate front matter and apply defaults; audience defaults to internal (fail closed)."""
    p = str(path)
    doc_id = str(meta.get("id") or _stem(path)).strip()
    if not ID_RE.match(doc_id):
        raise DocumentError(p, f"'{doc_id}' must be lowercase letters, digits, '.', '_' or '-'", "id")
    title = str(meta.get("title") or _first_heading(body) or doc_id).strip()
    audience_raw = str(meta.get("audience", "internal")).strip().lower()
    try:
        audience = Audience(audience_raw)
    except ValueError as exc:
        raise DocumentError(p, f"'{audience_raw}' is not one of internal, public", "audience") from exc
    doc_type = str(meta.get("type", "sop")).strip()
    if doc_type not in DOC_TYPES:
        raise DocumentError(p, f"'{doc_type}' is not one of {', '.join(DOC_TYPES)}", "type")
    regions = _as_list(path, "regions", meta.get("regions")) or ("global",)
    canon = {r.lower(): r for r in REGIONS}
    bad = [r for r in regions if r.lower() not in canon]
    if bad:
        raise DocumentError(p, f"unknown region(s) {bad}; use {', '.join(REGIONS)}", "regions")
    regions = tuple(canon[r.lower()] for r in regions)
    review_every = meta.get("review_every_days")
    if review_every is not None and (not isinstance(review_every, int) or review_every <= 0):
        raise DocumentError(p, f"must be a positive whole number of days, got {review_every!r}", "review_every_days")
    supersedes = meta.get("supersedes")
    if supersedes is not None and not isinstance(supersedes, str):
        raise DocumentError(p, "must be the id of the document this one replaces", "supersedes")
    extra = {k: v for k, v in meta.items() if k not in KNOWN_FIELDS}
    return Document(
        id=doc_id,
        title=title,
        text=body.strip() + "\n",
        path=p,
        audience=audience,
        type=doc_type,
        regions=regions,
        products=tuple(x.lower() for x in _as_list(path, "products", meta.get("products"))),
        version=str(meta.get("version", "1")),
        effective_date=_as_date(path, "effective_date", meta.get("effective_date")),
        supersedes=supersedes,
        owner=meta.get("owner"),
        last_reviewed=_as_date(path, "last_reviewed", meta.get("last_reviewed")),
        review_every_days=review_every,
        url=meta.get("url"),
        format=fmt,
        content_hash=hashlib.sha256((repr(sorted(meta.items(), key=str)) + body).encode()).hexdigest(),
        extra=extra,
    )


def _stem(path: Path) -> str:
    return path.stem.lower()
