"""Compile a parsed LightGBM ensemble into lookup tables for exact path-dependent TreeSHAP.

Why tables: a tree's SHAP terms for a row depend only on which side of each split the row
falls, and LightGBM thresholds are few per feature. So every used feature is first coded once
per row (its interval between the model's sorted thresholds, or "missing"), and each tree is cut
into *groups* of leaves (whole subtrees) whose terms depend on a small joint pattern of those
codes. For a group, each feature's codes collapse to the few classes the group can tell apart,
the classes index a dense table holding the group's summed SHAP terms (plus the leaf value
reached, for the margin), and explaining a row is one table lookup and a few adds per group
feature, instead of LightGBM's O(leaves x depth^2) recursion per tree.

A subtree becomes one group when its table has at most ``max_keys`` entries; otherwise its two
children are tried. A single leaf whose path has more unique features than ``LEAF_TABLE_BITS``
is evaluated row by row instead (rare: it needs a very deep, feature-diverse path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.lgbm_text import MISSING_NONE, ParsedModel, ParsedTree
from serving.treeshap_kernels import fill_group_tables, leaf_tables, shapley_weights

__all__ = ["DEFAULT_MAX_KEYS", "LEAF_TABLE_BITS", "CompiledEnsemble", "compile_ensemble"]

DEFAULT_MAX_KEYS = 1024
LEAF_TABLE_BITS = 12
_MAX_PATH_FEATURES = 60  # on/off patterns are int64 bitmasks


@dataclass(frozen=True)
class CompiledEnsemble:
    """Everything the kernels need, as flat arrays (see ``treeshap_kernels.explain_rows``)."""

    n_features: int
    expected_value: float
    # feature coding: used feature u is column used[u] with thresholds thr[thr_off[u]:thr_off[u+1]]
    used: np.ndarray
    thr_off: np.ndarray
    thr: np.ndarray
    miss: np.ndarray
    code_dtype: type
    # groups, in tree order
    g_kind: np.ndarray  # 0 = table, 1 = single leaf evaluated per row
    g_keys: np.ndarray
    g_tab_off: np.ndarray
    g_fs: np.ndarray
    g_fe: np.ndarray
    g_leaf: np.ndarray
    gf_row: np.ndarray  # row of the code matrix (used-feature index)
    gf_col: np.ndarray  # output column (model feature index)
    gf_lut_off: np.ndarray  # gf_lut_off[q] : gf_lut_off[q + 1] is the q-th lookup table
    lut: np.ndarray
    tables: np.ndarray
    # leaves (for per-row groups)
    leaf_d: np.ndarray
    leaf_v: np.ndarray
    z_off: np.ndarray
    z_flat: np.ndarray
    w_off: np.ndarray
    w_flat: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.g_kind)

    @property
    def nbytes(self) -> int:
        return int(self.tables.nbytes + self.lut.nbytes)


@dataclass
class _Leaf:
    value: float
    feats: list[int]  # unique path features, in first-occurrence order
    z: list[float]  # cover fraction per feature (product over its splits on the path)
    mask: list[int]  # per feature: bitmask over the tree's intervals of it that pass the path


@dataclass
class _TreeFeature:
    interval_of_code: np.ndarray  # global code -> this tree's interval of the feature
    n_intervals: int


def _code_directions(model: ParsedModel):
    """Sorted thresholds and missing type per used feature."""
    thr_by_f: dict[int, set[float]] = {}
    miss_by_f: dict[int, set[int]] = {}
    for tree in model.trees:
        for f, t, mt in zip(tree.split_feature, tree.threshold, tree.missing_type, strict=True):
            thr_by_f.setdefault(int(f), set()).add(float(t))
            miss_by_f.setdefault(int(f), set()).add(int(mt))
    used = sorted(thr_by_f)
    thresholds = {f: np.array(sorted(thr_by_f[f]), dtype=np.float64) for f in used}
    miss = {}
    for f in used:
        if len(miss_by_f[f]) != 1:
            # LightGBM takes the missing type from the feature's bin mapper, so this only
            # happens with a hand-edited model; coding one feature two ways is not supported.
            raise ValueError(f"feature {f} has splits with different missing types")
        miss[f] = miss_by_f[f].pop()
    return used, thresholds, miss


def _n_codes(thr: np.ndarray, miss: int) -> int:
    return len(thr) + 1 + (0 if miss == MISSING_NONE else 1)


def _tree_features(tree: ParsedTree, thresholds, miss) -> tuple[dict[int, _TreeFeature], list]:
    """Per feature, the tree's own intervals; per node, its go-left mask over them."""
    idx_by_f: dict[int, set[int]] = {}
    node_idx = []
    for f, t in zip(tree.split_feature, tree.threshold, strict=True):
        k = int(np.searchsorted(thresholds[int(f)], t))
        node_idx.append(k)
        idx_by_f.setdefault(int(f), set()).add(k)
    feats = {}
    for f, ks in idx_by_f.items():
        ks_sorted = np.array(sorted(ks))
        n_regular = len(thresholds[f]) + 1
        # code c lies above threshold k iff c > k, so its interval counts tree thresholds < c
        interval = np.searchsorted(ks_sorted, np.arange(n_regular), side="left")
        n_int = len(ks_sorted) + 1
        if miss[f] != MISSING_NONE:
            interval = np.append(interval, n_int)
            n_int += 1
        feats[f] = _TreeFeature(interval.astype(np.int64), n_int)
    left_masks = []
    for node, k in enumerate(node_idx):
        f = int(tree.split_feature[node])
        pos = int(np.searchsorted(np.array(sorted(idx_by_f[f])), k))
        mask = (1 << (pos + 1)) - 1
        if miss[f] != MISSING_NONE and tree.default_left[node]:
            mask |= 1 << (feats[f].n_intervals - 1)
        left_masks.append(mask)
    return feats, left_masks


def _leaves(tree: ParsedTree, tfeats: dict[int, _TreeFeature], left_masks: list) -> list[_Leaf]:
    """Walk the tree once; per leaf, its unique features, cover fractions and pass masks."""
    leaves: list[_Leaf | None] = [None] * tree.num_leaves
    if tree.num_leaves == 1:
        return [_Leaf(float(tree.leaf_value[0]), [], [], [])]
    counts_internal = tree.internal_count.tolist()
    counts_leaf = tree.leaf_count.tolist()
    lefts = tree.left_child.tolist()
    rights = tree.right_child.tolist()
    split_feature = tree.split_feature.tolist()

    def count(node: int) -> float:
        return float(counts_internal[node] if node >= 0 else counts_leaf[~node])

    def walk(node: int, feats: list[int], z: list[float], masks: list[int]) -> None:
        if node < 0:
            leaves[~node] = _Leaf(float(tree.leaf_value[~node]), feats, z, masks)
            return
        f = split_feature[node]
        full = (1 << tfeats[f].n_intervals) - 1
        left = left_masks[node]
        for child, goes in ((lefts[node], left), (rights[node], full & ~left)):
            frac = count(child) / count(node)
            if f in feats:
                i = feats.index(f)
                z2, m2 = z.copy(), masks.copy()
                z2[i] *= frac
                m2[i] &= goes
                walk(child, feats, z2, m2)
            else:
                walk(child, [*feats, f], [*z, frac], [*masks, goes])

    walk(0, [], [], [])
    return leaves  # type: ignore[return-value]


def _mask_bits(mask: int, n: int) -> np.ndarray:
    """The bits of a Python-int mask as an int64 array (masks may exceed 64 bits)."""
    return np.array([(mask >> i) & 1 for i in range(n)], dtype=np.int64)


def _subtree_leaves(tree: ParsedTree, node: int) -> list[int]:
    if node < 0:
        return [~node]
    return _subtree_leaves(tree, int(tree.left_child[node])) + _subtree_leaves(
        tree, int(tree.right_child[node])
    )


def _group_classes(leaf_ids: list[int], leaves: list[_Leaf], tfeats: dict[int, _TreeFeature]):
    """Per feature of the group: tree interval -> class, where intervals with the same pass/fail
    pattern over all the group's leaves share a class."""
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


def compile_ensemble(model: ParsedModel, max_keys: int = DEFAULT_MAX_KEYS) -> CompiledEnsemble:
    """Build the coding, groups and tables for ``model``.

    Args:
        model: a parsed single-output LightGBM model.
        max_keys: largest table (number of joint patterns) a multi-leaf group may have. Larger
            means fewer, bigger groups: less work per row but more table memory.

    Returns:
        The compiled ensemble, ready for ``treeshap_kernels.explain_rows``.
    """
    used, thresholds, miss = _code_directions(model)
    used_index = {f: u for u, f in enumerate(used)}
    max_code = max((_n_codes(thresholds[f], miss[f]) for f in used), default=1)
    code_dtype = np.uint8 if max_code <= 256 else np.uint16

    # leaf registry (global ids) and group program, accumulated as Python lists
    leaf_d, leaf_v, z_flat, z_off, w_flat, w_off = [], [], [], [], [], []
    g = {k: [] for k in ("kind", "keys", "fs", "fe", "leaf", "ls", "le")}
    gf = {k: [] for k in ("row", "col", "lut_off", "ncls", "stride")}
    gl_leaf, gl_ts, gl_te, lt_j, lt_bit_off = [], [], [], [], []
    lut: list[np.ndarray] = []
    bits: list[np.ndarray] = []
    lut_len = 0
    bits_len = 0
    expected = 0.0

    for tree in model.trees:
        tfeats, left_masks = _tree_features(tree, thresholds, miss)
        leaves = _leaves(tree, tfeats, left_masks)
        # LightGBM's Tree::ExpectedValue, same arithmetic and order.
        if tree.num_leaves == 1:
            expected += float(tree.leaf_value[0])
        else:
            total = float(tree.internal_count[0])
            ev = 0.0
            for i in range(tree.num_leaves):
                ev += (float(tree.leaf_count[i]) / total) * float(tree.leaf_value[i])
            expected += ev
        gid = {}
        for lid, leaf in enumerate(leaves):
            if len(leaf.feats) > _MAX_PATH_FEATURES:
                raise ValueError("a leaf path has more than 60 distinct features")
            gid[lid] = len(leaf_d)
            leaf_d.append(len(leaf.feats))
            leaf_v.append(leaf.value)
            z_off.append(len(z_flat))
            z_flat.extend(leaf.z)
            w_off.append(len(w_flat))
            w_flat.extend(shapley_weights(len(leaf.feats)))

        def emit(leaf_ids: list[int], feats, classes, kind: int) -> None:
            nonlocal lut_len, bits_len
            g["kind"].append(kind)
            g["fs"].append(len(gf["row"]))
            g["leaf"].append(gid[leaf_ids[0]] if kind == 1 else -1)
            stride = 1
            for j, f in enumerate(feats):
                interval = tfeats[f].interval_of_code
                if kind == 1:  # per-row leaf: the key is the on/off bitmask
                    ncls = 2
                    table = _mask_bits(leaves[leaf_ids[0]].mask[j], tfeats[f].n_intervals)
                    table = table[interval] << j
                else:
                    ncls = max(classes[f]) + 1
                    table = np.asarray(classes[f], dtype=np.int64)[interval] * stride
                gf["row"].append(used_index[f])
                gf["col"].append(f)
                gf["lut_off"].append(lut_len)
                gf["ncls"].append(ncls)
                gf["stride"].append(stride)
                lut.append(table)
                lut_len += len(table)
                stride *= ncls
            g["fe"].append(len(gf["row"]))
            g["keys"].append(stride if kind == 0 else 0)
            g["ls"].append(len(gl_leaf))
            for lid in leaf_ids:
                leaf = leaves[lid]
                gl_leaf.append(gid[lid])
                gl_ts.append(len(lt_j))
                for f, mask in zip(leaf.feats, leaf.mask, strict=True):
                    j = feats.index(f)
                    # class of feature f in this group -> does the leaf's path pass?
                    per_class = np.zeros(max(classes[f]) + 1, dtype=np.uint8)
                    for i, c in enumerate(classes[f]):
                        per_class[c] = (mask >> i) & 1
                    lt_j.append(j)
                    lt_bit_off.append(bits_len)
                    bits.append(per_class)
                    bits_len += len(per_class)
                gl_te.append(len(lt_j))
            g["le"].append(len(gl_leaf))

        def split(node: int) -> None:
            ids = _subtree_leaves(tree, node) if tree.num_leaves > 1 else [0]
            feats, classes = _group_classes(ids, leaves, tfeats)
            size = 1
            for f in feats:
                size *= max(classes[f]) + 1
            if size <= max_keys or (node < 0 and len(feats) <= LEAF_TABLE_BITS):
                emit(ids, feats, classes, 0)
            elif node < 0:
                emit(ids, feats, classes, 1)
            else:
                split(int(tree.left_child[node]))
                split(int(tree.right_child[node]))

        split(0 if tree.num_leaves > 1 else -1)

    leaf_d_a = np.array(leaf_d, dtype=np.int64)
    leaf_v_a = np.array(leaf_v, dtype=np.float64)
    z_off_a = np.array(z_off, dtype=np.int64)
    z_flat_a = np.array(z_flat, dtype=np.float64)
    w_off_a = np.array(w_off, dtype=np.int64)
    w_flat_a = np.array(w_flat, dtype=np.float64)
    g_kind = np.array(g["kind"], dtype=np.int64)
    g_keys = np.array(g["keys"], dtype=np.int64)
    g_fs = np.array(g["fs"], dtype=np.int64)
    g_fe = np.array(g["fe"], dtype=np.int64)
    widths = np.where(g_kind == 0, g_fe - g_fs + 1, 0) * g_keys
    g_tab_off = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    tables = np.zeros(int(widths.sum()), dtype=np.float64)

    # Terms of every table-backed leaf for all 2**d on/off patterns, then sum them per group.
    table_leaves = np.zeros(len(leaf_d), dtype=bool)
    gl_leaf_a = np.array(gl_leaf, dtype=np.int64)
    g_ls = np.array(g["ls"], dtype=np.int64)
    g_le = np.array(g["le"], dtype=np.int64)
    for gi in np.flatnonzero(g_kind == 0):
        table_leaves[gl_leaf_a[g_ls[gi] : g_le[gi]]] = True
    sizes = np.where(table_leaves, (1 << leaf_d_a) * leaf_d_a, 0)
    ltab_off = np.where(table_leaves, np.concatenate([[0], np.cumsum(sizes)[:-1]]), -1)
    ltab = np.zeros(int(sizes.sum()), dtype=np.float64)
    leaf_tables(leaf_d_a, leaf_v_a, z_off_a, z_flat_a, w_off_a, w_flat_a, ltab_off, ltab)
    table_groups = g_kind == 0
    fill_group_tables(
        g_keys[table_groups],
        g_tab_off[table_groups],
        g_fs[table_groups],
        g_fe[table_groups],
        np.array(gf["ncls"], dtype=np.int64),
        np.array(gf["stride"], dtype=np.int64),
        g_ls[table_groups],
        g_le[table_groups],
        gl_leaf_a,
        np.array(gl_ts, dtype=np.int64),
        np.array(gl_te, dtype=np.int64),
        np.array(lt_j, dtype=np.int64),
        np.array(lt_bit_off, dtype=np.int64),
        np.concatenate(bits) if bits else np.zeros(0, dtype=np.uint8),
        leaf_d_a,
        leaf_v_a,
        ltab_off,
        ltab,
        tables,
    )
    thr_list = [thresholds[f] for f in used]
    return CompiledEnsemble(
        n_features=model.num_features,
        expected_value=expected,
        used=np.array(used, dtype=np.int64),
        thr_off=np.concatenate([[0], np.cumsum([len(t) for t in thr_list])]).astype(np.int64),
        thr=np.concatenate(thr_list) if thr_list else np.zeros(0),
        miss=np.array([miss[f] for f in used], dtype=np.int8),
        code_dtype=code_dtype,
        g_kind=g_kind,
        g_keys=g_keys,
        g_tab_off=g_tab_off,
        g_fs=g_fs,
        g_fe=g_fe,
        g_leaf=np.array(g["leaf"], dtype=np.int64),
        gf_row=np.array(gf["row"], dtype=np.int64),
        gf_col=np.array(gf["col"], dtype=np.int64),
        gf_lut_off=np.array([*gf["lut_off"], lut_len], dtype=np.int64),
        lut=np.concatenate([*lut, [0]]).astype(np.uint64),
        tables=tables,
        leaf_d=leaf_d_a,
        leaf_v=leaf_v_a,
        z_off=z_off_a,
        z_flat=z_flat_a,
        w_off=w_off_a,
        w_flat=w_flat_a,
    )
