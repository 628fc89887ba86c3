"""SVG charts of an eval run for the HTML report: metric bars, latency histogram, per-tag breakdown."""

from __future__ import annotations

import html
from typing import Any

from bot.evaluation.catalog import METRICS, TAG_METRICS, is_regression

# ------------------------------------------------------------------------------------------------------------
# SVG plots (no plotting library: small, dependency-free, readable inline)
# ------------------------------------------------------------------------------------------------------------
_BLUE, _GREY, _RED, _GREEN = "#2f6db5", "#b9c3cf", "#c0392b", "#2e8b57"


def svg_metric_bars(run: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """Horizontal bars for the 0-1 metrics; the baseline as a thin grey bar under each."""
    rows = [(k, label) for k, label, _, share in METRICS if share and run["metrics"].get(k) is not None]
    width, label_w, bar_w, row_h = 640, 200, 380, 30 if baseline else 22
    height = 20 + row_h * len(rows)
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="Aggregate metrics" font-family="sans-serif" font-size="12">')
    ]
    for x in (0, 0.25, 0.5, 0.75, 1.0):
        gx = label_w + x * bar_w
        parts.append(f'<line x1="{gx}" y1="4" x2="{gx}" y2="{height - 4}" stroke="#eee"/>')
        parts.append(
            f'<text x="{gx}" y="{height - 2}" text-anchor="middle" fill="#888" font-size="9">{x:g}</text>'
        )
    for i, (k, label) in enumerate(rows):
        y = 6 + i * row_h
        v = float(run["metrics"][k])
        regressed = baseline is not None and is_regression(k, v, baseline["metrics"].get(k))
        parts.append(f'<text x="{label_w - 8}" y="{y + 12}" text-anchor="end">{html.escape(label)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{max(v, 0) * bar_w:.1f}" height="13" '
            f'fill="{_RED if regressed else _BLUE}"><title>{k} = {v:.3f}</title></rect>'
        )
        parts.append(f'<text x="{label_w + max(v, 0) * bar_w + 4:.1f}" y="{y + 12}">{v:.3f}</text>')
        if baseline is not None and baseline["metrics"].get(k) is not None:
            bv = float(baseline["metrics"][k])
            parts.append(
                f'<rect x="{label_w}" y="{y + 17}" width="{max(bv, 0) * bar_w:.1f}" height="5" '
                f'fill="{_GREY}"><title>baseline {k} = {bv:.3f}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def svg_latency_histogram(run: dict[str, Any], bins: int = 20) -> str:
    """A histogram of per-case latency with the p50 and p95 marked."""
    lat = [c["latency_ms"] for c in run["cases"] if c.get("latency_ms") is not None]
    width, height, pad = 640, 200, 36
    if not lat:
        return "<p>No latencies recorded.</p>"
    lo, hi = 0.0, max(lat) * 1.02 or 1.0
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in lat:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    top = max(counts)
    plot_w, plot_h = width - 2 * pad, height - 2 * pad
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="Latency histogram" font-family="sans-serif" font-size="11">')
    ]
    for i, n in enumerate(counts):
        h = plot_h * n / top
        x = pad + i * plot_w / bins
        parts.append(
            f'<rect x="{x:.1f}" y="{pad + plot_h - h:.1f}" width="{plot_w / bins - 1:.1f}" '
            f'height="{h:.1f}" fill="{_BLUE}"><title>{lo + i * step:.0f}-{lo + (i + 1) * step:.0f} ms: '
            f"{n}</title></rect>"
        )
    for q, colour in (("latency_p50_ms", _GREEN), ("latency_p95_ms", _RED)):
        v = run["metrics"].get(q)
        if v is not None:
            x = pad + plot_w * (v - lo) / (hi - lo)
            parts.append(
                f'<line x1="{x:.1f}" y1="{pad - 6}" x2="{x:.1f}" y2="{pad + plot_h}" stroke="{colour}" '
                f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{pad - 8}" fill="{colour}">'
                f"{q.split('_')[1]} {v:.0f} ms</text>"
            )
    parts.append(
        f'<line x1="{pad}" y1="{pad + plot_h}" x2="{pad + plot_w}" y2="{pad + plot_h}" stroke="#333"/>'
    )
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(
            f'<text x="{pad + plot_w * i / 4:.1f}" y="{height - 12}" text-anchor="middle">{v:.0f}</text>'
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 1}" text-anchor="middle" fill="#555">ms per case '
        f"({len(lat)} cases; tallest bar {top})</text></svg>"
    )
    return "".join(parts)


def svg_tag_breakdown(by_tag: dict[str, dict[str, Any]]) -> str:
    """Per-tag small multiples: one row per tag, one bar per key metric."""
    tags = [t for t in by_tag if by_tag[t]["cases"] > 0]
    label_w, cell_w, row_h = 190, 90, 20
    width = label_w + cell_w * len(TAG_METRICS) + 60
    height = 26 + row_h * len(tags)
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="Per-tag breakdown" font-family="sans-serif" font-size="11">')
    ]
    for j, (_, label) in enumerate(TAG_METRICS):
        parts.append(f'<text x="{label_w + j * cell_w + 2}" y="14" font-weight="bold">{label}</text>')
    parts.append(f'<text x="{label_w + len(TAG_METRICS) * cell_w + 2}" y="14" font-weight="bold">n</text>')
    for i, t in enumerate(tags):
        y = 22 + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{html.escape(t)}</text>')
        for j, (k, _) in enumerate(TAG_METRICS):
            v = by_tag[t].get(k)
            x = label_w + j * cell_w
            parts.append(f'<rect x="{x}" y="{y + 3}" width="{cell_w - 12}" height="11" fill="#f1f3f6"/>')
            if v is not None:
                colour = _GREEN if v >= 0.9 else _BLUE if v >= 0.6 else _RED
                parts.append(
                    f'<rect x="{x}" y="{y + 3}" width="{(cell_w - 12) * v:.1f}" height="11" '
                    f'fill="{colour}"><title>{t} {k} = {v:.3f}</title></rect>'
                )
        parts.append(
            f'<text x="{label_w + len(TAG_METRICS) * cell_w + 2}" y="{y + 12}">{by_tag[t]["cases"]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
