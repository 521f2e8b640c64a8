"""emstream.GaussianMixture as a scikit-learn estimator."""

import copy
import pickle
import threading
import time
import tracemalloc

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

import emstream
from emstream._emstream import Learner

# No check is expected to fail: every entry here would need its reason.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [
        emstream.GaussianMixture(),
        emstream.GaussianMixture(n_components=2, covariance_type="diag"),
        emstream.GaussianMixture(n_components=2, covariance_type="spherical", warm_up=10, batch_size=5),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


def two_clusters(n, seed=0, d=2):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(0.0, 1.0, (n // 2, d)), rng.normal(6.0, 0.5, (n - n // 2, d))])
    rng.shuffle(x)
    return x


def test_partial_fit_learns_the_stream_in_blocks():
    x = two_clusters(30_000)
    gm = emstream.GaussianMixture(2, random_state=1)
    for start in range(0, len(x), 1000):
        assert gm.partial_fit(x[start : start + 1000]) is gm
    # 5000 warm-up points, then 25 batches of 1000.
    assert gm.n_steps_ == 25
    assert gm.n_iter_ == 26
    means = gm.means_[np.argsort(gm.means_[:, 0])]
    np.testing.assert_allclose(means, [[0, 0], [6, 6]], atol=0.05)
    np.testing.assert_allclose(np.sort(gm.weights_), [0.5, 0.5], atol=0.02)
    assert np.isfinite(gm.lower_bound_) and gm.converged_
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        gm.partial_fit(np.zeros((10, 3)))


def test_during_the_warm_up_the_model_is_the_fit_of_the_buffer():
    x = two_clusters(600)
    gm = emstream.GaussianMixture(2, random_state=3).partial_fit(x[:300])
    assert gm.n_steps_ == 0
    early = gm.means_
    batch = emstream.GaussianMixture(2, random_state=3, warm_up=300).fit(x[:300])
    np.testing.assert_array_equal(early, batch.means_)
    # More points replace the early fit.
    gm.partial_fit(x[300:])
    assert not np.array_equal(gm.means_, early)


@pytest.mark.parametrize("kind", ["full", "diag", "spherical"])
def test_fit_matches_scikit_learn_on_a_small_dataset(kind):
    x = two_clusters(2000, d=3)
    ours = emstream.GaussianMixture(2, covariance_type=kind, random_state=0).fit(x)
    theirs = SkGaussianMixture(2, covariance_type=kind, random_state=0).fit(x)
    order = np.argsort(ours.means_[:, 0])
    ref = np.argsort(theirs.means_[:, 0])
    np.testing.assert_allclose(ours.means_[order], theirs.means_[ref], atol=1e-3)
    np.testing.assert_allclose(ours.covariances_[order], theirs.covariances_[ref], atol=1e-3)
    np.testing.assert_allclose(ours.precisions_cholesky_[order], theirs.precisions_cholesky_[ref], rtol=1e-3)
    np.testing.assert_allclose(ours.precisions_[order], theirs.precisions_[ref], rtol=1e-3)
    assert ours.score(x) == pytest.approx(theirs.score(x), abs=1e-4)
    assert ours.bic(x) == pytest.approx(theirs.bic(x), rel=1e-5)
    assert ours.aic(x) == pytest.approx(theirs.aic(x), rel=1e-5)
    proba = ours.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), ours.predict(x))


def test_tol_stops_the_warm_up_fit_and_travels_with_the_model(tmp_path):
    # Overlapping clusters: EM needs many iterations after k-means.
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (1500, 3)), rng.normal(1.2, 0.5, (1500, 3))])
    rng.shuffle(x)
    loose = emstream.GaussianMixture(2, tol=10.0, random_state=0).fit(x)
    tight = emstream.GaussianMixture(2, tol=0.0, random_state=0).fit(x)
    # A tolerance no iteration can meet stops the fit before the tight one
    # converged: a lower average log-likelihood on the same points.
    assert loose.score(x) < tight.score(x)
    theirs = SkGaussianMixture(2, tol=1e-8, max_iter=1000, random_state=0).fit(x)
    assert tight.score(x) == pytest.approx(theirs.score(x), abs=1e-6)
    # At the default tolerance, scikit-learn's default stops at the same place.
    ours = emstream.GaussianMixture(2, random_state=0).fit(x)
    assert ours.score(x) == pytest.approx(SkGaussianMixture(2, random_state=0).fit(x).score(x), abs=1e-4)
    gm = emstream.GaussianMixture(2, tol=2.5e-5, random_state=0).fit(x)
    assert pickle.loads(pickle.dumps(gm)).get_params()["tol"] == 2.5e-5
    gm.save_checkpoint(tmp_path / "m.ckpt")
    assert emstream.load_checkpoint(tmp_path / "m.ckpt").get_params()["tol"] == 2.5e-5
    for bad in [-1e-3, float("nan"), float("inf"), "1e-3", True]:
        with pytest.raises(ValueError, match="tol"):
            emstream.GaussianMixture(2, tol=bad).fit(x)


def test_fit_starts_afresh_unless_warm_start():
    x = two_clusters(8000)
    gm = emstream.GaussianMixture(2, random_state=0, warm_up=2000).fit(x)
    assert gm.n_steps_ == 6
    gm.fit(x)
    assert gm.n_steps_ == 6
    gm.set_params(warm_start=True).fit(x)
    assert gm.n_steps_ == 14


def test_sample_draws_from_the_mixture():
    gm = emstream.GaussianMixture(2, random_state=0).fit(two_clusters(4000))
    x, y = gm.sample(20_000)
    assert x.shape == (20_000, 2) and y.shape == (20_000,)
    assert (np.diff(y) >= 0).all()
    for j in range(2):
        np.testing.assert_allclose(x[y == j].mean(axis=0), gm.means_[j], atol=0.05)


def test_pickle_and_deepcopy_keep_every_score_to_the_bit():
    x = two_clusters(12_345)
    for gm in [
        emstream.GaussianMixture(2, random_state=0).partial_fit(x),
        emstream.GaussianMixture(2, random_state=0).partial_fit(x[:100]),  # warm-up only
    ]:
        s = gm.score_samples(x)
        for other in [pickle.loads(pickle.dumps(gm)), copy.deepcopy(gm)]:
            np.testing.assert_array_equal(other.score_samples(x), s)
            # Both go on learning identically.
            more = two_clusters(3000, seed=9)
            other.partial_fit(more)
            twin = copy.deepcopy(gm).partial_fit(more)
            np.testing.assert_array_equal(other.score_samples(x), twin.score_samples(x))


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.array([[np.nan, 1.0]]), ValueError, "NaN"),
        (np.array([[np.inf, 1.0]]), ValueError, "infinity"),
        (np.zeros(2), ValueError, "Expected 2D array"),
        (np.zeros((2, 2, 2)), ValueError, "3"),
        (np.zeros((0, 2)), ValueError, "0 sample"),
        (np.array([["a", "b"]], dtype=object), ValueError, "could not convert"),
        (np.zeros((3, 3)), ValueError, "X has 3 features"),
    ],
)
def test_bad_input_is_a_python_error(bad, error, message):
    gm = emstream.GaussianMixture(2, random_state=0).fit(two_clusters(100))
    for method in (gm.partial_fit, gm.predict, gm.predict_proba, gm.score_samples):
        with pytest.raises(error, match=message):
            method(bad)


def test_the_extension_checks_what_it_is_given():
    core = Learner(2, 2, "full", 10, 0.95, 2.0, 0.0, 20, 1e-6, 0, 1, 100, 1e-4)
    with pytest.raises(TypeError, match="C-contiguous"):
        core.observe(np.zeros((30, 2), order="F"))
    with pytest.raises(TypeError):
        core.observe(np.zeros((30, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        core.observe(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="no points yet"):
        core.score_samples(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="covariance_type"):
        Learner(2, 2, "tied", 10, 0.95, 2.0, 0.0, 20, 1e-6, 0, 1, 100, 1e-4)
    with pytest.raises(ValueError, match="step_decay"):
        Learner(2, 2, "full", 10, 0.4, 2.0, 0.0, 20, 1e-6, 0, 1, 100, 1e-4)
    with pytest.raises(ValueError, match="warmup"):
        Learner(2, 5, "full", 10, 0.95, 2.0, 0.0, 3, 1e-6, 0, 1, 100, 1e-4)
    with pytest.raises(ValueError, match="init_tol"):
        Learner(2, 2, "full", 10, 0.95, 2.0, 0.0, 20, 1e-6, 0, 1, 100, -1.0)
    with pytest.raises(ValueError, match="checkpoint|magic|short"):
        Learner.from_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="distinct"):
        emstream.GaussianMixture(3).fit(np.ones((10, 2)))


def test_a_contiguous_float64_block_is_not_copied():
    x = two_clusters(200_000, d=8)
    gm = emstream.GaussianMixture(2, random_state=0).partial_fit(x[:10_000])
    tracemalloc.start()
    try:
        gm.partial_fit(x)
        gm.score_samples(x[:1000])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # x is 12.8 MB; the scores of 1000 points 8 kB.
    assert peak < 1_000_000, peak


def test_the_gil_is_released_while_learning():
    x = two_clusters(400_000, d=8)
    gm = emstream.GaussianMixture(4, random_state=0, warm_up=1000).partial_fit(x[:1000])
    done = threading.Event()
    took = []

    def learn():
        start = time.perf_counter()
        gm.partial_fit(x)
        took.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=learn)
    worker.start()
    gaps, last = [], time.perf_counter()
    while not done.is_set():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        time.sleep(0.001)
    worker.join()
    # Holding the GIL, the learner would stall this loop for the whole call.
    assert len(gaps) > 10 and max(gaps) < took[0] / 2, (max(gaps), took)


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    x = pd.DataFrame(two_clusters(500), columns=["temperature", "pressure"])
    gm = emstream.GaussianMixture(2, random_state=0).fit(x)
    assert list(gm.feature_names_in_) == ["temperature", "pressure"]
    np.testing.assert_array_equal(gm.predict(x), gm.predict(x.to_numpy()))
