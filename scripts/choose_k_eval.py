#!/usr/bin/env python3
"""How often `emstream run --components auto` chooses the true K.

    python3 scripts/choose_k_eval.py [CASE ...] [--seeds 10] [--exe target/release/emstream] [--run-args ARGS]

For each case and seed 1..S: draws a stream from a known mixture (data seed
S), runs `emstream run -k auto --seed S` on it, and reads the chosen K and
the BIC per K back with `inspect --json`. Prints one line per case: the true
K, the K chosen on each seed, how many seeds chose the true K, and the BIC
curve of the first seed (BIC minus its minimum, per K). With --json, one JSON
line per case instead.

Cases (the K is chosen on the warm-up; a stream longer than the warm-up
chooses the same K):
  wide32      32-D, 10 overlapping components: means N(0, 2²) per
              coordinate, random SPD covariances of unit scale (eigenvalues
              U(0.2, 1.5) on a random rotation), equal weights; 30,000 points
  small14     2-D, 14 small components (covariance eigenvalues 0.02-0.15,
              means in [-10, 10]² at least 2.5 apart); 1,000 points,
              --max-components 20, the whole file as the warm-up
  seed2d      the seed write-up's two separated 2-D clusters; 20,000 points
  overlap2d   its two overlapping correlated 2-D clusters; 20,000 points
  seed1d      its three 1-D components; 20,000 points
  lattice     2-D integers round(N(c, 0.6²)) around (0, 0), (6, 2), (2, 7),
              equal weights; 300,000 points (gen_rounded.py's lattice)
  sensors3    three integer channels from 4 components, some channels
              coarse against their spread (std 0.3-0.5); 200,000 points
  sensors     the same plus a status channel that is 0 nine times in ten
              and 1-3 otherwise (gen_rounded.py's sensors)

Needs numpy; a developer's tool (the tests do not use it).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def random_spd(rng, d, scale):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * (scale * rng.uniform(0.2, 1.5, size=d))) @ q.T


def truth(case, rng):
    """(weights, means, covariances, n, extra run arguments) of a case."""
    if case == "wide32":
        d, k = 32, 10
        means = rng.normal(0.0, 2.0, size=(k, d))
        covs = [random_spd(rng, d, 1.0) for _ in range(k)]
        return np.ones(k) / k, means, covs, 30_000, []
    if case == "small14":
        k, means = 14, []
        while len(means) < k:
            c = rng.uniform(-10.0, 10.0, size=2)
            if all(np.linalg.norm(c - m) >= 2.5 for m in means):
                means.append(c)
        covs = [random_spd(rng, 2, 0.1) for _ in range(k)]
        return np.ones(k) / k, np.array(means), covs, 1_000, ["--max-components", "20", "--warmup", "1000"]
    if case == "seed2d":
        return (np.array([0.5, 0.5]), np.array([[1.0, 1.0], [7.0, 7.0]]),
                [np.array([[3.0, 2.0], [2.0, 3.0]]), np.array([[2.0, -1.0], [-1.0, 2.0]])], 20_000, [])
    if case == "overlap2d":
        return (np.array([0.5, 0.5]), np.array([[0.0, 0.0], [2.0, 0.0]]),
                [np.array([[1.0, 0.7], [0.7, 1.0]]), np.array([[0.5, 0.4], [0.4, 0.5]])], 20_000, [])
    if case == "seed1d":
        return (np.ones(3) / 3, np.array([[-5.0], [5.0], [0.0]]),
                [np.array([[1.2]]), np.array([[1.8]]), np.array([[1.6]])], 20_000, [])
    if case == "lattice":
        return (np.ones(3) / 3, np.array([[0.0, 0.0], [6.0, 2.0], [2.0, 7.0]]),
                [0.36 * np.eye(2)] * 3, 300_000, [])
    if case in ("sensors3", "sensors"):
        means = np.array([[10.0, 20.0, 5.0], [14.0, 26.0, 8.0], [6.0, 24.0, 2.0], [12.0, 15.0, 11.0]])
        stds = np.array([[0.4, 2.0, 1.5], [0.3, 1.0, 2.0], [1.2, 0.5, 1.0], [2.0, 1.5, 0.45]])
        return np.ones(4) / 4, means, [np.diag(s * s) for s in stds], 200_000, []
    raise SystemExit(f"unknown case {case!r}")


# Cases whose values are rounded to integers (and, for `sensors`, given a
# status channel) after sampling.
ROUNDED = {"lattice", "sensors3", "sensors"}
CASES = ["wide32", "small14", "seed2d", "overlap2d", "seed1d", "lattice", "sensors3", "sensors"]


def sample(weights, means, covs, n, rng):
    z = rng.choice(len(weights), size=n, p=weights)
    x = np.empty((n, means.shape[1]))
    for j in range(len(weights)):
        idx = np.nonzero(z == j)[0]
        x[idx] = rng.multivariate_normal(means[j], covs[j], size=len(idx))
    return x


def run_case(exe, case, seed, tmp, more):
    rng = np.random.default_rng(seed)
    weights, means, covs, n, extra = truth(case, rng)
    data = os.path.join(tmp, f"{case}-{seed}.csv")
    x = sample(weights, means, covs, n, rng)
    if case in ROUNDED:
        x = np.round(x)
        if case == "sensors":
            status = np.where(rng.random(n) < 0.9, 0, rng.integers(1, 4, size=n))
            x = np.column_stack([x, status])
        np.savetxt(data, x, delimiter=",", fmt="%d")
    else:
        np.savetxt(data, x, delimiter=",", fmt="%.6g")
    ck = os.path.join(tmp, f"{case}-{seed}.ckpt")
    with open(data, "rb") as f:
        subprocess.run([exe, "run", "-k", "auto", "--seed", str(seed), "--checkpoint", ck, "--overwrite", *extra, *more],
                       stdin=f, check=True, capture_output=True)
    m = json.loads(subprocess.run([exe, "inspect", "--json", ck], check=True, capture_output=True, text=True).stdout)
    os.remove(data)
    return len(weights), len(m["weights"]), [(b["k"], b["bic"]) for b in m["bic_by_k"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", default=CASES)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--exe", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "emstream"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--run-args", default="", help="more `emstream run` arguments, e.g. \"--max-components 13\"")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases:
            chosen, curve, k_true = [], None, None
            for seed in range(1, a.seeds + 1):
                k_true, k, bic = run_case(a.exe, case, seed, tmp, a.run_args.split())
                chosen.append(k)
                if curve is None:
                    low = min(b for _, b in bic)
                    curve = [(kk, round(b - low, 1)) for kk, b in bic]
            hits = sum(k == k_true for k in chosen)
            if a.json:
                print(json.dumps({"case": case, "k_true": k_true, "chosen": chosen, "hits": hits,
                                  "seeds": a.seeds, "bic_minus_min_seed1": curve}), flush=True)
            else:
                print(f"{case}: true K {k_true}, chosen {chosen}, {hits}/{a.seeds} right; "
                      f"seed 1 BIC - min: " + ", ".join(f"K={kk} {b:g}" for kk, b in curve), flush=True)


if __name__ == "__main__":
    sys.exit(main())
