"""Compile a parsed LightGBM ensemble into lookup tables for exact path-dependent TreeSHAP.

Why tables: a tree's SHAP terms for a row depend only on which side of each split the row
falls, and LightGBM thresholds are few per feature. So every used feature is first coded once
per row (its interval between the model's sorted thresholds, or "missing"), and each tree is cut
into *groups* of leaves (whole subtrees) whose terms depend on a small joint pattern of those
codes. For a group, each feature's codes collapse to the few classes the group can tell apart;
the classes index a dense table holding the group's summed SHAP terms plus the leaf value
reached (for the margin). Explaining a row is then one lookup and one add per group feature,
instead of LightGBM's O(leaves x depth^2) recursion per tree.

A subtree becomes one group when its table has at most ``max_keys`` keys; otherwise its two
children are tried. A single leaf whose path has more unique features than ``LEAF_TABLE_BITS``
is evaluated row by row instead (rare: it needs a very deep, feature-diverse path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from serving.explain.lgbm_trees import ParsedModel, ParsedTree
from serving.explain.treeshap_kernels import fill_group_tables, leaf_tables, shapley_weights
from serving.explain.treeshap_paths import (
    FeatureCoding,
    Leaf,
    feature_coding,
    group_classes,
    mask_bits,
    subtree_leaves,
    tree_features,
    tree_leaves,
)

__all__ = ["DEFAULT_MAX_KEYS", "LEAF_TABLE_BITS", "CompiledEnsemble", "compile_ensemble"]

DEFAULT_MAX_KEYS = 16384
LEAF_TABLE_BITS = 12
_MAX_PATH_FEATURES = 60  # on/off patterns are int64 bitmasks
_TABLE, _PER_ROW = 0, 1


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


@dataclass(frozen=True)
class CompiledEnsemble:
    """Everything the kernels need, as flat arrays (see ``treeshap_kernels.explain_rows``)."""

    n_features: int
    expected_value: float
    # coding: used feature u is column used[u], thresholds thr[thr_off[u] : thr_off[u + 1]]
    used: np.ndarray
    thr_off: np.ndarray
    thr: np.ndarray
    miss: np.ndarray
    code_dtype: type
    # groups, in tree order; group g's features are q in g_fs[g] : g_fe[g]
    g_kind: np.ndarray  # 0 = table, 1 = single leaf evaluated per row
    g_keys: np.ndarray
    g_tab_off: np.ndarray  # float32 SHAP table of g in ``tables``: [feature column, key]
    g_leaf_off: np.ndarray  # float64 leaf value reached per key of g, in ``leaf_values``
    g_fs: np.ndarray
    g_fe: np.ndarray
    g_leaf: np.ndarray  # for kind 1: the leaf
    gf_row: np.ndarray  # row of the code matrix (used-feature index)
    gf_col: np.ndarray  # output column (model feature index)
    gf_lut_off: np.ndarray  # lut[gf_lut_off[q] : gf_lut_off[q + 1]]: code -> key part
    lut: np.ndarray
    tables: np.ndarray
    leaf_values: np.ndarray
    # leaves, for kind-1 groups
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
        return int(self.tables.nbytes + self.leaf_values.nbytes + self.lut.nbytes)


@dataclass
class _Program:
    """Flat lists the compiler appends to; frozen into arrays by ``compile_ensemble``."""

    coding: FeatureCoding
    used_index: dict[int, int]
    max_keys: int
    expected: float = 0.0
    leaf: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in ["d", "v", "z", "z_off", "w", "w_off"]}
    )
    g: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in ["kind", "keys", "fs", "fe", "leaf", "ls", "le"]}
    )
    gf: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in ["row", "col", "lut_off", "ncls", "stride"]}
    )
    gl: dict[str, list] = field(default_factory=lambda: {k: [] for k in ["leaf", "ts", "te"]})
    lt: dict[str, list] = field(default_factory=lambda: {k: [] for k in ["j", "bit_off"]})
    lut: list = field(default_factory=list)
    bits: list = field(default_factory=list)
    lut_len: int = 0
    bits_len: int = 0

    def add_tree(self, tree: ParsedTree) -> None:
        tfeats, left_masks = tree_features(tree, self.coding)
        leaves = tree_leaves(tree, tfeats, left_masks)
        self.expected += _expected_value(tree)
        first = len(self.leaf["d"])
        for leaf in leaves:
            if len(leaf.feats) > _MAX_PATH_FEATURES:
                raise ValueError("a leaf path has more than 60 distinct features")
            self.leaf["d"].append(len(leaf.feats))
            self.leaf["v"].append(leaf.value)
            self.leaf["z_off"].append(len(self.leaf["z"]))
            self.leaf["z"].extend(leaf.z)
            self.leaf["w_off"].append(len(self.leaf["w"]))
            self.leaf["w"].extend(shapley_weights(len(leaf.feats)))

        def split(node: int) -> None:
            ids = subtree_leaves(tree, node) if tree.num_leaves > 1 else [0]
            feats, classes = group_classes(ids, leaves, tfeats)
            size = math.prod(max(classes[f]) + 1 for f in feats)
            if size <= self.max_keys or (node < 0 and len(feats) <= LEAF_TABLE_BITS):
                self._emit(ids, first, leaves, tfeats, feats, classes, _TABLE)
            elif node < 0:
                self._emit(ids, first, leaves, tfeats, feats, classes, _PER_ROW)
            else:
                split(int(tree.left_child[node]))
                split(int(tree.right_child[node]))

        split(0 if tree.num_leaves > 1 else -1)

    def _emit(self, ids, first, leaves: list[Leaf], tfeats, feats, classes, kind) -> None:
        g, gf = self.g, self.gf
        g["kind"].append(kind)
        g["fs"].append(len(gf["row"]))
        g["leaf"].append(first + ids[0] if kind == _PER_ROW else -1)
        stride = 1
        for j, f in enumerate(feats):
            interval = tfeats[f].interval_of_code
            if kind == _PER_ROW:  # the key is the leaf's on/off bitmask
                ncls = 2
                table = mask_bits(leaves[ids[0]].mask[j], tfeats[f].n_intervals)[interval] << j
            else:  # the key is a mixed-radix number over the features' classes
                ncls = max(classes[f]) + 1
                table = _i64(classes[f])[interval] * stride
            gf["row"].append(self.used_index[f])
            gf["col"].append(f)
            gf["lut_off"].append(self.lut_len)
            gf["ncls"].append(ncls)
            gf["stride"].append(stride)
            self.lut.append(table)
            self.lut_len += len(table)
            stride *= ncls
        g["fe"].append(len(gf["row"]))
        g["keys"].append(stride if kind == _TABLE else 0)
        g["ls"].append(len(self.gl["leaf"]))
        for lid in ids:
            leaf = leaves[lid]
            self.gl["leaf"].append(first + lid)
            self.gl["ts"].append(len(self.lt["j"]))
            for f, mask in zip(leaf.feats, leaf.mask, strict=True):
                # class of feature f in this group -> does this leaf's path pass?
                per_class = np.zeros(max(classes[f]) + 1, dtype=np.uint8)
                for i, c in enumerate(classes[f]):
                    per_class[c] = (mask >> i) & 1
                self.lt["j"].append(feats.index(f))
                self.lt["bit_off"].append(self.bits_len)
                self.bits.append(per_class)
                self.bits_len += len(per_class)
            self.gl["te"].append(len(self.lt["j"]))
        g["le"].append(len(self.gl["leaf"]))


def _expected_value(tree: ParsedTree) -> float:
    """LightGBM's Tree::ExpectedValue, same arithmetic and order."""
    if tree.num_leaves == 1:
        return float(tree.leaf_value[0])
    total = float(tree.internal_count[0])
    ev = 0.0
    for count, value in zip(tree.leaf_count.tolist(), tree.leaf_value.tolist(), strict=True):
        ev += (count / total) * value
    return ev


def _fill_tables(p: _Program, g_kind, g_keys, g_fs, g_fe, leaf_arrays):
    """Compute every table: leaf terms for all 2**d patterns, then summed per group key.

    Sums are formed in float64, then the SHAP columns are stored as float32 (half the memory
    and cache traffic; |error| ~1e-7 per value) and the leaf-value column stays float64 so
    the margin is LightGBM's to the last bit.
    """
    leaf_d, leaf_v, z_off, z_flat, w_off, w_flat = leaf_arrays
    widths = np.where(g_kind == _TABLE, g_fe - g_fs + 1, 0) * g_keys
    wide_off = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    wide = np.zeros(int(widths.sum()), dtype=np.float64)
    gl_leaf, g_ls, g_le = _i64(p.gl["leaf"]), _i64(p.g["ls"]), _i64(p.g["le"])
    in_table = np.zeros(len(leaf_d), dtype=bool)
    for gi in np.flatnonzero(g_kind == _TABLE):
        in_table[gl_leaf[g_ls[gi] : g_le[gi]]] = True
    sizes = np.where(in_table, (1 << leaf_d) * leaf_d, 0)
    ltab_off = np.where(in_table, np.concatenate([[0], np.cumsum(sizes)[:-1]]), -1)
    ltab = np.zeros(int(sizes.sum()), dtype=np.float64)
    leaf_tables(leaf_d, leaf_v, z_off, z_flat, w_off, w_flat, ltab_off, ltab)
    t = g_kind == _TABLE
    fill_group_tables(
        g_keys[t], wide_off[t], g_fs[t], g_fe[t],
        _i64(p.gf["ncls"]), _i64(p.gf["stride"]), g_ls[t], g_le[t],
        gl_leaf, _i64(p.gl["ts"]), _i64(p.gl["te"]), _i64(p.lt["j"]), _i64(p.lt["bit_off"]),
        np.concatenate(p.bits) if p.bits else np.zeros(0, dtype=np.uint8),
        leaf_d, leaf_v, ltab_off, ltab, wide,
    )  # fmt: skip
    del ltab
    value_widths = np.where(t, (g_fe - g_fs) * g_keys, 0)
    g_tab_off = np.concatenate([[0], np.cumsum(value_widths)[:-1]]).astype(np.int64)
    g_leaf_off = np.concatenate([[0], np.cumsum(np.where(t, g_keys, 0))[:-1]]).astype(np.int64)
    tables = np.empty(int(value_widths.sum()), dtype=np.float32)
    leaf_values = np.empty(int(np.where(t, g_keys, 0).sum()), dtype=np.float64)
    for gi in np.flatnonzero(t):
        nv, nk = value_widths[gi], g_keys[gi]
        tables[g_tab_off[gi] : g_tab_off[gi] + nv] = wide[wide_off[gi] : wide_off[gi] + nv]
        leaf_values[g_leaf_off[gi] : g_leaf_off[gi] + nk] = wide[
            wide_off[gi] + nv : wide_off[gi] + nv + nk
        ]
    return g_tab_off, tables, g_leaf_off, leaf_values


def compile_ensemble(model: ParsedModel, max_keys: int = DEFAULT_MAX_KEYS) -> CompiledEnsemble:
    """Build the feature coding, groups and tables for ``model``.

    Args:
        model: a parsed single-output LightGBM model.
        max_keys: largest table (number of joint patterns) a multi-leaf group may have. Larger
            means fewer, bigger groups: less work per row but more table memory.

    Returns:
        The compiled ensemble, ready for ``treeshap_kernels.explain_rows``.
    """
    coding = feature_coding(model)
    used = coding.used
    p = _Program(coding=coding, used_index={f: u for u, f in enumerate(used)}, max_keys=max_keys)
    for tree in model.trees:
        p.add_tree(tree)
    max_code = max((coding.n_codes(f) for f in used), default=1)
    leaf_arrays = (
        _i64(p.leaf["d"]),
        np.asarray(p.leaf["v"], dtype=np.float64),
        _i64(p.leaf["z_off"]),
        np.asarray(p.leaf["z"], dtype=np.float64),
        _i64(p.leaf["w_off"]),
        np.asarray(p.leaf["w"], dtype=np.float64),
    )
    g_kind, g_keys, g_fs, g_fe = (_i64(p.g[k]) for k in ("kind", "keys", "fs", "fe"))
    g_tab_off, tables, g_leaf_off, leaf_values = _fill_tables(
        p, g_kind, g_keys, g_fs, g_fe, leaf_arrays
    )
    thr_list = [coding.thresholds[f] for f in used]
    return CompiledEnsemble(
        n_features=model.num_features,
        expected_value=p.expected,
        used=_i64(used),
        thr_off=_i64(np.concatenate([[0], np.cumsum([len(t) for t in thr_list])])),
        thr=np.concatenate(thr_list) if thr_list else np.zeros(0),
        miss=np.array([coding.miss[f] for f in used], dtype=np.int8),
        code_dtype=np.uint8 if max_code <= 256 else np.uint16,
        g_kind=g_kind,
        g_keys=g_keys,
        g_tab_off=g_tab_off,
        g_leaf_off=g_leaf_off,
        g_fs=g_fs,
        g_fe=g_fe,
        g_leaf=_i64(p.g["leaf"]),
        gf_row=_i64(p.gf["row"]),
        gf_col=_i64(p.gf["col"]),
        gf_lut_off=_i64([*p.gf["lut_off"], p.lut_len]),
        lut=np.concatenate([*p.lut, [0]]).astype(np.uint64),
        tables=tables,
        leaf_values=leaf_values,
        leaf_d=leaf_arrays[0],
        leaf_v=leaf_arrays[1],
        z_off=leaf_arrays[2],
        z_flat=leaf_arrays[3],
        w_off=leaf_arrays[4],
        w_flat=leaf_arrays[5],
    )
