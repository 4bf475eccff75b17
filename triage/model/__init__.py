"""The model artifact contract shared by training (writes it) and serving (reads it).

A handful of public names over small modules: the bundle (booster + fitted state), its
calibration and tiers, the linear half of a blended model, and the registry reads.
"""

from triage.model.bundle import (
    BUNDLE_ARTIFACT,
    CHAMPION_ALIAS,
    MODEL_NAME,
    BacklogRiskPyfunc,
    ModelBundle,
    rules_bundle,
    zero_booster,
)
from triage.model.calibration import Calibration
from triage.model.errors import BundleError, FeatureMismatchError, RegisteredModelNotFoundError
from triage.model.linear_part import LinearPart
from triage.model.registry import load_champion, load_model_version, registry_client
from triage.model.rules import RULES, Rule, rule_points, rule_terms
from triage.model.tiers import DEFAULT_TIER_CUTOFFS, Tiers

__all__ = [
    "BUNDLE_ARTIFACT",
    "CHAMPION_ALIAS",
    "DEFAULT_TIER_CUTOFFS",
    "MODEL_NAME",
    "BacklogRiskPyfunc",
    "BundleError",
    "Calibration",
    "FeatureMismatchError",
    "LinearPart",
    "RULES",
    "Rule",
    "ModelBundle",
    "RegisteredModelNotFoundError",
    "Tiers",
    "load_champion",
    "load_model_version",
    "registry_client",
    "rule_points",
    "rule_terms",
    "rules_bundle",
    "zero_booster",
]
