#!/usr/bin/env python3
"""Writes a CSV stream of wide points (the wide-point profiles) to stdout.

    python3 scripts/gen_wide.py D K N SEED > wide.csv

A K-component mixture in D dimensions drawn like the learner bench's
`random_full` (means 4 N(0, 1) per coordinate, covariances A Aᵀ / D + 0.5 I
with A standard normal, equal weights), then N points from it, 7 significant
digits. Needs numpy; a developer's tool (the tests do not use it).
"""
import sys

import numpy as np

d, k, n, seed = map(int, sys.argv[1:5])
rng = np.random.default_rng(seed)
means = 4.0 * rng.standard_normal((k, d))
factors = []
for _ in range(k):
    a = rng.standard_normal((d, d))
    factors.append(np.linalg.cholesky(a @ a.T / d + 0.5 * np.eye(d)))
for start in range(0, n, 50_000):
    m = min(50_000, n - start)
    label = rng.integers(0, k, m)
    z = rng.standard_normal((m, d))
    x = np.empty((m, d))
    for j in range(k):
        pick = label == j
        x[pick] = means[j] + z[pick] @ factors[j].T
    np.savetxt(sys.stdout, x, fmt="%.7g", delimiter=",")
