"""The stepwise EM learner as a River anomaly detector.

``GaussianMixture`` learns one point (a dict of feature name to number) at
a time with ``learn_one``; ``score_one`` is the point's negative log
density under the current model (higher = more anomalous, as River's
anomaly detectors score), and ``predict_one`` its most responsible
component. It composes in River pipelines, e.g.
``preprocessing.StandardScaler() | GaussianMixture(n_components=3)``.

The feature order is the first point's; later points must have the same
features. Until the warm-up buffer is full there is no model:
``score_one`` is 0.0 and ``predict_one`` None.
"""

import numpy as np

from . import _mixture

try:
    from river.base import AnomalyDetector as _Base
except ImportError:
    try:  # River before 0.22
        from river.anomaly.base import AnomalyDetector as _Base
    except ImportError:  # River is optional: the class works without it.
        _Base = object


class GaussianMixture(_Base):
    """Stepwise EM over a stream of dicts; see :class:`emstream.GaussianMixture`
    for the parameters."""

    def __init__(
        self,
        n_components=2,
        covariance_type="full",
        batch_size=100,
        warm_up=500,
        step_decay=0.95,
        step_offset=2.0,
        step_floor=0.0,
        reg_covar=1e-6,
        n_init=1,
        max_iter=100,
        tol=1e-3,
        seed=0,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.batch_size = batch_size
        self.warm_up = warm_up
        self.step_decay = step_decay
        self.step_offset = step_offset
        self.step_floor = step_floor
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self._features = None
        self._learner = None

    def _row(self, x):
        if self._features is None:
            self._features = tuple(x)
            if not self._features:
                raise ValueError("a point needs at least one feature")
        try:
            row = [float(x[f]) for f in self._features]
        except KeyError as e:
            raise ValueError(f"the point has no feature {e.args[0]!r}; the model's are {list(self._features)}") from None
        return np.array([row], dtype=np.float64)

    def learn_one(self, x):
        row = self._row(x)
        if self._learner is None:
            self._learner = _mixture.GaussianMixture(
                self.n_components,
                covariance_type=self.covariance_type,
                batch_size=self.batch_size,
                warm_up=self.warm_up,
                step_decay=self.step_decay,
                step_offset=self.step_offset,
                step_floor=self.step_floor,
                reg_covar=self.reg_covar,
                n_init=self.n_init,
                max_iter=self.max_iter,
                tol=self.tol,
                random_state=self.seed,
            )._new_learner(row.shape[1], self.warm_up)
        self._learner.observe(row)

    def _ready(self):
        return self._learner is not None and self._learner.has_model()

    def score_one(self, x):
        if not self._ready():
            return 0.0
        return -float(self._learner.score_samples(self._row(x))[0])

    def predict_one(self, x):
        if not self._ready():
            return None
        return int(self._learner.predict(self._row(x))[0])

    def predict_proba_one(self, x):
        if not self._ready():
            return {}
        return dict(enumerate(self._learner.predict_proba(self._row(x))[0].tolist()))
