"""`policydesk kb lint`: front-matter problems, duplicate ids, broken links, stale documents, dangling supersedes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from bot.core.config import Settings
from bot.core.models import Audience
from bot.core.profile import PROFILE_FILE, load_profile
from bot.ingest.loaders import load_markdown, load_paths, read_sidecar

LINK_RE = re.compile(r"\]\(kb:([A-Za-z0-9._-]+)\)")


@dataclass(frozen=True)
class LintIssue:
    """One problem found in the knowledge base."""

    severity: str  # error | warning
    path: str
    field: str
    problem: str


@dataclass
class LintReport:
    """All issues; errors fail the lint, warnings (e.g. stale documents) do not."""

    issues: list[LintIssue] = field(default_factory=list)
    documents: int = 0

    @property
    def errors(self) -> list[LintIssue]:
        """Issues that fail the lint."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[LintIssue]:
        """Issues worth fixing that do not fail the lint."""
        return [i for i in self.issues if i.severity == "warning"]


# why: one pass over documents; each branch is one lint rule with its message
def lint_kb(paths: list[Path], today: date | None = None, strict_fields: bool = True,
            settings: Settings | None = None) -> LintReport:
    """Check every KB document; strict_fields applies the KB profile's `[lint] required_fields` (none by default)."""
    today = today or date.today()
    settings = settings or Settings()
    required = _required_fields(paths, settings)
    loaded = load_paths(paths, max_bytes=settings.max_document_bytes, max_chars=settings.max_document_chars)
    report = LintReport(documents=len(loaded.documents))
    for path, problem in loaded.failures.items():
        fld = ""
        m = re.search(r"field '([^']+)'", problem)
        if m:
            fld = m.group(1)
        report.issues.append(LintIssue("error", path, fld, problem))
    ids = {d.id: d for d in loaded.documents}
    for d in loaded.documents:
        if strict_fields:
            meta_fields = _declared_fields(d)
            for f in required:
                if f != "url" and f not in meta_fields:
                    report.issues.append(LintIssue("error", d.path, f, "required field is missing"))
            if "url" in required and d.audience is Audience.PUBLIC and not d.url:
                report.issues.append(LintIssue("error", d.path, "url", "public articles need a url to link to"))
        for target in LINK_RE.findall(d.text):
            if target not in ids:
                report.issues.append(LintIssue("error", d.path, "links", f"link to unknown document kb:{target}"))
            elif d.audience is Audience.PUBLIC and ids[target].audience is Audience.INTERNAL:
                report.issues.append(LintIssue(
                    "error", d.path, "links", f"public article links to internal document kb:{target}"))
        if d.supersedes:
            old = ids.get(d.supersedes)
            if old is None:
                report.issues.append(LintIssue("error", d.path, "supersedes",
                                               f"points to unknown document '{d.supersedes}'"))
            elif old.effective_date and d.effective_date and old.effective_date >= d.effective_date:
                report.issues.append(LintIssue("error", d.path, "supersedes",
                                               f"effective_date {d.effective_date} is not after "
                                               f"{old.id}'s {old.effective_date}"))
        due = d.review_due()
        if due and due < today:
            report.issues.append(LintIssue("warning", d.path, "last_reviewed",
                                           f"past its review date ({due}); review and bump last_reviewed"))
        if d.effective_date and d.effective_date > today:
            report.issues.append(LintIssue("warning", d.path, "effective_date",
                                           f"not in force until {d.effective_date}"))
    return report


def _required_fields(paths: list[Path], settings: Settings) -> tuple[str, ...]:
    """The required front-matter fields of the KB being linted: its own profile when it has one, else Settings'."""
    folder = Path(paths[0]) if len(paths) == 1 and Path(paths[0]).is_dir() else None
    if settings.kb_profile is None and folder is not None:
        return load_profile(folder / PROFILE_FILE).required_fields
    return settings.profile.required_fields


def _declared_fields(doc) -> set[str]:
    """Fields actually written in the file's front matter or sidecar (not defaults)."""
    path = Path(doc.path)
    meta: dict = {}
    if path.suffix.lower() in (".md", ".markdown"):
        meta, _ = load_markdown(path)
    meta.update(read_sidecar(path))
    return set(meta)
