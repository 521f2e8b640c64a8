//! `emstream._emstream`: the extension module under the Python package
//! `emstream`. One class, [`Learner`], wraps the core's stepwise EM learner
//! ([`StepwiseEm`]): row-major float64 slices in (borrowed from the caller's
//! C-contiguous NumPy arrays, never copied), owned NumPy arrays out. The
//! scikit-learn and River classes are thin Python layers over it
//! (`emstream/_mixture.py`, `emstream/river.py`).
//!
//! Every error is a Python exception (`ValueError` for bad data or options,
//! `TypeError` for an array that is not C-contiguous float64, `OSError` for
//! files); nothing panics across the boundary. The GIL is released while
//! the learner learns or scores.

use std::path::{Path, PathBuf};

use emstream_core::checkpoint::{self, Checkpoint, CheckpointError};
use emstream_core::model::{
    ComponentCount, CovarianceType, GaussianMixture, LearnError, Params, StepwiseEm, NO_LABEL,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// The learner of one stream, with its model: the learner's own once the
/// warm-up is over, before that the fit of the warm-up buffer made on
/// demand (as `emstream inspect` shows a checkpoint saved during the
/// warm-up) and kept until the next points arrive.
#[pyclass(module = "emstream._emstream")]
#[derive(Clone)]
struct Learner {
    learner: StepwiseEm,
    /// The fit of the warm-up buffer, while the learner has no model.
    early: Option<GaussianMixture>,
    /// When the model's run started (Unix milliseconds), kept in its
    /// checkpoints.
    created_unix_ms: u64,
}

/// A one-dimensional float64 NumPy array.
type Floats<'py> = Bound<'py, PyArray1<f64>>;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn checkpoint_error(e: CheckpointError) -> PyErr {
    match e {
        CheckpointError::Io { .. } | CheckpointError::NotFound { .. } => {
            PyOSError::new_err(e.to_string())
        }
        e => value_error(e),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The rows of `x` as one row-major slice, after checking that they are
/// points of dimension `dim`: at least one row, finite numbers.
fn rows<'a>(x: &'a PyReadonlyArray2<'_, f64>, dim: usize) -> PyResult<&'a [f64]> {
    let [n, d] = [x.shape()[0], x.shape()[1]];
    // `as_slice` also takes a Fortran-ordered array, whose slice is not
    // row-major: only C order is read as it is.
    let slice = (x.is_c_contiguous().then(|| x.as_slice().ok()).flatten()).ok_or_else(|| {
        PyTypeError::new_err("expected a C-contiguous float64 array (numpy.ascontiguousarray(X, dtype=numpy.float64))")
    })?;
    if d != dim {
        return Err(PyValueError::new_err(format!(
            "X has {d} features, but the model is expecting {dim} features as input"
        )));
    }
    if n == 0 {
        return Err(PyValueError::new_err(
            "Found array with 0 sample(s) while a minimum of 1 is required",
        ));
    }
    if let Some(i) = slice.iter().position(|v| !v.is_finite()) {
        let what = if slice[i].is_nan() { "NaN" } else { "infinity" };
        return Err(PyValueError::new_err(format!(
            "Input X contains {what} (row {}, column {}): remove or impute such values first",
            i / d,
            i % d
        )));
    }
    Ok(slice)
}

/// Parses a covariance type as scikit-learn names it.
fn covariance(name: &str) -> PyResult<CovarianceType> {
    match name {
        "full" => Ok(CovarianceType::Full),
        "diag" => Ok(CovarianceType::Diagonal),
        "spherical" => Ok(CovarianceType::Spherical),
        other => Err(PyValueError::new_err(format!(
            "covariance_type must be 'full', 'diag' or 'spherical', got {other:?}"
        ))),
    }
}

#[pymethods]
impl Learner {
    /// A learner with no points yet, for points of dimension `dim`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (dim, n_components, covariance_type, batch_size, step_decay, step_offset, step_floor, warm_up, reg_covar, seed, n_init, max_iter, tol))]
    fn new(
        dim: usize,
        n_components: usize,
        covariance_type: &str,
        batch_size: usize,
        step_decay: f64,
        step_offset: f64,
        step_floor: f64,
        warm_up: usize,
        reg_covar: f64,
        seed: u64,
        n_init: usize,
        max_iter: usize,
        tol: f64,
    ) -> PyResult<Self> {
        if dim == 0 {
            return Err(PyValueError::new_err(
                "0 feature(s) (shape=(n, 0)) while a minimum of 1 is required",
            ));
        }
        let params = Params {
            components: ComponentCount::Fixed(n_components),
            covariance: covariance(covariance_type)?,
            batch_size,
            step_decay,
            step_offset,
            step_floor,
            warmup: warm_up,
            reg_covar,
            seed,
            init_seeds: n_init,
            init_iters: max_iter,
            init_tol: tol,
            ..Params::default()
        }
        .check()
        .map_err(value_error)?;
        Ok(Learner {
            learner: StepwiseEm::new(params, dim),
            early: None,
            created_unix_ms: now_ms(),
        })
    }

    /// Learns the rows of `x` in order (complete mini-batches at once, a
    /// partial one kept for the next call); the GIL is released meanwhile.
    fn observe(&mut self, py: Python<'_>, x: PyReadonlyArray2<'_, f64>) -> PyResult<()> {
        let points = rows(&x, self.learner.dim())?;
        self.early = None;
        let learner = &mut self.learner;
        py.detach(|| learner.observe(points, None))
            .map_err(value_error)
    }

    /// End of the stream: learns the pending partial mini-batch, or fits
    /// a full warm-up buffer.
    fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        self.early = None;
        let learner = &mut self.learner;
        py.detach(|| learner.flush(None)).map_err(value_error)
    }

    /// Whether the learner has a model of its own (the warm-up is over).
    fn has_model(&self) -> bool {
        self.learner.mixture().is_some()
    }

    /// Makes sure a model exists (fitting the warm-up buffer if the
    /// learner has none yet); `ValueError` saying why when there is none.
    fn ensure_model(&mut self, py: Python<'_>) -> PyResult<()> {
        self.model(py).map(|_| ())
    }

    /// Per point, its log density under the model.
    fn score_samples<'py>(
        &mut self,
        py: Python<'py>,
        x: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (ll, _, _) = self.score(py, &x, false)?;
        Ok(PyArray1::from_vec(py, ll))
    }

    /// Per point, its most responsible component (-1 for a point so far
    /// from every component that its density underflows).
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        x: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let (_, labels, _) = self.score(py, &x, false)?;
        let labels = labels
            .into_iter()
            .map(|l| if l == NO_LABEL { -1 } else { i64::from(l) })
            .collect();
        Ok(PyArray1::from_vec(py, labels))
    }

    /// Per point, the K responsibilities (n rows of K).
    fn predict_proba<'py>(
        &mut self,
        py: Python<'py>,
        x: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = self.model(py)?.n_components();
        let n = x.shape()[0];
        let (_, _, resp) = self.score(py, &x, true)?;
        Ok(PyArray1::from_vec(py, resp).reshape([n, k])?.into_any())
    }

    /// The model's parameters as flat arrays: (covariance type, weights
    /// (K), means (K*d), covariance blocks (K*d*d, K*d or K)).
    fn parameters<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(&'static str, Floats<'py>, Floats<'py>, Floats<'py>)> {
        let p = self.model(py)?.params().clone();
        let name = match p.covariance {
            CovarianceType::Full => "full",
            CovarianceType::Diagonal => "diag",
            CovarianceType::Spherical => "spherical",
        };
        Ok((
            name,
            PyArray1::from_vec(py, p.weights),
            PyArray1::from_vec(py, p.means),
            PyArray1::from_vec(py, p.covariances),
        ))
    }

    /// Free parameters of the model (weights, means, covariances).
    fn n_free_params(&mut self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.model(py)?.n_free_params())
    }

    /// Dimension of the points.
    #[getter]
    fn dim(&self) -> usize {
        self.learner.dim()
    }

    /// Mini-batch updates applied (stepwise EM steps).
    #[getter]
    fn n_steps(&self) -> u64 {
        self.learner.counters().updates
    }

    /// Points learned from, warm-up included.
    #[getter]
    fn points_seen(&self) -> u64 {
        self.learner.counters().points_seen
    }

    /// Average test-then-train log-likelihood per point (NaN before the
    /// first stepwise step).
    #[getter]
    fn avg_log_lik(&self) -> f64 {
        self.learner.counters().avg_log_lik()
    }

    /// Points waiting in the warm-up buffer or the partial mini-batch.
    #[getter]
    fn pending_points(&self) -> usize {
        self.learner.pending_points()
    }

    /// The learner's options, named as the Python constructor names them.
    fn options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = self.learner.params();
        let d = PyDict::new(py);
        let k = match p.components {
            ComponentCount::Fixed(k) => k,
            ComponentCount::Auto => self.learner.n_components().unwrap_or(p.max_components),
        };
        d.set_item("n_components", k)?;
        d.set_item(
            "covariance_type",
            match p.covariance {
                CovarianceType::Full => "full",
                CovarianceType::Diagonal => "diag",
                CovarianceType::Spherical => "spherical",
            },
        )?;
        d.set_item("batch_size", p.batch_size)?;
        d.set_item("step_decay", p.step_decay)?;
        d.set_item("step_offset", p.step_offset)?;
        d.set_item("step_floor", p.step_floor)?;
        d.set_item("warm_up", p.warmup)?;
        d.set_item("reg_covar", p.reg_covar)?;
        d.set_item("random_state", p.seed)?;
        d.set_item("n_init", p.init_seeds)?;
        d.set_item("max_iter", p.init_iters)?;
        d.set_item("tol", p.init_tol)?;
        Ok(d)
    }

    /// The checkpoint file image of this learner (what `save` writes),
    /// with the dimensions' names if given.
    #[pyo3(signature = (columns=None))]
    fn to_bytes<'py>(
        &self,
        py: Python<'py>,
        columns: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ck = self.checkpoint(columns)?;
        let bytes = checkpoint::to_bytes(&ck).map_err(checkpoint_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A learner from a checkpoint file image, and the dimensions' names
    /// it holds.
    #[staticmethod]
    fn from_bytes(bytes: &[u8]) -> PyResult<(Learner, Option<Vec<String>>)> {
        let ck = checkpoint::from_bytes(Path::new("<bytes>"), bytes).map_err(checkpoint_error)?;
        Ok(Learner::of_checkpoint(ck))
    }

    /// Writes the learner as a checkpoint file (atomically; no older
    /// generations kept) that the `emstream` commands read.
    #[pyo3(signature = (path, columns=None))]
    fn save(&self, py: Python<'_>, path: PathBuf, columns: Option<Vec<String>>) -> PyResult<()> {
        let ck = self.checkpoint(columns)?;
        py.detach(|| checkpoint::save(&path, &ck, 0))
            .map_err(checkpoint_error)
    }

    /// Reads a checkpoint file of any format the `emstream` commands read,
    /// and the dimensions' names it holds.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<(Learner, Option<Vec<String>>)> {
        let ck = py
            .detach(|| checkpoint::load(&path))
            .map_err(checkpoint_error)?;
        Ok(Learner::of_checkpoint(ck))
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    /// Pickles as the checkpoint file image.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let restore = py
            .import("emstream._emstream")?
            .getattr("_learner_from_bytes")?;
        Ok((restore, (self.to_bytes(py, None)?,)))
    }
}

impl Learner {
    fn of_checkpoint(ck: Checkpoint) -> (Learner, Option<Vec<String>>) {
        let learner = Learner {
            learner: ck.learner,
            early: None,
            created_unix_ms: ck.created_unix_ms,
        };
        (learner, ck.columns)
    }

    fn checkpoint(&self, columns: Option<Vec<String>>) -> PyResult<Checkpoint> {
        Checkpoint::of_learner(self.learner.clone(), columns, self.created_unix_ms)
            .map_err(checkpoint_error)
    }

    /// The learner's model, or the fit of its warm-up buffer.
    fn model(&mut self, py: Python<'_>) -> PyResult<&GaussianMixture> {
        if self.learner.mixture().is_none() && self.early.is_none() {
            let learner = &self.learner;
            let fit = py
                .detach(|| learner.model_or_fit().map(std::borrow::Cow::into_owned))
                .map_err(|e| match e {
                    LearnError::NotFitted => {
                        value_error("the model has no points yet: call fit or partial_fit first")
                    }
                    e => value_error(e),
                })?;
            self.early = Some(fit);
        }
        Ok(self
            .learner
            .mixture()
            .or(self.early.as_ref())
            .expect("a model was just made"))
    }

    /// Log densities, labels and (if asked) responsibilities of the rows
    /// of `x`, computed without the GIL.
    fn score(
        &mut self,
        py: Python<'_>,
        x: &PyReadonlyArray2<'_, f64>,
        with_resp: bool,
    ) -> PyResult<(Vec<f64>, Vec<u32>, Vec<f64>)> {
        let dim = self.learner.dim();
        let points = rows(x, dim)?;
        let model = self.model(py)?;
        Ok(py.detach(|| {
            let (mut scratch, mut ll, mut labels, mut resp) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            model.score_batch(
                points,
                &mut scratch,
                &mut ll,
                &mut labels,
                with_resp.then_some(&mut resp),
            );
            (ll, labels, resp)
        }))
    }
}

/// Unpickles a [`Learner`] from its checkpoint file image.
#[pyfunction]
fn _learner_from_bytes(bytes: &[u8]) -> PyResult<Learner> {
    Learner::from_bytes(bytes).map(|(learner, _)| learner)
}

#[pymodule]
fn _emstream(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Learner>()?;
    m.add_function(wrap_pyfunction!(_learner_from_bytes, m)?)?;
    m.add("CHECKPOINT_FORMAT_VERSION", checkpoint::FORMAT_VERSION)?;
    Ok(())
}
