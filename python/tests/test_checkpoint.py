"""Checkpoints both ways between the Python package and the emstream program."""

import json
import pathlib
import subprocess

import numpy as np
import pytest

import emstream


def write_csv(path, x, header=None):
    with open(path, "w") as f:
        if header:
            f.write(",".join(header) + "\n")
        for row in x:
            f.write(",".join(repr(float(v)) for v in row) + "\n")


def points(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(0.0, 1.0, (n // 2, 3)), rng.normal(5.0, 0.7, (n - n // 2, 3))])
    rng.shuffle(x)
    return x


def inspect(emstream_bin, path):
    out = subprocess.run([emstream_bin, "inspect", "--json", str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# Learning on from plain arrays after a checkpoint with column names is
# fine; scikit-learn warns about it.
@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("n", [20_000, 700])  # past the warm-up, and within it
def test_load_checkpoint_gives_the_programs_means(emstream_bin, tmp_path, n):
    data, ckpt = tmp_path / "points.csv", tmp_path / "model.ckpt"
    write_csv(data, points(n), header=["a", "b", "c"])
    subprocess.run(
        [emstream_bin, "run", "-k", "2", "--seed", "3", "--input", str(data), "--checkpoint", str(ckpt)],
        check=True,
        capture_output=True,
    )
    shown = inspect(emstream_bin, ckpt)
    gm = emstream.load_checkpoint(ckpt)
    np.testing.assert_array_equal(gm.means_, np.array(shown["means"]))
    np.testing.assert_array_equal(gm.weights_, np.array(shown["weights"]))
    np.testing.assert_array_equal(gm.covariances_, np.array(shown["covariances"]))
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    assert gm.n_components == 2 and gm.random_state == 3 and gm.n_features_in_ == 3
    # It goes on learning where the stream stopped.
    gm.partial_fit(points(5000, seed=1))


def test_save_checkpoint_is_read_by_every_command(emstream_bin, tmp_path):
    pd = pytest.importorskip("pandas")
    x = pd.DataFrame(points(12_000), columns=["a", "b", "c"])
    gm = emstream.GaussianMixture(2, random_state=0, warm_up=2000).fit(x)
    ckpt = tmp_path / "py.ckpt"
    gm.save_checkpoint(ckpt)
    shown = inspect(emstream_bin, ckpt)
    np.testing.assert_array_equal(np.array(shown["means"]), gm.means_)
    assert shown["points_seen"] == 12_000
    back = emstream.load_checkpoint(ckpt)
    np.testing.assert_array_equal(back.score_samples(x), gm.score_samples(x))
    assert list(back.feature_names_in_) == ["a", "b", "c"]

    data = tmp_path / "more.csv"
    write_csv(data, points(3000, seed=4), header=["a", "b", "c"])
    scored = subprocess.run(
        [emstream_bin, "score", "--model", str(ckpt), "--input", str(data)], check=True, capture_output=True, text=True
    )
    lines = scored.stdout.strip().splitlines()
    assert len(lines) >= 3000
    subprocess.run([emstream_bin, "diff", str(ckpt), str(ckpt)], check=True, capture_output=True)
    subprocess.run(
        [emstream_bin, "plot", str(ckpt), "-o", str(tmp_path / "p.svg"), "--dims", "0,1"],
        check=True,
        capture_output=True,
    )
    resumed = subprocess.run(
        [emstream_bin, "run", "--resume", "--input", str(data), "--checkpoint", str(ckpt)],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert inspect(emstream_bin, ckpt)["points_seen"] == 15_000


def test_a_bad_checkpoint_is_a_python_error(tmp_path):
    with pytest.raises(OSError, match="no checkpoint found|No such file"):
        emstream.load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"\x89EMS\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(ValueError):
        emstream.load_checkpoint(tmp_path / "bad.ckpt")


GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "crates" / "emstream-core" / "tests" / "golden"


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.ckpt")))
def test_every_format_the_program_reads(emstream_bin, name):
    # Formats 1, 2 and 3, warm-up only, pending batches, every covariance.
    path = GOLDEN / name
    shown = inspect(emstream_bin, path)
    gm = emstream.load_checkpoint(path)
    np.testing.assert_array_equal(gm.means_, np.array(shown["means"]))
    np.testing.assert_array_equal(gm.weights_, np.array(shown["weights"]))
    full = gm.covariances_
    if gm.covariance_type == "diag":
        full = np.array([np.diag(c) for c in full])
    elif gm.covariance_type == "spherical":
        full = np.array([c * np.eye(gm.n_features_in_) for c in full])
    np.testing.assert_array_equal(full, np.array(shown["covariances"]))
