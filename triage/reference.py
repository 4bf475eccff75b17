"""Reference data every stage shares: country codes and the region each belongs to.

The world generator draws citizenships from these lists and the features stage maps a
citizenship to its region with them, so both read this one copy (reference data, not the
generator's internals: the features stage never imports ``features/world``).
"""

from __future__ import annotations

__all__ = ["COUNTRIES"]

# Country codes per region, in the order of ``WorldConfig.regions``.
COUNTRIES: tuple[tuple[str, ...], ...] = (
    ("NGA", "GHA", "KEN", "SEN", "ETH"),
    ("JAM", "HTI", "DOM", "TTO"),
    ("MEX", "GTM", "HND", "SLV"),
    ("CHN", "KOR", "JPN", "VNM", "PHL"),
    ("GBR", "DEU", "FRA", "POL", "UKR"),
    ("IRN", "JOR", "SAU", "TUR", "EGY"),
    ("BRA", "COL", "VEN", "PER", "ARG"),
    ("IND", "PAK", "BGD", "NPL", "LKA"),
)
