"""emstream.river.GaussianMixture: River's anomaly detector protocol."""

import random

import pytest

from emstream.river import GaussianMixture


def stream(n, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        c = rng.random() < 0.5
        yield {"x": rng.gauss(0.0 if c else 8.0, 1.0), "y": rng.gauss(0.0 if c else 8.0, 1.0)}


def test_learns_one_point_at_a_time_without_river():
    model = GaussianMixture(n_components=2, warm_up=200, batch_size=50)
    assert model.score_one({"x": 0.0, "y": 0.0}) == 0.0
    assert model.predict_one({"x": 0.0, "y": 0.0}) is None
    for x in stream(2000):
        model.learn_one(x)
    inlier, outlier = {"x": 0.1, "y": -0.2}, {"x": 4.0, "y": 30.0}
    assert model.score_one(outlier) > model.score_one(inlier) + 50
    assert model.predict_one({"x": 0.0, "y": 0.0}) != model.predict_one({"x": 8.0, "y": 8.0})
    proba = model.predict_proba_one({"x": 8.0, "y": 8.0})
    assert sum(proba.values()) == pytest.approx(1.0)
    # The feature order is the first point's, whatever a dict's order.
    assert model.score_one({"y": -0.2, "x": 0.1}) == model.score_one(inlier)
    with pytest.raises(ValueError, match="no feature 'y'"):
        model.learn_one({"x": 1.0})


def test_in_a_river_pipeline():
    river = pytest.importorskip("river")
    from river import compose, preprocessing
    from river.base import AnomalyDetector

    model = preprocessing.StandardScaler() | GaussianMixture(n_components=2, warm_up=200, batch_size=50)
    assert isinstance(model, compose.Pipeline)
    assert isinstance(model[-1], AnomalyDetector)
    for x in stream(3000):
        model.learn_one(x)
    assert model.score_one({"x": 4.0, "y": 30.0}) > model.score_one({"x": 0.0, "y": 0.0}) + 10
    # River's own checks of an estimator's parameters and clone.
    clone = model.clone()
    assert clone[-1].n_components == 2 and clone[-1].score_one({"x": 0.0, "y": 0.0}) == 0.0
    assert river.__version__
