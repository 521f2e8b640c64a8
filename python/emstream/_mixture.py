"""The scikit-learn estimator over the Rust learner (``emstream._emstream``)."""

import math
import numbers

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._emstream import Learner

_COVARIANCE_TYPES = ("full", "diag", "spherical")


class GaussianMixture(DensityMixin, BaseEstimator):
    """A Gaussian mixture learned from a stream by stepwise (online) EM.

    ``partial_fit`` learns one block of points at a time in bounded memory:
    the first ``warm_up`` points are buffered and fitted by batch EM
    (k-means++ seeds, as scikit-learn's ``GaussianMixture``), every later
    ``batch_size`` points make one stepwise EM step with step size
    ``(t + step_offset) ** -step_decay`` (never below ``step_floor``).
    Until the warm-up buffer is full, the model is the batch EM fit of the
    points buffered so far, made when it is first needed.

    ``fit(X)`` starts afresh (unless ``warm_start``) and learns ``X`` in one
    pass, in row order: its first ``min(warm_up, len(X))`` rows by batch
    EM, the rest by stepwise EM. A dataset no larger than ``warm_up`` is
    therefore fitted by batch EM, as scikit-learn fits it.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : {'full', 'diag', 'spherical'}, default='full'
        Covariance structure of every component.
    reg_covar : float, default=1e-6
        Covariance regularisation, relative to each feature's variance in
        the warm-up buffer (scikit-learn's is absolute).
    tol : float, default=1e-3
        Batch EM on the warm-up buffer stops when an iteration raises the
        average log-likelihood per point by less than ``tol`` (scikit-learn's
        convergence threshold, on the same per-point lower bound). The
        stepwise steps after the warm-up have no tolerance: each block is
        one step.
    max_iter : int, default=100
        Most batch EM iterations per seed on the warm-up buffer.
    n_init : int, default=1
        k-means++ seeds tried on the warm-up buffer; the best fit is kept.
    random_state : int, RandomState instance or None, default=None
        Seeds the learner (and ``sample``).
    warm_start : bool, default=False
        ``fit`` goes on learning from the current model instead of
        starting afresh.
    batch_size : int, default=1000
        Points per stepwise EM step.
    step_decay : float, default=0.95
        Step size decay alpha, in (0.5, 1].
    step_offset : float, default=2.0
        Step size offset t0, in batches.
    step_floor : float, default=0.0
        Smallest step size, in [0, 1): 0 converges on a stationary stream,
        a positive floor forgets old points.
    half_life : float or None, default=None
        Instead of ``step_floor``: the number of points after which an
        observation's influence has halved.
    warm_up : int, default=5000
        Points buffered and fitted by batch EM before stepwise EM starts.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_
        The mixture, shaped as scikit-learn's for each covariance type.
    converged_ : bool
        True once the learner has a model.
    n_steps_ : int
        Stepwise EM steps taken (mini-batches learned).
    n_iter_ : int
        ``n_steps_ + 1``: the warm-up's batch EM fit and the steps after it.
    lower_bound_ : float
        Average log-likelihood per point of the points learned by stepwise
        EM, each under the model before it was learned (NaN before the
        first step).
    n_features_in_, feature_names_in_
        As in every scikit-learn estimator.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        random_state=None,
        warm_start=False,
        batch_size=1000,
        step_decay=0.95,
        step_offset=2.0,
        step_floor=0.0,
        half_life=None,
        warm_up=5000,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.step_decay = step_decay
        self.step_offset = step_offset
        self.step_floor = step_floor
        self.half_life = half_life
        self.warm_up = warm_up

    # -- learning ---------------------------------------------------------

    def _new_learner(self, n_features, warm_up):
        for name in ("n_components", "batch_size", "warm_up", "max_iter", "n_init"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {_COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        step_floor = float(self.step_floor)
        if self.half_life is not None:
            if not float(self.half_life) > 0:
                raise ValueError(f"half_life must be a number of points > 0, got {self.half_life!r}")
            # half_life = batch_size * ln 2 / -ln(1 - floor)
            step_floor = -math.expm1(-self.batch_size * math.log(2) / float(self.half_life))
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        if isinstance(self.random_state, numbers.Integral):
            seed = int(self.random_state) & ((1 << 64) - 1)
        return Learner(
            n_features,
            int(self.n_components),
            self.covariance_type,
            int(self.batch_size),
            float(self.step_decay),
            float(self.step_offset),
            step_floor,
            int(warm_up),
            float(self.reg_covar),
            int(seed),
            int(self.n_init),
            int(self.max_iter),
            float(self.tol),
        )

    def fit(self, X, y=None):
        """Learns ``X`` in one pass (see the class's description); returns ``self``."""
        fitted = self.__sklearn_is_fitted__()
        continuing = self.warm_start and fitted
        X = validate_data(self, X, dtype=np.float64, order="C", reset=not continuing)
        n = X.shape[0]
        if not continuing:
            if n < self.n_components:
                raise ValueError(
                    f"n_samples={n} should be >= n_components={self.n_components}: "
                    "give more points or fewer components"
                )
            self._core = None
            learner = self._new_learner(X.shape[1], min(self.warm_up, n))
        else:
            learner = self._core
        try:
            learner.observe(X)
            learner.flush()
            learner.ensure_model()
        except ValueError as e:
            raise ValueError(f"cannot fit these n_samples={n} points: {e}") from None
        self._core = learner
        return self

    def partial_fit(self, X, y=None):
        """Learns one block of points of the stream; returns ``self``.

        A C-contiguous float64 array is passed to the learner as it is
        (no copy, no conversion); anything else is converted first.
        """
        core = self.__dict__.get("_core")
        if core is None:
            X = validate_data(self, X, dtype=np.float64, order="C", reset=True)
            core = self._new_learner(X.shape[1], self.warm_up)
        else:
            X = self._check_X(X)
        core.observe(X)
        self._core = core
        return self

    # -- scoring ----------------------------------------------------------

    def _check_X(self, X):
        """``X`` as a C-contiguous float64 array of the fitted features."""
        if (
            type(X) is np.ndarray
            and X.dtype == np.float64
            and X.ndim == 2
            and X.flags.c_contiguous
            and "feature_names_in_" not in self.__dict__
        ):
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} "
                    f"is expecting {self.n_features_in_} features as input."
                )
            return X
        return validate_data(self, X, dtype=np.float64, order="C", reset=False)

    def score_samples(self, X):
        """Log density of each point under the mixture."""
        check_is_fitted(self)
        return self._core.score_samples(self._check_X(X))

    def score(self, X, y=None):
        """Average log density per point."""
        return float(self.score_samples(X).mean())

    def predict(self, X):
        """The most responsible component of each point."""
        check_is_fitted(self)
        return self._core.predict(self._check_X(X))

    def predict_proba(self, X):
        """Each component's responsibility for each point (n rows of K)."""
        check_is_fitted(self)
        return self._core.predict_proba(self._check_X(X))

    def bic(self, X):
        """Bayesian information criterion of the model on ``X`` (lower is better)."""
        X = self._check_X(X) if self.__sklearn_is_fitted__() else X
        n = X.shape[0]
        return -2 * self.score(X) * n + self._core.n_free_params() * np.log(n)

    def aic(self, X):
        """Akaike information criterion of the model on ``X`` (lower is better)."""
        X = self._check_X(X) if self.__sklearn_is_fitted__() else X
        return -2 * self.score(X) * X.shape[0] + 2 * self._core.n_free_params()

    def sample(self, n_samples=1):
        """Draws ``n_samples`` points: ``(X, y)``, ``y`` their components, in order of component."""
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        rng = check_random_state(self.random_state)
        weights, means, covariances = self.weights_, self.means_, self.covariances_
        counts = rng.multinomial(n_samples, weights)
        d = means.shape[1]
        parts = []
        for mean, cov, count in zip(means, covariances, counts):
            if self.covariance_type == "full":
                parts.append(rng.multivariate_normal(mean, cov, int(count)))
            else:
                parts.append(mean + rng.standard_normal((int(count), d)) * np.sqrt(cov))
        y = np.concatenate([np.full(c, j, dtype=int) for j, c in enumerate(counts)])
        return np.vstack(parts), y

    # -- fitted attributes, read from the learner ---------------------------

    def __sklearn_is_fitted__(self):
        return self.__dict__.get("_core") is not None

    def _parameters(self):
        if not self.__sklearn_is_fitted__():
            raise AttributeError("the model is not fitted yet: call fit or partial_fit first")
        kind, weights, means, covariances = self._core.parameters()
        k = weights.shape[0]
        d = self._core.dim
        shape = {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[kind]
        return weights, means.reshape(k, d), covariances.reshape(shape), kind

    @property
    def weights_(self):
        return self._parameters()[0]

    @property
    def means_(self):
        return self._parameters()[1]

    @property
    def covariances_(self):
        return self._parameters()[2]

    @property
    def precisions_cholesky_(self):
        _, _, covariances, kind = self._parameters()
        if kind != "full":
            return 1.0 / np.sqrt(covariances)
        eye = np.eye(covariances.shape[1])
        # scikit-learn's convention: the transposed inverse of the
        # covariance's lower Cholesky factor.
        return np.stack([np.linalg.solve(np.linalg.cholesky(c), eye).T for c in covariances])

    @property
    def precisions_(self):
        _, _, covariances, kind = self._parameters()
        if kind != "full":
            return 1.0 / covariances
        return np.stack([p @ p.T for p in self.precisions_cholesky_])

    @property
    def converged_(self):
        self._parameters()
        return True

    @property
    def n_steps_(self):
        self._parameters()
        return int(self._core.n_steps)

    @property
    def n_iter_(self):
        return self.n_steps_ + 1

    @property
    def lower_bound_(self):
        self._parameters()
        return float(self._core.avg_log_lik)

    # -- checkpoints --------------------------------------------------------

    def save_checkpoint(self, path):
        """Writes the learner as an emstream checkpoint file.

        ``emstream inspect``, ``score``, ``plot``, ``diff`` and
        ``run --resume`` read it; the feature names travel as the
        checkpoint's column names.
        """
        check_is_fitted(self)
        names = self.__dict__.get("feature_names_in_")
        self._core.save(str(path), None if names is None else [str(n) for n in names])


def _estimator_of(learner, names):
    options = learner.options()
    gm = GaussianMixture(**options)
    gm._core = learner
    gm.n_features_in_ = learner.dim
    if names is not None:
        gm.feature_names_in_ = np.asarray(names, dtype=object)
    return gm


def load_checkpoint(path):
    """A fitted ``GaussianMixture`` from a checkpoint written by emstream.

    Any checkpoint format the ``emstream`` commands read. A checkpoint
    saved during the warm-up is fitted on its buffered points, as
    ``emstream inspect`` does; ``partial_fit`` goes on learning where the
    stream stopped. The constructor parameters are the learner's options;
    the checkpoint's column names become ``feature_names_in_``.
    """
    learner, names = Learner.load(str(path))
    gm = _estimator_of(learner, names)
    check_is_fitted(gm)
    learner.ensure_model()
    return gm
