"""Read a LightGBM text model into plain numpy arrays, one record per tree.

The SHAP engine works from the model's *text* form (what ``model.txt`` in the bundle holds)
rather than ``dump_model()``: thresholds and leaf values are printed there with 17 significant
digits, so they round-trip to the exact doubles LightGBM itself compares and sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MISSING_NAN",
    "MISSING_NONE",
    "MISSING_ZERO",
    "ParsedModel",
    "ParsedTree",
    "parse_model",
]

# decision_type bit layout, from LightGBM's tree.h: bit 0 categorical, bit 1 default-left,
# bits 2-3 missing type.
_CATEGORICAL_MASK = 1
_DEFAULT_LEFT_MASK = 2
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2


@dataclass(frozen=True)
class ParsedTree:
    """One tree. Internal nodes are 0..n-2; a child index ``c < 0`` means leaf ``~c``."""

    split_feature: np.ndarray  # int64 [n_internal]
    threshold: np.ndarray  # float64 [n_internal]
    default_left: np.ndarray  # bool [n_internal]
    missing_type: np.ndarray  # int8 [n_internal]
    left_child: np.ndarray  # int64 [n_internal]
    right_child: np.ndarray  # int64 [n_internal]
    leaf_value: np.ndarray  # float64 [n_leaves]
    leaf_count: np.ndarray  # float64 [n_leaves]
    internal_count: np.ndarray  # float64 [n_internal]

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_value)


@dataclass(frozen=True)
class ParsedModel:
    """A single-output LightGBM ensemble: its trees in prediction order and feature names."""

    trees: tuple[ParsedTree, ...]
    feature_names: tuple[str, ...]

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


def _array(fields: dict[str, str], key: str, dtype: type) -> np.ndarray:
    text = fields.get(key, "").strip()
    if not text:
        return np.zeros(0, dtype=dtype)
    return np.array(text.split(" "), dtype=np.float64).astype(dtype)


def _parse_tree(block: str, index: int) -> ParsedTree:
    fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    if int(fields.get("num_cat", "0")) > 0:
        raise ValueError(
            f"tree {index} has categorical splits; the SHAP engine supports numeric splits only"
        )
    if int(fields.get("is_linear", "0")) != 0:
        raise ValueError(f"tree {index} is a linear tree; the SHAP engine does not support them")
    decision = _array(fields, "decision_type", np.int64)
    if np.any(decision & _CATEGORICAL_MASK):
        raise ValueError(
            f"tree {index} has categorical splits; the SHAP engine supports numeric splits only"
        )
    leaf_value = _array(fields, "leaf_value", np.float64)
    if len(leaf_value) != int(fields["num_leaves"]):
        raise ValueError(f"tree {index}: leaf_value does not match num_leaves")
    return ParsedTree(
        split_feature=_array(fields, "split_feature", np.int64),
        threshold=_array(fields, "threshold", np.float64),
        default_left=(decision & _DEFAULT_LEFT_MASK) > 0,
        missing_type=((decision >> 2) & 3).astype(np.int8),
        left_child=_array(fields, "left_child", np.int64),
        right_child=_array(fields, "right_child", np.int64),
        leaf_value=leaf_value,
        leaf_count=_array(fields, "leaf_count", np.float64),
        internal_count=_array(fields, "internal_count", np.float64),
    )


def parse_model(model_text: str) -> ParsedModel:
    """Parse the text of a LightGBM model (``Booster.model_to_string()`` or ``model.txt``).

    Args:
        model_text: the whole model file as a string.

    Returns:
        The trees and feature names.

    Raises:
        ValueError: for models the SHAP engine cannot explain exactly: several outputs per
            iteration (multiclass), random-forest averaging, linear trees, categorical splits.
    """
    head, sep, rest = model_text.partition("\nTree=")
    if not sep and "num_tree_per_iteration" not in head:
        raise ValueError("not a LightGBM text model")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if int(header.get("num_tree_per_iteration", "1")) != 1:
        raise ValueError("only single-output models (binary, regression) are supported")
    if "average_output" in head.splitlines():
        raise ValueError("random-forest (average_output) models are not supported")
    names = tuple(header.get("feature_names", "").split(" "))
    n_features = int(header["max_feature_idx"]) + 1
    if len(names) != n_features:
        names = tuple(f"Column_{i}" for i in range(n_features))
    body = rest.split("\nend of trees", 1)[0] if sep else ""
    blocks = [b for b in ("Tree=" + body).split("\nTree=") if b.strip()] if sep else []
    trees = tuple(_parse_tree(block, i) for i, block in enumerate(blocks))
    return ParsedModel(trees=trees, feature_names=names)
