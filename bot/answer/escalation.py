"""Where an agent should send a case: the KB's queue table, and the SOP line naming a queue that best fits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.models import Escalation
from bot.core.profile import DEFAULT_PROFILE, KBProfile
from bot.core.text import analyze
from bot.core.units import clean_display, region_conflict
from bot.search.intent import region_hints

_OWNER_RE = re.compile(r"\bowner ([A-Z][\w&' -]+?)(?:[.;,]|$)")
_TEAM_TO_RE = re.compile(r"\bto ([A-Z][\w&' ]+?) in the ")


@dataclass(frozen=True)
class QueueInfo:
    """A queue as the KB's queue table (the escalation matrix) describes it."""

    team: str
    default_priority: str = ""


# why: a single scan of Markdown tables; the branches are the table grammar
def queue_table(generation, profile: KBProfile = DEFAULT_PROFILE) -> dict[str, QueueInfo]:
    """Queue name -> team and default priority, from any KB table with 'Queue' and 'Team' columns."""
    queues: dict[str, QueueInfo] = {}
    if profile.priority is None:
        return queues
    # an index generation finds the few chunks with a queue table without decoding the rest
    tables = (generation.chunks_containing("| Queue", "|Queue") if hasattr(generation, "chunks_containing")
              else generation.chunks)
    for c in tables:
        if "| Queue" not in c.text and "|Queue" not in c.text:
            continue
        header: list[str] | None = None
        for line in c.text.splitlines():
            if not line.strip().startswith("|"):
                header = None
                continue
            cells = [x.strip() for x in line.strip().strip("|").split("|")]
            if header is None:
                header = [h.lower() for h in cells]
                continue
            if "queue" in header and "team" in header and len(cells) == len(header):
                q = cells[header.index("queue")].strip("` ")
                if re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)+", q):
                    prio_col = next((i for i, h in enumerate(header) if "priority" in h), None)
                    # "P2 if the account is being misused, otherwise P3": the last one is the default
                    found = profile.priority.findall(cells[prio_col]) if prio_col is not None else []
                    queues[q] = QueueInfo(cells[header.index("team")], f"P{found[-1]}" if found else "")
    return queues


# why: one scoring loop over candidate lines; the skips are the documented filters
def find_escalation(generation, doc_ids: Sequence[str], question: str, queues: dict[str, QueueInfo],
                    reason_prefix: str = "", profile: KBProfile = DEFAULT_PROFILE) -> Escalation | None:
    """Where to send the case: the line naming a queue (and a priority) in the SOPs/policies of doc_ids that
    best matches the question; lines of an 'Escalation' section and earlier documents are preferred. The team
    and a missing priority come from the KB's queue table when there is one. Queue and priority syntax and the
    escalation heading come from the KB profile: a KB without them gets no escalation line."""
    if profile.queue is None:
        return None
    q_terms = set(analyze(question))
    hints = region_hints(question, profile)
    best: tuple[float, str, str, str, str, str] | None = None
    for order, doc_id in enumerate(doc_ids):
        doc = generation.documents.get(doc_id)
        if not doc or doc.get("meta", {}).get("type") not in ("sop", "policy"):
            continue
        for cid in doc.get("chunk_ids", []):
            pos = generation.by_id.get(cid)
            if pos is None:
                continue
            chunk = generation.chunks[pos]
            in_escalation = any(profile.section("escalation", s) for s in chunk.section_path)
            for line in chunk.text.splitlines():
                qm = profile.queue.search(line)
                pm = profile.priority.search(line) if profile.priority else None
                if not qm or not (pm or in_escalation):
                    continue
                queue_name = next(g for g in qm.groups() + (qm.group(0),) if g)
                if queues and queue_name not in queues:
                    continue
                if hints and region_conflict(line, hints, profile):  # a French user's case, not "for US and ROW users"
                    continue
                overlap = len(q_terms & set(analyze(line))) / max(len(q_terms), 1)
                score = overlap + (0.5 if in_escalation else 0.0) + (0.2 if pm else 0.0) - 0.2 * order
                if best is None or score > best[0]:
                    best = (score, queue_name, f"P{pm.group(1)}" if pm else "", line,
                            chunk.metadata.get("owner", ""), doc_id)
    if best is None:
        return None
    _, queue_name, priority, line, owner, doc_id = best
    info = queues.get(queue_name)
    om = _OWNER_RE.search(line)
    tm = _TEAM_TO_RE.search(line)
    team = (info.team if info else "") or (om.group(1).strip() if om else "") or (
        tm.group(1).strip() if tm else "") or owner
    # the reason in words: the line without its list marker, link targets or backticks
    reason = clean_display(re.sub(r"^\s*(?:[-*]|\d+[.)])\s*", "", line))
    return Escalation(team=team, queue=queue_name, priority=priority or (info.default_priority if info else ""),
                      source_doc_id=doc_id, reason=f"{reason_prefix}{reason}")
