"""Experiment helper, not part of the package: generate a world with shifted rates.

    .venv/bin/python docs/experiments/make_world.py DIR --seed 13 --scale small \
        --fault-factor 2 --p-random-audit 0.025

Then ``triage features --data-dir DIR`` as usual.
"""

import argparse
from dataclasses import fields, replace

from features.world import SCALES, WorldConfig, generate_world
from features.world.config import FaultRates
from triage.cliutil import paths_for


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--fault-factor", type=float, default=1.0)
    ap.add_argument("--p-random-audit", type=float, default=None)
    ap.add_argument("--concern-intercept", type=float, default=None)
    a = ap.parse_args()
    base = FaultRates()
    faults = FaultRates(
        **{f.name: min(getattr(base, f.name) * a.fault_factor, 0.9) for f in fields(base)}
    )
    cfg = WorldConfig(seed=a.seed, scale=SCALES[a.scale], faults=faults)
    if a.p_random_audit is not None:
        cfg = replace(cfg, p_random_audit=a.p_random_audit)
    if a.concern_intercept is not None:
        cfg = replace(cfg, concern_intercept=a.concern_intercept)
    m = generate_world(cfg, paths_for(a.dir), force=True)
    print(a.dir, m["open_cases"], "open cases")


if __name__ == "__main__":
    main()
