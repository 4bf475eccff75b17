"""The case page's SHAP waterfall as SVG: the bars of ``serving.review.plots``, drawn without matplotlib.

``serving.review.plots.waterfall_png`` costs about half a second of CPU per case (matplotlib layout
and rasterising), more than the whole 300 ms budget of a case page. The page therefore draws
the same bars (:func:`serving.review.plots.waterfall_steps`: same order, same grouping of the rest,
same colours) as a small SVG, which takes well under a millisecond and stays sharp at any
zoom; the PNG remains one click away for reports and the API.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

from serving.review.plots import NEGATIVE, POSITIVE, Step

__all__ = ["nice_ticks", "waterfall_svg"]

ROW, LABEL_W, PLOT_W, TOP, BOTTOM, RIGHT = 30, 330, 470, 34, 46, 64
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


def _label(text: str, width: int = 52) -> str:
    text = text[:1].upper() + text[1:]
    return text if len(text) <= width else text[: width - 1] + "…"


def waterfall_svg(steps: Sequence[Step], base_value: float, *, title: str = "") -> str:
    """An SVG document drawing ``steps`` (top step first) from ``base_value`` to the margin."""
    margin = steps[0].end if steps else base_value
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
        f'fill="{MUTED}" font-size="11">model output (log-odds of confirmed concern)</text>'
    )
    for value, text, anchor in (
        (base_value, f"E[f(X)] = {base_value:.2f}", "end"),
        (margin, f"f(x) = {margin:.2f}", "start"),
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
        out.append(
            f'<text x="{LABEL_W - 10}" y="{y + ROW / 2 + 4:.1f}" text-anchor="end" '
            f'fill="{INK if s.feature else MUTED}">{escape(_label(s.label))}</text>'
        )
        out.append(
            f'<rect x="{left:.1f}" y="{y + 5}" width="{max(right - left, 1.5):.1f}" '
            f'height="{ROW - 10}" rx="2" fill="{colour}"/>'
        )
        out.append(
            f'<text x="{right + 5:.1f}" y="{y + ROW / 2 + 4:.1f}" fill="{colour}" '
            f'font-size="11">{s.shap:+.3f}</text>'
        )
        if i + 1 < len(steps):  # connector to the next bar, as shap draws it
            cx = x(s.start)
            out.append(
                f'<line x1="{cx:.1f}" y1="{y + ROW - 5}" x2="{cx:.1f}" y2="{y + ROW + 5}" '
                f'stroke="#9ca3af" stroke-dasharray="2 2"/>'
            )
    out.append("</svg>")
    return "\n".join(out)
