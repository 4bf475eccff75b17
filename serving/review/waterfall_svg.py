"""The case page's SHAP waterfall as SVG: the bars of ``serving.review.plots``, drawn without matplotlib.

``serving.review.plots.waterfall_png`` costs about half a second of CPU per case (matplotlib layout
and rasterising), more than the whole 300 ms budget of a case page. The page therefore draws
the same bars (:func:`serving.review.plots.waterfall_steps`: same bars, same grouping of the rest,
same colours) as a small SVG, which takes well under a millisecond and stays sharp at any
zoom; the PNG remains one click away for reports and the API.

The SVG reads top to bottom (:func:`reading_order`): it starts at the backlog average, the
largest effect comes first and the grouped "N other features" bar last, so the eye follows the
score from the average to this case. Labels wrap onto two lines and, if still too long, end in
an ellipsis; each bar's ``<title>`` carries the full text (a tooltip and what a screen reader
announces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

from serving.review.plots import NEGATIVE, POSITIVE, Step

__all__ = ["nice_ticks", "reading_order", "wrap_label", "waterfall_svg"]

ROW, LABEL_W, PLOT_W, TOP, BOTTOM, RIGHT = 34, 330, 470, 34, 46, 64
LINE_CHARS = 50  # characters per label line at 12 px in LABEL_W
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"
INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def reading_order(steps: Sequence[Step], base_value: float) -> list[Step]:
    """``steps`` (largest |SHAP| first, the grouped rest last) re-chained from ``base_value``.

    The first step starts at the backlog average and each next one where the previous ended;
    the last (the grouped rest, when there is one) ends at the case's margin.
    """
    out, loc = [], float(base_value)
    for s in steps:
        out.append(Step(s.label, s.feature, s.shap, loc, loc + s.shap))
        loc += s.shap
    return out


def wrap_label(text: str, width: int = LINE_CHARS, lines: int = 2) -> list[str]:
    """``text`` (first letter capitalised) on at most ``lines`` lines of ``width`` characters,
    broken at spaces; what does not fit ends in an ellipsis."""
    text = text[:1].upper() + text[1:]
    words, out, line = text.split(" "), [], ""
    for word in words:
        candidate = f"{line} {word}" if line else word
        if len(candidate) <= width:
            line = candidate
            continue
        if line:
            out.append(line)
        line = word
    out.append(line)
    out = [w if len(w) <= width else w[: width - 1] + "…" for w in out]
    if len(out) > lines:
        last = " ".join(out[lines - 1 :])
        out = [*out[: lines - 1], last[: width - 1].rstrip() + "…"]
    return out


def waterfall_svg(steps: Sequence[Step], base_value: float, *, title: str = "") -> str:
    """An SVG document drawing ``steps`` top to bottom, from ``base_value`` to the margin
    (``steps`` as :func:`reading_order` returns them)."""
    margin = steps[-1].end if steps else base_value
    xs = [base_value, margin] + [v for s in steps for v in (s.start, s.end)]
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.04 or 0.5
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return LABEL_W + (v - lo) / (hi - lo) * PLOT_W

    height = TOP + ROW * len(steps) + BOTTOM
    width = LABEL_W + PLOT_W + RIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="12" role="img">',
        f"<title>{escape(title or 'SHAP waterfall')}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    axis_y = TOP + ROW * len(steps)
    for t in nice_ticks(lo, hi):
        tx = x(t)
        out.append(
            f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="{GRID}"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="{MUTED}" '
            f'font-size="11">{t:g}</text>'
        )
    out.append(
        f'<text x="{LABEL_W + PLOT_W / 2:.1f}" y="{axis_y + 36}" text-anchor="middle" '
        f'fill="{MUTED}" font-size="11">model score in log-odds points '
        f"(higher: more likely a confirmed concern)</text>"
    )
    for value, text, anchor in (
        (base_value, f"backlog average {base_value:.2f}", "end"),
        (margin, f"this case {margin:.2f}", "start"),
    ):
        vx = x(value)
        dx = -4 if anchor == "end" else 4
        if base_value > margin:  # labels would cross: put each on its outer side
            anchor, dx = ("start", 4) if anchor == "end" else ("end", -4)
        out.append(
            f'<line x1="{vx:.1f}" y1="{TOP - 8}" x2="{vx:.1f}" y2="{axis_y}" stroke="#9ca3af" '
            f'stroke-dasharray="3 3"/>'
        )
        out.append(
            f'<text x="{vx + dx:.1f}" y="{TOP - 12}" text-anchor="{anchor}" fill="{INK}" '
            f'font-size="11">{escape(text)}</text>'
        )
    for i, s in enumerate(steps):
        y = TOP + i * ROW
        colour = POSITIVE if s.shap >= 0 else NEGATIVE
        left, right = sorted((x(s.start), x(s.end)))
        lines = wrap_label(s.label)
        mid = y + ROW / 2 + 4
        first = mid - 7 * (len(lines) - 1)
        spans = "".join(
            f'<tspan x="{LABEL_W - 10}" y="{first + 14 * k:.1f}">{escape(line)}</tspan>'
            for k, line in enumerate(lines)
        )
        full = s.label[:1].upper() + s.label[1:]
        out.append(f"<g><title>{escape(f'{full}: {s.shap:+.3f}')}</title>")
        out.append(f'<text text-anchor="end" fill="{INK if s.feature else MUTED}">{spans}</text>')
        out.append(
            f'<rect x="{left:.1f}" y="{y + 7}" width="{max(right - left, 1.5):.1f}" '
            f'height="{ROW - 14}" rx="2" fill="{colour}"/>'
        )
        out.append(
            f'<text x="{right + 5:.1f}" y="{mid:.1f}" fill="{colour}" '
            f'font-size="11">{s.shap:+.3f}</text></g>'
        )
        if i + 1 < len(steps):  # connector to the next bar, as shap draws it
            cx = x(s.end)
            out.append(
                f'<line x1="{cx:.1f}" y1="{y + ROW - 7}" x2="{cx:.1f}" y2="{y + ROW + 7}" '
                f'stroke="#9ca3af" stroke-dasharray="2 2"/>'
            )
    out.append("</svg>")
    return "\n".join(out)
