"""Gaussian mixtures learned from a stream by stepwise (online) EM.

- :class:`GaussianMixture`: a scikit-learn estimator with ``partial_fit``.
- :func:`load_checkpoint`: a fitted estimator from a checkpoint that the
  ``emstream`` program or daemon wrote; ``GaussianMixture.save_checkpoint``
  writes one the program reads.
- :mod:`emstream.river`: the same learner as a River anomaly detector.
"""

from ._emstream import CHECKPOINT_FORMAT_VERSION
from ._mixture import GaussianMixture, load_checkpoint

__all__ = ["GaussianMixture", "load_checkpoint", "CHECKPOINT_FORMAT_VERSION"]
