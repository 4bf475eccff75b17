"""Per-tree path facts the TreeSHAP compiler needs: feature intervals, leaf paths, group classes.

Vocabulary shared with ``treeshap_compile``:

- *code*: a row's feature value coded against all of the model's thresholds on that feature
  (``treeshap_kernels.bin_features``); the last code means "missing, take the default side".
- *interval*: the same, but against one tree's thresholds only; a tree cannot tell apart codes
  that fall in the same interval.
- *pass mask*: for a leaf and one of its path features, the set of intervals (as a Python int
  bitmask) whose rows pass every test on that feature along the leaf's path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.explain.lgbm_trees import MISSING_NONE, ParsedModel, ParsedTree

__all__ = [
    "FeatureCoding",
    "Leaf",
    "TreeFeature",
    "feature_coding",
    "group_classes",
    "mask_bits",
    "subtree_leaves",
    "tree_features",
    "tree_leaves",
]


@dataclass(frozen=True)
class FeatureCoding:
    """Sorted distinct thresholds and the missing type of every feature the model splits on."""

    thresholds: dict[int, np.ndarray]
    miss: dict[int, int]

    @property
    def used(self) -> list[int]:
        return sorted(self.thresholds)

    def n_codes(self, f: int) -> int:
        """Codes of feature ``f``: one per interval, plus one for missing unless its type is None."""
        return len(self.thresholds[f]) + 1 + (0 if self.miss[f] == MISSING_NONE else 1)


@dataclass
class Leaf:
    """One leaf of a tree with the features on its root path."""

    value: float
    feats: list[int]  # unique path features, in first-occurrence order
    z: list[float]  # cover fraction per feature (product over its splits on the path)
    mask: list[int]  # pass mask per feature


@dataclass(frozen=True)
class TreeFeature:
    """How one tree sees a feature: its intervals over the global codes."""

    interval_of_code: np.ndarray  # global code -> this tree's interval
    n_intervals: int


def feature_coding(model: ParsedModel) -> FeatureCoding:
    """Collect each feature's thresholds over the whole model."""
    thr_by_f: dict[int, set[float]] = {}
    miss_by_f: dict[int, set[int]] = {}
    for tree in model.trees:
        for f, t, mt in zip(tree.split_feature, tree.threshold, tree.missing_type, strict=True):
            thr_by_f.setdefault(int(f), set()).add(float(t))
            miss_by_f.setdefault(int(f), set()).add(int(mt))
    miss = {}
    for f, kinds in miss_by_f.items():
        if len(kinds) != 1:
            # LightGBM takes the missing type from the feature's bin mapper, so this only
            # happens with a hand-edited model; coding one feature two ways is not supported.
            raise ValueError(f"feature {f} has splits with different missing types")
        miss[f] = next(iter(kinds))
    thresholds = {f: np.array(sorted(t), dtype=np.float64) for f, t in thr_by_f.items()}
    return FeatureCoding(thresholds=thresholds, miss=miss)


def tree_features(tree: ParsedTree, coding: FeatureCoding) -> tuple[dict[int, TreeFeature], list]:
    """Per feature, the tree's own intervals; per internal node, its go-left mask over them."""
    node_k = [
        int(np.searchsorted(coding.thresholds[int(f)], t))
        for f, t in zip(tree.split_feature, tree.threshold, strict=True)
    ]
    ks_by_f: dict[int, list[int]] = {}
    for f, k in zip(tree.split_feature.tolist(), node_k, strict=True):
        ks_by_f.setdefault(f, []).append(k)
    feats: dict[int, TreeFeature] = {}
    positions: dict[int, dict[int, int]] = {}
    for f, ks in ks_by_f.items():
        ks_sorted = np.unique(ks)
        positions[f] = {int(k): i for i, k in enumerate(ks_sorted)}
        # code c lies above global threshold k iff c > k, so its interval counts the tree's
        # thresholds below c
        n_regular = len(coding.thresholds[f]) + 1
        interval = np.searchsorted(ks_sorted, np.arange(n_regular), side="left")
        n_int = len(ks_sorted) + 1
        if coding.miss[f] != MISSING_NONE:
            interval = np.append(interval, n_int)
            n_int += 1
        feats[f] = TreeFeature(interval.astype(np.int64), n_int)
    left_masks = []
    for node, k in enumerate(node_k):
        f = int(tree.split_feature[node])
        mask = (1 << (positions[f][k] + 1)) - 1
        if coding.miss[f] != MISSING_NONE and tree.default_left[node]:
            mask |= 1 << (feats[f].n_intervals - 1)
        left_masks.append(mask)
    return feats, left_masks


def tree_leaves(tree: ParsedTree, tfeats: dict[int, TreeFeature], left_masks: list) -> list[Leaf]:
    """Walk the tree once: per leaf, its unique path features, cover fractions and pass masks.

    Cover fractions use the training row counts, as LightGBM's TreeSHAP does.
    """
    if tree.num_leaves == 1:
        return [Leaf(float(tree.leaf_value[0]), [], [], [])]
    leaves: list[Leaf | None] = [None] * tree.num_leaves
    internal = tree.internal_count.tolist()
    leaf_count = tree.leaf_count.tolist()
    children = list(zip(tree.left_child.tolist(), tree.right_child.tolist(), strict=True))
    split_feature = tree.split_feature.tolist()

    def count(node: int) -> float:
        return float(internal[node] if node >= 0 else leaf_count[~node])

    def walk(node: int, feats: list[int], z: list[float], masks: list[int]) -> None:
        if node < 0:
            leaves[~node] = Leaf(float(tree.leaf_value[~node]), feats, z, masks)
            return
        f = split_feature[node]
        left = left_masks[node]
        right = ((1 << tfeats[f].n_intervals) - 1) & ~left
        for child, goes in zip(children[node], (left, right), strict=True):
            frac = count(child) / count(node)
            if f in feats:  # repeated feature: one path element, fractions multiply
                i = feats.index(f)
                z2, m2 = z.copy(), masks.copy()
                z2[i] *= frac
                m2[i] &= goes
                walk(child, feats, z2, m2)
            else:
                walk(child, [*feats, f], [*z, frac], [*masks, goes])

    walk(0, [], [], [])
    return leaves  # type: ignore[return-value]


def subtree_leaves(tree: ParsedTree, node: int) -> list[int]:
    """Leaf ids under ``node`` (a leaf itself when ``node < 0``)."""
    if node < 0:
        return [~node]
    left, right = int(tree.left_child[node]), int(tree.right_child[node])
    return subtree_leaves(tree, left) + subtree_leaves(tree, right)


def group_classes(
    leaf_ids: list[int], leaves: list[Leaf], tfeats: dict[int, TreeFeature]
) -> tuple[list[int], dict[int, list[int]]]:
    """The group's features and, per feature, interval -> class.

    Intervals with the same pass/fail pattern over all of the group's leaves share a class:
    the group's SHAP terms cannot differ between them, so its table need not either.
    """
    feats: list[int] = []
    masks: dict[int, list[int]] = {}
    for lid in leaf_ids:
        for f, mask in zip(leaves[lid].feats, leaves[lid].mask, strict=True):
            if f not in masks:
                feats.append(f)
                masks[f] = []
            masks[f].append(mask)
    classes = {}
    for f in feats:
        seen: dict[int, int] = {}
        cls = []
        for i in range(tfeats[f].n_intervals):
            sig = 0
            for b, mask in enumerate(masks[f]):
                sig |= ((mask >> i) & 1) << b
            cls.append(seen.setdefault(sig, len(seen)))
        classes[f] = cls
    return feats, classes


def mask_bits(mask: int, n: int) -> np.ndarray:
    """The low ``n`` bits of a Python-int mask as an int64 array (masks may exceed 64 bits)."""
    return np.array([(mask >> i) & 1 for i in range(n)], dtype=np.int64)
