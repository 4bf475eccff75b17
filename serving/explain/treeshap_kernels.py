"""Numba kernels of the table-driven TreeSHAP engine (see ``serving/explain/treeshap_compile.py``).

Path-dependent TreeSHAP splits a tree's SHAP values into one term per leaf. For leaf ``l`` with
unique path features ``F`` (``d = |F|``), cover fractions ``z_j`` and "on" indicators ``o_j``
(the row satisfies every test on ``j`` along the path), feature ``i`` gets

    v_l * (o_i - z_i) * sum_{S subset of F minus i} w(|S|, d) prod_{j in S} o_j prod_{j not in S} z_j

with Shapley weights ``w(k, d) = k! (d-k-1)! / d!``. Because ``o`` is 0/1 the sum is a weighted
sum of the coefficients of ``P(y) = prod_j (z_j + o_j y)`` with the factor for ``i`` divided out,
which ``leaf_contrib`` does in O(d^2). The compile step evaluates it once per distinct pattern;
the per-row kernel ``explain_rows`` only looks up tables and adds.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "ZERO_THRESHOLD",
    "bin_features",
    "explain_rows",
    "fill_group_tables",
    "leaf_contrib",
    "leaf_tables",
    "shapley_weights",
]

# LightGBM's kZeroThreshold is the float literal 1e-35f widened to double (meta.h).
ZERO_THRESHOLD = float(np.float32(1e-35))
_MISSING_NONE, _MISSING_ZERO = 0, 1


def shapley_weights(d: int) -> np.ndarray:
    """Return ``w(k, d) = k! (d-k-1)! / d!`` for ``k = 0..d-1`` (float64)."""
    w = np.empty(max(d, 1), dtype=np.float64)
    if d == 0:
        return w[:0]
    # w(0, d) = 1/d and w(k+1, d) = w(k, d) * (k+1) / (d-k-1): no factorial overflow.
    w[0] = 1.0 / d
    for k in range(d - 1):
        w[k + 1] = w[k] * (k + 1) / (d - k - 1)
    return w


@njit(cache=True, nogil=True)
def leaf_contrib(code, z, w, v, out, p, q):  # pragma: no cover - compiled
    """SHAP terms of one leaf for one on/off pattern ``code`` (bit j = feature j is on).

    ``p`` and ``q`` are scratch buffers of length >= d + 1 (no allocation per call).
    """
    d = z.shape[0]
    p[: d + 1] = 0.0
    p[0] = 1.0
    deg = 0
    for j in range(d):
        zj = z[j]
        if (code >> j) & 1:
            # multiply by (z_j + y)
            p[deg + 1] = p[deg]
            for k in range(deg, 0, -1):
                p[k] = p[k] * zj + p[k - 1]
            p[0] *= zj
            deg += 1
        else:
            for k in range(deg + 1):
                p[k] *= zj
    # Off features all share one value: -v * sum_k w(k) p[k] (the z_i factor cancels).
    off_sum = 0.0
    for k in range(deg + 1):
        if k < d:
            off_sum += w[k] * p[k]
    for i in range(d):
        if (code >> i) & 1:
            zi = z[i]
            # synthetic division of P by (y + z_i), from the top coefficient down
            q[deg - 1] = p[deg]
            for k in range(deg - 1, 0, -1):
                q[k - 1] = p[k] - zi * q[k]
            s = 0.0
            for k in range(deg):
                s += w[k] * q[k]
            out[i] = v * (1.0 - zi) * s
        else:
            out[i] = -v * off_sum


@njit(cache=True, parallel=True)
def leaf_tables(
    leaf_d, leaf_v, z_off, z_flat, w_off, w_flat, tab_off, tab_flat
):  # pragma: no cover
    """Fill, for every table-backed leaf, its terms for all ``2**d`` patterns ([code, j])."""
    for leaf in prange(leaf_d.shape[0]):
        d = leaf_d[leaf]
        if tab_off[leaf] < 0:
            continue
        z = z_flat[z_off[leaf] : z_off[leaf] + d]
        w = w_flat[w_off[leaf] : w_off[leaf] + d]
        out = np.empty(d)
        p = np.empty(d + 1)
        q = np.empty(d + 1)
        base = tab_off[leaf]
        for code in range(1 << d):
            leaf_contrib(code, z, w, leaf_v[leaf], out, p, q)
            for j in range(d):
                tab_flat[base + code * d + j] = out[j]


@njit(cache=True, parallel=True)
def fill_group_tables(
    g_keys,
    g_tab_off,
    g_fs,
    g_fe,
    gf_ncls,
    gf_stride,
    g_ls,
    g_le,
    gl_leaf,
    gl_ts,
    gl_te,
    lt_j,
    lt_bit_off,
    bits,
    leaf_d,
    leaf_v,
    ltab_off,
    ltab,
    tables,
):  # pragma: no cover - compiled
    """Sum the leaf terms of each group for every key into ``tables`` (layout [column, key]).

    Column ``j < m`` is the group's j-th feature; column ``m`` is the leaf value reached (the
    row's tree output when the key's pattern reaches one of the group's leaves, else 0).
    Groups own disjoint slices of ``tables``, so they are filled in parallel.
    """
    for g in prange(g_keys.shape[0]):
        n_keys = g_keys[g]
        fs = g_fs[g]
        m = g_fe[g] - fs
        base = g_tab_off[g]
        code = np.empty(n_keys, dtype=np.int64)
        for gl in range(g_ls[g], g_le[g]):
            leaf = gl_leaf[gl]
            d = leaf_d[leaf]
            ts = gl_ts[gl]
            # the leaf's on/off pattern for every key of the group
            code[:] = 0
            for t in range(ts, gl_te[gl]):
                j = lt_j[t]
                stride = gf_stride[fs + j]
                ncls = gf_ncls[fs + j]
                off = lt_bit_off[t]
                for key in range(n_keys):
                    code[key] |= np.int64(bits[off + (key // stride) % ncls]) << (t - ts)
            row0 = ltab_off[leaf]
            for t in range(ts, gl_te[gl]):
                col = base + lt_j[t] * n_keys
                for key in range(n_keys):
                    tables[col + key] += ltab[row0 + code[key] * d + t - ts]
            full = (np.int64(1) << d) - 1
            col = base + m * n_keys
            for key in range(n_keys):
                if code[key] == full:
                    tables[col + key] += leaf_v[leaf]


@njit(cache=True, parallel=True)
def bin_features(x, used, thr_off, thr, miss, out):  # pragma: no cover - compiled
    """Code each used feature of ``x`` [n, F] into ``out`` [n_used, n].

    Code ``c <= K`` (K thresholds) means ``t[c-1] < x <= t[c]``, so ``x <= t[k]`` iff ``c <= k``;
    code ``K + 1`` is "missing" (take the node's default direction), exactly as LightGBM decides:
    NaN is 0.0 unless the missing type is NaN, and with missing type Zero every |x| <= 1e-35f
    is missing too.
    """
    n = x.shape[0]
    for u in prange(used.shape[0]):
        f = used[u]
        lo = thr_off[u]
        k = thr_off[u + 1] - lo
        mt = miss[u]
        for r in range(n):
            v = np.float64(x[r, f])
            if np.isnan(v):
                if mt != _MISSING_NONE:
                    out[u, r] = k + 1
                    continue
                v = 0.0
            if mt == _MISSING_ZERO and v >= -ZERO_THRESHOLD and v <= ZERO_THRESHOLD:
                out[u, r] = k + 1
                continue
            a = 0
            b = k
            while a < b:  # count thresholds strictly below v
                mid = (a + b) >> 1
                if thr[lo + mid] < v:
                    a = mid + 1
                else:
                    b = mid
            out[u, r] = a


@njit(cache=True, parallel=True)
def explain_rows(
    codes,
    block_rows,
    n_features,
    g_kind,
    g_keys,
    g_tab_off,
    g_leaf_off,
    g_fs,
    g_fe,
    g_leaf,
    gf_row,
    gf_col,
    gf_lut_off,
    lut,
    tables,
    leaf_values,
    leaf_d,
    leaf_v,
    z_off,
    z_flat,
    w_off,
    w_flat,
    out_values,
    out_margin,
    want_values,
):  # pragma: no cover - compiled
    """SHAP values and raw margin for every row of ``codes`` [n_used, n].

    Rows are split into blocks, one per task; within a block the groups are visited in tree
    order, so the margin adds tree outputs in the same order LightGBM's own predict does.
    """
    n = codes.shape[1]
    n_blocks = (n + block_rows - 1) // block_rows
    for b in prange(n_blocks):
        r0 = b * block_rows
        nr = min(n, r0 + block_rows) - r0
        acc = np.zeros((n_features, nr))
        margin = np.zeros(nr)
        key = np.empty(nr, dtype=np.uint64)
        term = np.empty(64)
        p_buf = np.empty(65)
        q_buf = np.empty(65)
        for g in range(g_kind.shape[0]):
            fs = g_fs[g]
            fe = g_fe[g]
            key[:] = 0
            # 1-D slices keep the inner loops free of 2-D index arithmetic; unsigned keys and
            # codes spare numba's negative-index wraparound checks.
            for q in range(fs, fe):
                crow = codes[gf_row[q], r0 : r0 + nr]
                lut_q = lut[gf_lut_off[q] : gf_lut_off[q + 1]]
                for r in range(nr):
                    key[r] += lut_q[crow[r]]
            if g_kind[g] == 0:
                # Column-major tables ([feature, key]): each pass below gathers from one
                # column of at most max_keys floats that stays in L2 while the block's
                # rows stream by (measured ~2x faster than one table row per key).
                base = g_tab_off[g]
                nk = g_keys[g]
                if want_values:
                    for q in range(fs, fe):
                        arow = acc[gf_col[q]]
                        tab = tables[base + (q - fs) * nk : base + (q - fs + 1) * nk]
                        for r in range(nr):
                            arow[r] += tab[key[r]]
                reached = leaf_values[g_leaf_off[g] : g_leaf_off[g] + nk]
                for r in range(nr):
                    margin[r] += reached[key[r]]
            else:
                # A leaf too deep for a 2**d table: evaluate its terms row by row.
                leaf = g_leaf[g]
                d = leaf_d[leaf]
                z = z_flat[z_off[leaf] : z_off[leaf] + d]
                wts = w_flat[w_off[leaf] : w_off[leaf] + d]
                full = (np.uint64(1) << np.uint64(d)) - np.uint64(1)
                for r in range(nr):
                    if want_values:
                        leaf_contrib(np.int64(key[r]), z, wts, leaf_v[leaf], term, p_buf, q_buf)
                        for q in range(fs, fe):
                            acc[gf_col[q], r] += term[q - fs]
                    if key[r] == full:
                        margin[r] += leaf_v[leaf]
        for r in range(nr):
            out_margin[r0 + r] = margin[r]
        if want_values:
            for r in range(nr):
                for f in range(n_features):
                    out_values[r0 + r, f] = acc[f, r]
