"""A dependence plot as SVG, drawn without matplotlib (as ``waterfall_svg`` draws the waterfall).

Matplotlib would cost about half a second per figure (layout and rasterising); 2,000 dots
as SVG circles take a few milliseconds, stay sharp at any zoom and need no script. Cases
with no record sit in their own strip at the left (they have no value to place them by); a
feature with few distinct values (a flag, a small count) is spread sideways by a fixed
jitter so its dots do not hide each other. With a colour feature, dots run from blue (low)
to red (high) by the colour feature's rank in the sample, grey where it has no record, as
the beeswarm colours them. The ``<title>`` and ``<desc>`` say what the figure shows; the page
adds the same points as a table and as CSV.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np

from serving.review.dependence import Dependence
from serving.review.plots import NEGATIVE, POSITIVE
from serving.review.waterfall_svg import FONT, GRID, INK, MUTED, nice_ticks, wrap_label

__all__ = ["dependence_svg"]

W, H = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 24, 70
MISSING_W = 56  # the "no record" strip
JITTER_BELOW = 25  # distinct values at most: spread dots sideways
_LOW, _MID, _HIGH = NEGATIVE, "#b0a4c8", POSITIVE
_GREY = "#b8bec8"


def _mix(a: str, b: str, t: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def _colours(values: np.ndarray) -> list[str]:
    """Blue (low) to red (high) by rank within the sample; grey where there is no record."""
    out = [_GREY] * len(values)
    known = np.flatnonzero(~np.isnan(values))
    if len(known):
        ranks = np.argsort(np.argsort(values[known], kind="stable"), kind="stable")
        # equal values share one colour: the rank of their first occurrence
        _, first = np.unique(values[known], return_index=True)
        by_value = dict(zip(values[known][first].tolist(), ranks[first].tolist(), strict=True))
        top = max(len(known) - 1, 1)
        for i in known:
            t = by_value[float(values[i])] / top
            out[i] = _mix(_LOW, _MID, 2 * t) if t < 0.5 else _mix(_MID, _HIGH, 2 * t - 1)
    return out


def dependence_svg(dep: Dependence, *, title: str, desc: str) -> str:
    """An SVG document of ``dep``'s points (see the module docstring)."""
    x, s = dep.values, dep.shap
    known = ~np.isnan(x)
    has_missing = bool((~known).any())
    plot_left = LEFT + (MISSING_W + 12 if has_missing else 0)
    plot_w = W - plot_left - RIGHT
    plot_h = H - TOP - BOTTOM
    s_lo, s_hi = (float(s.min()), float(s.max())) if len(s) else (-1.0, 1.0)
    pad = (s_hi - s_lo) * 0.06 or 0.5
    s_lo, s_hi = min(s_lo - pad, 0.0), max(s_hi + pad, 0.0)
    xs = x[known]
    x_lo, x_hi = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    distinct = np.unique(xs)
    jitter = 0.0
    if 1 < len(distinct) <= JITTER_BELOW:
        jitter = float(np.min(np.diff(distinct))) * 0.3
    elif len(distinct) == 1:
        jitter = 0.3
    xpad = (x_hi - x_lo) * 0.04 or 0.5
    x_lo, x_hi = x_lo - max(xpad, jitter), x_hi + max(xpad, jitter)

    def px(v: float) -> float:
        return plot_left + (v - x_lo) / (x_hi - x_lo) * plot_w

    def py(v: float) -> float:
        return TOP + (s_hi - v) / (s_hi - s_lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="{FONT}" font-size="12" role="img" '
        'aria-labelledby="dep-title dep-desc">',
        f'<title id="dep-title">{escape(title)}</title>',
        f'<desc id="dep-desc">{escape(desc)}</desc>',
        f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
    ]
    bottom = TOP + plot_h
    for t in nice_ticks(s_lo, s_hi, 6):
        ty = py(t)
        dash = ' stroke-dasharray="3 3"' if t == 0 else ""
        out.append(
            f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{W - RIGHT}" y2="{ty:.1f}" '
            f'stroke="{MUTED if t == 0 else GRID}"{dash}/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="{MUTED}" '
            f'font-size="11">{f"{t:+g}" if t else "0"}</text>'
        )
    if len(xs):
        ticks = distinct.tolist() if len(distinct) <= 8 else nice_ticks(x_lo, x_hi, 6)
        for t in ticks:
            if not x_lo <= t <= x_hi:
                continue
            tx = px(t)
            out.append(
                f'<line x1="{tx:.1f}" y1="{bottom}" x2="{tx:.1f}" y2="{bottom + 5}" '
                f'stroke="{MUTED}"/>'
            )
            out.append(
                f'<text x="{tx:.1f}" y="{bottom + 18}" text-anchor="middle" fill="{MUTED}" '
                f'font-size="11">{t:,g}</text>'
            )
    if has_missing:
        mx = LEFT + 6 + MISSING_W / 2
        out.append(
            f'<rect x="{LEFT + 6}" y="{TOP}" width="{MISSING_W}" height="{plot_h}" fill="#f3f4f6"/>'
        )
        out.append(
            f'<text x="{mx:.1f}" y="{bottom + 18}" text-anchor="middle" fill="{MUTED}" '
            'font-size="11">no record</text>'
        )
    label = " ".join(wrap_label(dep.label, 90, 1))
    out.append(
        f'<text x="{plot_left + plot_w / 2:.1f}" y="{bottom + 40}" text-anchor="middle" '
        f'fill="{INK}" font-size="12">{escape(label)}</text>'
    )
    out.append(
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" fill="{MUTED}" '
        f'font-size="11" transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">'
        "effect on the score (SHAP, log-odds points)</text>"
    )
    colours = _colours(dep.colour_values) if dep.colour_values is not None else [POSITIVE] * dep.n
    # A fixed jitter per sampled case: the same figure on every worker and every reload.
    spread = np.random.default_rng(0).uniform(-1, 1, size=dep.n)
    dots = []
    for i in range(dep.n):
        if known[i]:
            cx = px(float(x[i]) + spread[i] * jitter)
        else:
            cx = LEFT + 6 + MISSING_W / 2 + spread[i] * MISSING_W * 0.35
        dots.append(
            f'<circle cx="{cx:.1f}" cy="{py(float(s[i])):.1f}" r="2.6" fill="{colours[i]}"/>'
        )
    out.append(f'<g fill-opacity="0.7" data-points="{dep.n}">{"".join(dots)}</g>')
    if dep.colour_label is not None:  # the legend: "colour: <feature>  low [ramp] high"
        gx, gy = W - RIGHT - 200, bottom + 58
        colour_label = " ".join(wrap_label(dep.colour_label, 48, 1))
        out.append(
            f'<text x="{gx - 28}" y="{gy + 4}" text-anchor="end" fill="{MUTED}" font-size="11">'
            f"colour: {escape(colour_label)}</text>"
        )
        out.append(
            f'<text x="{gx - 4}" y="{gy + 4}" text-anchor="end" fill="{MUTED}" '
            'font-size="11">low</text>'
        )
        for k in range(11):
            t = k / 10
            colour = _mix(_LOW, _MID, 2 * t) if t < 0.5 else _mix(_MID, _HIGH, 2 * t - 1)
            out.append(
                f'<rect x="{gx + 8 * k}" y="{gy - 5}" width="8" height="10" fill="{colour}"/>'
            )
        out.append(
            f'<text x="{gx + 92}" y="{gy + 4}" fill="{MUTED}" font-size="11">high, '
            f'<tspan fill="{_GREY}">&#9679;</tspan> no record</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
