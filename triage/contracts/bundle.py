"""Contract of the model artifact, a bundle directory (docs/contracts.md, section 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from triage.contracts.engine import ContractError

if TYPE_CHECKING:  # the model package imports MLflow: only when a bundle is checked
    from triage.model import ModelBundle

__all__ = ["check_bundle"]


def check_bundle(bundle: ModelBundle | str | Path) -> ModelBundle:
    """Check a bundle directory (``model.txt`` + ``bundle.json``) or a loaded bundle.

    Rules: ``feature_names`` non-empty and unique, one per booster input; calibration,
    tiers and the linear half valid (their constructors check x increasing, y in [0, 1]
    non-decreasing, cut-offs increasing, one coefficient per feature); the booster has
    trees; ``model_version`` set.

    Returns:
        The bundle (loaded, when a directory was given).

    Raises:
        ContractError: naming the file, the field and the broken rule.
    """
    from triage.model import BundleError, ModelBundle

    label = "bundle"
    if not isinstance(bundle, ModelBundle):
        directory = Path(bundle)
        label = str(directory / "bundle.json")
        try:
            json.loads((directory / "bundle.json").read_text())
            bundle = ModelBundle.load(directory)
        except (OSError, ValueError, BundleError) as exc:
            raise ContractError(label, "*", "is a readable model bundle", str(exc)) from None
    names = list(bundle.feature_names)
    if not names or len(set(names)) != len(names):
        raise ContractError(label, "feature_names", "non-empty and unique")
    if bundle.booster.num_feature() != len(names):
        raise ContractError(
            label, "feature_names", "one per booster input",
            f"{len(names)} names, booster has {bundle.booster.num_feature()} inputs",
        )  # fmt: skip
    if bundle.booster.num_trees() < 1:
        raise ContractError(label.replace("bundle.json", "model.txt"), "*", "the booster has trees")
    if bundle.linear is not None and bundle.linear.n_features != len(names):
        raise ContractError(label, "linear", "one coefficient per feature")
    if not bundle.model_version:
        raise ContractError(label, "model_version", "is set")
    return bundle
