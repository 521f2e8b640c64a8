#!/usr/bin/env python3
"""ROC-AUC of `emstream run --score` anomaly ranking, `-k auto` against fixed K.

    python3 scripts/anomaly_auc.py [STREAM ...] [--n 60000] [--seed 1] [--max-k 8]
                                   [--exe target/release/emstream]

Each stream is drawn from a known mixture with about 2 % injected anomalies
of several kinds, labelled:

  far       a point well outside the data (uniform in a box three times the
            data's range, at least 6 standard deviations from every mean)
  between   the midpoint of two component means, plus a little noise
  offgrid   (quantized streams) a normal point moved half a step off its
            sensor's resolution on one channel
  stuck     a normal point repeated 10 times in a row (the 9 repeats are
            the anomalies)

The stream is piped through `emstream run --score --score-keep @line` (test-
then-train: every point is scored by the model before it learns from it)
once with `-k auto` and once per fixed K = 1..MAX_K, all with the same
`--seed`; points are ranked by their log-likelihood (lowest first) and the
ROC-AUC against the labels is printed per run, with the best fixed K and
auto's gap to it. Streams:

  cont2d        2-D, 3 continuous clusters
  cont8d        8-D, 5 continuous clusters, random SPD covariances
  int2d         2-D integers: round(N(c, 0.6²)) around 3 centres
  sensor        3 integer channels from 4 components (one channel coarse
                against its spread: std 0.3-0.5) and a status channel that
                is 0 nine times in ten, 1-3 otherwise

Needs numpy; a developer's tool (the tests do not use it).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np


def random_spd(rng, d, scale):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * (scale * rng.uniform(0.2, 1.5, size=d))) @ q.T


def mixture(name, rng):
    """(weights, means, covs, step or None per channel, status channel?)."""
    if name == "cont2d":
        means = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 7.0]])
        return np.ones(3) / 3, means, [random_spd(rng, 2, 1.0) for _ in range(3)], None, False
    if name == "cont8d":
        means = rng.normal(0.0, 3.0, size=(5, 8))
        return np.ones(5) / 5, means, [random_spd(rng, 8, 1.0) for _ in range(5)], None, False
    if name == "int2d":
        means = np.array([[0.0, 0.0], [5.0, 0.0], [2.0, 5.0]])
        return np.ones(3) / 3, means, [0.36 * np.eye(2)] * 3, 1.0, False
    if name == "sensor":
        means = np.array([[20.0, 50.0, 3.0], [25.0, 40.0, 5.0], [30.0, 55.0, 4.0], [22.0, 60.0, 6.0]])
        covs = []
        for _ in range(4):
            s = np.diag([rng.uniform(1.5, 3.0), rng.uniform(2.0, 4.0), rng.uniform(0.3, 0.5)])
            covs.append(s @ s)
        return np.array([0.4, 0.3, 0.2, 0.1]), means, covs, 1.0, True
    raise SystemExit(f"unknown stream {name!r}")


STREAMS = ["cont2d", "cont8d", "int2d", "sensor"]
KINDS = ["far", "between", "offgrid", "stuck"]


def stream(name, n, rng):
    """Rows (n + repeats, d) and labels (0 normal, else 1 + the index of
    the anomaly's kind in KINDS)."""
    w, means, covs, step, status = mixture(name, rng)
    k, d = means.shape
    z = rng.choice(k, size=n, p=w)
    x = np.empty((n, d))
    for j in range(k):
        idx = np.nonzero(z == j)[0]
        x[idx] = rng.multivariate_normal(means[j], covs[j], size=len(idx))
    if step is not None:
        x = np.round(x / step) * step
    if status:
        s = np.where(rng.random(n) < 0.9, 0.0, rng.integers(1, 4, size=n).astype(float))
        x = np.column_stack([x, s])
    d_all = x.shape[1]
    lo, hi = x.min(axis=0), x.max(axis=0)
    sd = np.sqrt(max(np.max(np.diag(c)) for c in covs))
    rows, labels = [], []
    kinds = [kd for kd in KINDS if kd != "offgrid" or step is not None]
    # The first 10 % stays clean: the warm-up learns from normal points.
    start = n // 10
    events = {i: kinds[rng.integers(len(kinds))] for i in rng.choice(np.arange(start, n), size=n // 200, replace=False)}
    for i in range(n):
        rows.append(x[i]); labels.append(0)
        kind = events.get(i)
        code = 1 + KINDS.index(kind) if kind else 0
        if kind == "far":
            while True:
                p = rng.uniform(lo - (hi - lo), hi + (hi - lo))
                if np.min(np.linalg.norm(means - p[:d], axis=1)) > 6 * sd:
                    break
            if step is not None:
                p = np.round(p / step) * step
            rows.append(p); labels.append(code)
        elif kind == "between":
            a, b = rng.choice(k, size=2, replace=False)
            p = x[i].copy()
            p[:d] = (means[a] + means[b]) / 2 + rng.normal(0.0, 0.1 * sd, size=d)
            if step is not None:
                p[:d] = np.round(p[:d] / step) * step
            rows.append(p); labels.append(code)
        elif kind == "offgrid":
            p = x[i].copy()
            p[rng.integers(d)] += step / 2
            rows.append(p); labels.append(code)
        elif kind == "stuck":
            for _ in range(9):
                rows.append(x[i].copy()); labels.append(code)
    return np.array(rows), np.array(labels), len(w), step


def auc(scores, labels):
    """ROC-AUC of ranking by `scores` (higher = more anomalous), ties averaged."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def run_auc(exe, path, k_args, seed, labels):
    """AUC of all anomalies, then of each kind (NaN when absent), against
    the normal points."""
    with open(path, "rb") as f:
        out = subprocess.run([exe, "run", *k_args, "--seed", str(seed), "--score", "--score-keep", "@line"],
                             stdin=f, check=True, capture_output=True).stdout
    ll = np.full(len(labels), np.nan)
    for line in out.decode().splitlines():
        line_no, _label, value = line.split(",")[:3]
        ll[int(line_no) - 1] = float(value)
    ok = ~np.isnan(ll)
    out = [auc(-ll[ok], (labels[ok] > 0).astype(int))]
    for code in range(1, len(KINDS) + 1):
        pick = ok & ((labels == 0) | (labels == code))
        out.append(auc(-ll[pick], (labels[pick] == code).astype(int)) if (labels == code).any() else float("nan"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("streams", nargs="*", default=STREAMS)
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-k", type=int, default=8)
    ap.add_argument("--exe", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "emstream"))
    a = ap.parse_args()
    kinds = " | ".join(f"{kd}: auto / best K" for kd in KINDS)
    print(f"| stream | true K | anomalies | -k auto | best fixed K | auto − best | {kinds} | all, K = 1..{a.max_k} |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(KINDS) + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.streams:
            rng = np.random.default_rng(a.seed)
            x, labels, k_true, step = stream(name, a.n, rng)
            path = os.path.join(tmp, name + ".csv")
            fmt = "%.0f" if step == 1.0 else "%.6g"
            np.savetxt(path, x, delimiter=",", fmt=fmt)
            auto = run_auc(a.exe, path, ["-k", "auto"], a.seed, labels)
            fixed = [run_auc(a.exe, path, ["-k", str(k)], a.seed, labels) for k in range(1, a.max_k + 1)]
            best = int(np.argmax([f[0] for f in fixed]))
            per_kind = " | ".join("" if np.isnan(auto[c]) else f"{auto[c]:.3f} / {fixed[best][c]:.3f}"
                                  for c in range(1, len(KINDS) + 1))
            print(f"| {name} | {k_true} | {(labels > 0).sum()} | {auto[0]:.4f} | {best + 1} ({fixed[best][0]:.4f}) | "
                  f"{auto[0] - fixed[best][0]:+.4f} | {per_kind} | " + " ".join(f"{f[0]:.3f}" for f in fixed) + " |",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
