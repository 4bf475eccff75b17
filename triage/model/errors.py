"""Errors of the model artifact contract: one base class, so callers can catch them all."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BundleError", "FeatureMismatchError", "RegisteredModelNotFoundError"]


class BundleError(Exception):
    """A bundle cannot be read, or is inconsistent with itself."""


class FeatureMismatchError(BundleError, ValueError):
    """The columns handed to the model do not match its ``feature_names``."""

    def __init__(self, missing: Iterable[str] = (), extra: Iterable[str] = (), detail: str = ""):
        self.missing = sorted(missing)
        self.extra = sorted(extra)
        parts = [detail] if detail else []
        if self.missing:
            parts.append(f"missing {len(self.missing)} column(s): {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"unexpected {len(self.extra)} column(s): {', '.join(self.extra)}")
        super().__init__(
            "feature table does not match the model's feature_names; " + "; ".join(parts)
        )


class RegisteredModelNotFoundError(BundleError, LookupError):
    """The registered model, version or alias asked for does not exist in the registry."""
