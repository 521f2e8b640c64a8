#!/usr/bin/env python3
"""The Python package's figures in BENCHMARKS.md: ``partial_fit`` over 1M
8-D points in 1,000-row blocks against scikit-learn's ``fit`` on the same
points (held-out log-likelihood gap and time), and against the Rust learner
fed the same blocks (``crates/emstream-core/examples/learn_blocks.rs``).

    python3 -m venv /tmp/benchenv
    /tmp/benchenv/bin/pip install ./python scikit-learn
    cargo build --release --example learn_blocks
    /tmp/benchenv/bin/python scripts/bench_python.py [--n 1000000] [--rounds 3]

The stream: a 6-component 8-D mixture with full covariances (weights 0.4
down to 0.04, well separated means, random orientations), drawn with a
fixed seed; 100,000 more points held out. The Python and Rust rounds
alternate (paired runs on a shared machine); each learns the whole stream
with a fresh model, timed in CPU time of the process (the learner is
single-threaded, so on an idle machine CPU time is wall time; on a busy one
it is the figure that holds). scikit-learn is timed in wall time and CPU
time (its BLAS may use several threads). Prints one line per round and a
summary.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import emstream

REPO = pathlib.Path(__file__).resolve().parents[1]


def mixture(d=8, k=6, seed=3):
    rng = np.random.default_rng(seed)
    weights = np.array([0.4, 0.2, 0.14, 0.12, 0.1, 0.04])
    means = 6.0 * rng.standard_normal((k, d))
    covs = []
    for j in range(k):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        axes = 0.3 + 1.7 * ((np.arange(d) * 7 + j * 3) % d) / d
        covs.append(q @ np.diag(axes) @ q.T)
    return weights, means, np.array(covs)


def draw(n, seed):
    weights, means, covs = mixture()
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(weights), size=n, p=weights)
    x = np.empty((n, means.shape[1]))
    for j in range(len(weights)):
        rows = labels == j
        x[rows] = rng.multivariate_normal(means[j], covs[j], rows.sum())
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the learners' seed (random_state)")
    ap.add_argument("--learn-blocks", default=str(REPO / "target/release/examples/learn_blocks"))
    args = ap.parse_args()

    x, held_out = draw(args.n, seed=11), draw(100_000, seed=12)
    k, block = 6, args.block
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "points.f64")
        x.astype("<f8").tofile(raw)
        py_times, py_wall, rust_times = [], [], []
        for r in range(args.rounds):
            start, wall = time.process_time(), time.perf_counter()
            gm = emstream.GaussianMixture(k, random_state=args.seed)
            for i in range(0, args.n, block):
                gm.partial_fit(x[i : i + block])
            py_times.append(time.process_time() - start)
            py_wall.append(time.perf_counter() - wall)
            out = subprocess.run(
                [args.learn_blocks, raw, "8", str(k), str(block), str(args.seed), "1", "1"],
                check=True,
                capture_output=True,
                text=True,
            )
            rust = json.loads(out.stdout)
            rust_times.append(rust["cpu_seconds"][0])
            same = np.array_equal(np.array(rust["means"]).reshape(k, 8), gm.means_)
            print(
                f"round {r + 1}: partial_fit {args.n / py_times[-1] / 1e6:.2f} M points/s, "
                f"Rust learner {args.n / rust_times[-1] / 1e6:.2f} M points/s, same means: {same}",
                flush=True,
            )
            if not same:
                sys.exit("the Python and Rust learners disagree on the same blocks")

    start, cpu_start = time.perf_counter(), time.process_time()
    sk = SkGaussianMixture(k, random_state=args.seed).fit(x)
    sk_time, sk_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    ours, theirs = gm.score(held_out), sk.score(held_out)
    py_best, rust_best = min(py_times), min(rust_times)
    print(f"scikit-learn fit: {sk_time:.2f} s wall, {sk_cpu:.2f} s CPU ({sk.n_iter_} iterations, converged {sk.converged_})")
    print(f"held-out log-likelihood per point: emstream {ours:.5f}, scikit-learn {theirs:.5f}, gap {theirs - ours:+.5f} nats")
    print(f"partial_fit: {py_best:.3f} s CPU best of {args.rounds} ({args.n / py_best / 1e6:.2f} M points/s), "
          f"{sk_cpu / py_best:.0f}x faster than scikit-learn's fit in CPU time, "
          f"{sk_time / min(py_wall):.0f}x in wall time ({min(py_wall):.3f} s best)")
    print(f"Rust learner on the same blocks: {rust_best:.3f} s CPU best ({args.n / rust_best / 1e6:.2f} M points/s); "
          f"partial_fit at {100 * rust_best / py_best:.0f} % of it "
          f"(rounds: {', '.join(f'{100 * r / p:.0f} %' for p, r in zip(py_times, rust_times))})")


if __name__ == "__main__":
    main()
