"""Displayed probabilities never read 0.00% or 100.00%, whatever the rounding."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from triage.model.calibration import format_probability


def test_bounds_and_ordinary_values():
    """Values too small or too large for the digits shown get < and >; others are rounded."""
    assert format_probability(0.0) == "<0.01%"
    assert format_probability(0.00004) == "<0.01%"
    assert format_probability(1.0) == ">99.99%"
    assert format_probability(0.99995) == ">99.99%"
    assert format_probability(0.0362) == "3.62%"
    assert format_probability(0.5, digits=0) == "50%"
    assert format_probability(None) == "–" and format_probability(math.nan) == "–"


@given(st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=0, max_value=4))
def test_never_shows_zero_or_one(p, digits):
    """No probability in [0, 1] is displayed as exactly 0% or 100% at any precision."""
    shown = format_probability(p, digits)
    zero, hundred = f"{0:.{digits}f}%", f"{100:.{digits}f}%"
    assert shown not in (zero, hundred)
