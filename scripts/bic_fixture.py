#!/usr/bin/env python3
"""Writes crates/emstream-core/src/model/fixtures/bic_sklearn.json: a small buffer and, for every
covariance type and K = 1..5, scikit-learn's fitted GaussianMixture
parameters with its bic() and aic() on that buffer. The Rust tests
(model::select) check the BIC formula on these exact parameters, so CI needs
no Python. Run once, from the project root:

    ~/.judge-env/bin/python scripts/bic_fixture.py
"""
import json

import numpy as np
import sklearn
from sklearn.mixture import GaussianMixture

rng = np.random.default_rng(12)
d, n = 3, 600
centres = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0], [-3.0, 5.0, 4.0]])
counts = [300, 200, 100]
parts = []
for c, m in zip(centres, counts):
    a = rng.normal(size=(d, d))
    parts.append(rng.normal(size=(m, d)) @ (0.3 * np.eye(d) + 0.4 * a) + c)
x = np.vstack(parts)
rng.shuffle(x)

fits = []
for cov in ["full", "diag", "spherical"]:
    for k in range(1, 6):
        g = GaussianMixture(n_components=k, covariance_type=cov, n_init=30,
                            random_state=0, reg_covar=1e-6).fit(x)
        fits.append({
            "covariance": cov,
            "k": k,
            "weights": g.weights_.tolist(),
            "means": g.means_.ravel().tolist(),
            # Laid out like emstream's MixtureParams::covariances.
            "covariances": np.asarray(g.covariances_).ravel().tolist(),
            "bic": float(g.bic(x)),
            "aic": float(g.aic(x)),
            "mean_log_lik": float(g.score(x)),
        })

out = {
    "generator": "scripts/bic_fixture.py",
    "sklearn_version": sklearn.__version__,
    "dim": d,
    "points": x.ravel().tolist(),
    "fits": fits,
}
with open("crates/emstream-core/src/model/fixtures/bic_sklearn.json", "w") as f:
    json.dump(out, f, indent=0)
    f.write("\n")
print(f"wrote {len(fits)} fits on {n} points")
