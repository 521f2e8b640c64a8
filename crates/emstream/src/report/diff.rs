//! `emstream diff`: how a mixture moved between two checkpoints.
//!
//! Components are matched by an optimal assignment (the Hungarian algorithm,
//! exact for any K) that minimises the total symmetric KL divergence
//! `KL(a||b) + KL(b||a)` between matched Gaussian components. When the two
//! mixtures have different K, the extra components of the larger one are
//! listed as unmatched. Per matched pair the report gives:
//!
//! - the weight change `w_new - w_old`;
//! - the mean shift in standard deviations: the Mahalanobis distance
//!   `sqrt((mu_new - mu_old)^T Sigma_old^-1 (mu_new - mu_old))` under the old
//!   component;
//! - the covariance change `||Sigma_new - Sigma_old||_F / ||Sigma_old||_F`;
//! - the pair's symmetric KL divergence (closed form);
//! - the dimension along which the mean moved most, in that dimension's
//!   old standard deviations, named by the checkpoint's column names when
//!   it carries them (a header or JSON `--fields`), else `dim i`.
//!
//! The names head the table (`dimensions: ...`, or both lists when the
//! two checkpoints name their dimensions differently) and are in the JSON
//! as `columns_old` and `columns_new`.
//!
//! For the whole mixture there is no closed form, so the symmetric KL
//! divergence is estimated by Monte Carlo: `n` points drawn from each
//! mixture with a seeded generator, `KL(p||q) ~ mean over x ~ p of
//! ln p(x) - ln q(x)`, with its standard error. The estimate is exactly 0
//! for identical mixtures and can come out slightly below 0 for nearly
//! identical ones.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::ReportError;
use crate::model::GaussianMixture;

/// How one matched pair of components moved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentDiff {
    /// Index of the component in the old mixture.
    pub old: usize,
    /// Index of the matched component in the new mixture.
    pub new: usize,
    /// Old weight.
    pub weight_old: f64,
    /// New weight.
    pub weight_new: f64,
    /// `weight_new - weight_old`.
    pub weight_change: f64,
    /// Mahalanobis distance of the new mean under the old component.
    pub mean_shift_sd: f64,
    /// `||Sigma_new - Sigma_old||_F / ||Sigma_old||_F`.
    pub covariance_change: f64,
    /// Symmetric KL divergence between the two Gaussian components.
    pub symmetric_kl: f64,
    /// The dimension whose mean moved most in its own old standard
    /// deviations, `(mu_new - mu_old) / sqrt(Sigma_old[i][i])`: (index,
    /// signed shift).
    pub most_moved: (usize, f64),
}

/// Monte-Carlo estimate of the symmetric KL divergence of two mixtures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KlEstimate {
    /// `KL(old || new) + KL(new || old)`.
    pub symmetric: f64,
    /// `KL(old || new)`.
    pub old_to_new: f64,
    /// `KL(new || old)`.
    pub new_to_old: f64,
    /// Standard error of `symmetric`.
    pub std_error: f64,
    /// Points drawn from each mixture.
    pub samples: usize,
    /// Seed of the draws.
    pub seed: u64,
}

/// How a mixture moved between two checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MixtureDiff {
    /// Dimension of both mixtures.
    pub dim: usize,
    /// Components of the old mixture.
    pub k_old: usize,
    /// Components of the new mixture.
    pub k_new: usize,
    /// How components were matched.
    pub matching: &'static str,
    /// Matched pairs, in the old mixture's order.
    pub components: Vec<ComponentDiff>,
    /// Old components without a partner (when the old K is larger).
    pub unmatched_old: Vec<usize>,
    /// New components without a partner (when the new K is larger).
    pub unmatched_new: Vec<usize>,
    /// The whole-mixture divergence.
    pub kl: KlEstimate,
    /// The old checkpoint's names of the dimensions, when it has them.
    pub columns_old: Option<Vec<String>>,
    /// The new checkpoint's names of the dimensions, when it has them.
    pub columns_new: Option<Vec<String>>,
}

/// Describes [`MixtureDiff::matching`].
pub const MATCHING: &str = "optimal assignment (Hungarian algorithm) minimising the total symmetric KL divergence between components";

/// One Gaussian component as nalgebra values, with its Cholesky factor.
struct Gauss {
    mean: DVector<f64>,
    cov: DMatrix<f64>,
    chol: DMatrix<f64>,
    log_det: f64,
}

impl Gauss {
    fn of(m: &GaussianMixture, j: usize) -> Gauss {
        let d = m.dim();
        let cov = DMatrix::from_row_slice(d, d, &m.covariance_matrix(j));
        // A GaussianMixture only holds positive definite covariances.
        let chol = cov
            .clone()
            .cholesky()
            .map(|c| c.l())
            .unwrap_or_else(|| DMatrix::from_diagonal(&cov.diagonal().map(f64::sqrt)));
        let log_det = 2.0 * chol.diagonal().iter().map(|v| v.ln()).sum::<f64>();
        Gauss {
            mean: DVector::from_column_slice(m.mean(j)),
            cov,
            chol,
            log_det,
        }
    }

    /// `L^-1 x` for this component's factor L.
    fn whiten(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        self.chol
            .solve_lower_triangular(x)
            .unwrap_or_else(|| x.clone())
    }

    /// Mahalanobis distance of `x` from this component's mean.
    fn mahalanobis(&self, x: &DVector<f64>) -> f64 {
        let z = self.whiten(&DMatrix::from_column_slice(
            x.len(),
            1,
            (x - &self.mean).as_slice(),
        ));
        z.norm()
    }
}

/// `KL(p || q)` for two Gaussians.
fn kl(p: &Gauss, q: &Gauss) -> f64 {
    let d = p.mean.len() as f64;
    // tr(Sq^-1 Sp) = ||Lq^-1 Lp||_F^2.
    let tr = q.whiten(&p.chol).norm_squared();
    let maha = q.mahalanobis(&p.mean);
    0.5 * (tr + maha * maha - d + q.log_det - p.log_det)
}

/// Symmetric KL divergence `KL(a||b) + KL(b||a)` between component `i` of
/// `a` and component `j` of `b` (same dimension).
pub fn component_symmetric_kl(a: &GaussianMixture, i: usize, b: &GaussianMixture, j: usize) -> f64 {
    let (p, q) = (Gauss::of(a, i), Gauss::of(b, j));
    kl(&p, &q) + kl(&q, &p)
}

/// Minimum-cost assignment of the `n` rows of `cost` (row-major, `n` by
/// `m`, `n <= m`, finite) to distinct columns: returns each row's column.
/// The Hungarian algorithm with potentials, O(n^2 m).
pub fn hungarian(cost: &[f64], n: usize, m: usize) -> Vec<usize> {
    assert!(n <= m && cost.len() == n * m, "need n <= m and n*m costs");
    let inf = f64::INFINITY;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut rows = vec![0; n];
    for j in 1..=m {
        if p[j] != 0 {
            rows[p[j] - 1] = j - 1;
        }
    }
    rows
}

/// Monte-Carlo symmetric KL divergence of two mixtures of the same
/// dimension, `samples` draws from each, seeded.
pub fn mixture_symmetric_kl(
    old: &GaussianMixture,
    new: &GaussianMixture,
    samples: usize,
    seed: u64,
) -> KlEstimate {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Mean and variance of ln p(x) - ln q(x) over x ~ p.
    let one_way = |p: &GaussianMixture, q: &GaussianMixture, rng: &mut ChaCha8Rng| -> (f64, f64) {
        if samples == 0 {
            return (f64::NAN, f64::NAN);
        }
        let xs = p.sample(rng, samples);
        let (mut scratch, mut labels) = (Vec::new(), Vec::new());
        let (mut lp, mut lq) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
        p.score_batch(&xs, &mut scratch, &mut lp, &mut labels, None);
        labels.clear();
        q.score_batch(&xs, &mut scratch, &mut lq, &mut labels, None);
        let n = samples as f64;
        let mean = lp.iter().zip(&lq).map(|(a, b)| a - b).sum::<f64>() / n;
        let var = lp
            .iter()
            .zip(&lq)
            .map(|(a, b)| (a - b - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        (mean, var / n)
    };
    let (on, von) = one_way(old, new, &mut rng);
    let (no, vno) = one_way(new, old, &mut rng);
    KlEstimate {
        symmetric: on + no,
        old_to_new: on,
        new_to_old: no,
        std_error: (von + vno).sqrt(),
        samples,
        seed,
    }
}

/// Compares two mixtures: matched components and the whole-mixture
/// divergence (`samples` Monte-Carlo draws from each side, `seed`).
///
/// # Errors
///
/// [`ReportError::Incompatible`] when the dimensions differ.
pub fn diff_mixtures(
    old: &GaussianMixture,
    new: &GaussianMixture,
    samples: usize,
    seed: u64,
) -> Result<MixtureDiff, ReportError> {
    let d = old.dim();
    if new.dim() != d {
        return Err(ReportError::Incompatible(format!(
            "the old mixture has dimension {d} and the new one {}",
            new.dim()
        )));
    }
    let (ko, kn) = (old.n_components(), new.n_components());
    let go: Vec<Gauss> = (0..ko).map(|j| Gauss::of(old, j)).collect();
    let gn: Vec<Gauss> = (0..kn).map(|j| Gauss::of(new, j)).collect();
    let mut cost = vec![0.0; ko * kn];
    for a in 0..ko {
        for b in 0..kn {
            let c = kl(&go[a], &gn[b]) + kl(&gn[b], &go[a]);
            // Keep the assignment finite even for absurd pairs.
            cost[a * kn + b] = if c.is_finite() { c.min(1e300) } else { 1e300 };
        }
    }
    // Pairs (old, new).
    let pairs: Vec<(usize, usize)> = if ko <= kn {
        hungarian(&cost, ko, kn).into_iter().enumerate().collect()
    } else {
        let mut t = vec![0.0; ko * kn];
        for a in 0..ko {
            for b in 0..kn {
                t[b * ko + a] = cost[a * kn + b];
            }
        }
        let mut p: Vec<(usize, usize)> = hungarian(&t, kn, ko)
            .into_iter()
            .enumerate()
            .map(|(b, a)| (a, b))
            .collect();
        p.sort_unstable();
        p
    };
    let components = pairs
        .iter()
        .map(|&(a, b)| {
            let (o, n) = (&go[a], &gn[b]);
            let (wo, wn) = (old.weights()[a], new.weights()[b]);
            ComponentDiff {
                old: a,
                new: b,
                weight_old: wo,
                weight_new: wn,
                weight_change: wn - wo,
                mean_shift_sd: o.mahalanobis(&n.mean),
                covariance_change: (&n.cov - &o.cov).norm() / o.cov.norm(),
                symmetric_kl: cost[a * kn + b],
                most_moved: most_moved(o, n),
            }
        })
        .collect();
    let unmatched_old = (0..ko)
        .filter(|a| !pairs.iter().any(|p| p.0 == *a))
        .collect();
    let unmatched_new = (0..kn)
        .filter(|b| !pairs.iter().any(|p| p.1 == *b))
        .collect();
    Ok(MixtureDiff {
        dim: d,
        k_old: ko,
        k_new: kn,
        matching: MATCHING,
        components,
        unmatched_old,
        unmatched_new,
        kl: mixture_symmetric_kl(old, new, samples, seed),
        columns_old: None,
        columns_new: None,
    })
}

/// The dimension along which the mean of `o` moved most to that of `n`,
/// in `o`'s marginal standard deviations: (index, signed shift).
fn most_moved(o: &Gauss, n: &Gauss) -> (usize, f64) {
    (0..o.mean.len())
        .map(|i| (i, (n.mean[i] - o.mean[i]) / o.cov[(i, i)].sqrt()))
        .fold(
            (0, 0.0),
            |best, (i, z)| {
                if z.abs() > best.1.abs() {
                    (i, z)
                } else {
                    best
                }
            },
        )
}

/// The names of the dimensions for the table: the checkpoints' (the old
/// one's when both have names), else `dim i`.
fn dim_name(diff: &MixtureDiff, i: usize) -> String {
    diff.columns_old
        .as_ref()
        .or(diff.columns_new.as_ref())
        .and_then(|n| n.get(i).cloned())
        .unwrap_or_else(|| format!("dim {i}"))
}

/// The diff as an aligned text table.
pub fn render_text(diff: &MixtureDiff, old_name: &str, new_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "old: {old_name} (K = {}, d = {})", diff.k_old, diff.dim);
    let _ = writeln!(s, "new: {new_name} (K = {}, d = {})", diff.k_new, diff.dim);
    match (&diff.columns_old, &diff.columns_new) {
        (Some(a), Some(b)) if a != b => {
            let _ = writeln!(s, "old dimensions: {}", a.join(", "));
            let _ = writeln!(s, "new dimensions: {}", b.join(", "));
            let _ = writeln!(
                s,
                "the checkpoints name their dimensions differently: the table uses the old names"
            );
        }
        (Some(n), _) | (None, Some(n)) => {
            let _ = writeln!(s, "dimensions: {}", n.join(", "));
        }
        (None, None) => {}
    }
    let _ = writeln!(s, "matching: {}", diff.matching);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:>4} {:>4}  {:>8} {:>8} {:>9}  {:>11}  {:>10}  {:>12}  most moved along",
        "old", "new", "w old", "w new", "w change", "mean shift", "cov change", "sym. KL"
    );
    let _ = writeln!(
        s,
        "{:>4} {:>4}  {:>8} {:>8} {:>9}  {:>11}  {:>10}  {:>12}  (old sd)",
        "", "", "", "", "", "(old sd)", "(rel. F)", ""
    );
    for c in &diff.components {
        let (dim, z) = c.most_moved;
        let _ = writeln!(
            s,
            "{:>4} {:>4}  {:>8} {:>8} {:>9}  {:>11}  {:>10}  {:>12}  {} {}",
            c.old,
            c.new,
            short(c.weight_old, 4),
            short(c.weight_new, 4),
            signed(c.weight_change, 4),
            short(c.mean_shift_sd, 4),
            short(c.covariance_change, 4),
            short(c.symmetric_kl, 5),
            dim_name(diff, dim),
            signed(z, 2)
        );
    }
    if !diff.unmatched_old.is_empty() {
        let _ = writeln!(
            s,
            "old components without a match: {:?}",
            diff.unmatched_old
        );
    }
    if !diff.unmatched_new.is_empty() {
        let _ = writeln!(
            s,
            "new components without a match: {:?}",
            diff.unmatched_new
        );
    }
    let _ = writeln!(s);
    let k = &diff.kl;
    // An infinite or undefined standard error says the estimate is not
    // usable (the models barely overlap), not "± inf".
    let error = if k.std_error.is_finite() {
        format!(" +- {}", short(k.std_error, 6))
    } else {
        " (standard error not finite: the models barely overlap)".to_string()
    };
    let _ = writeln!(
        s,
        "mixture symmetric KL: {}{error} (Monte Carlo, {} draws from each side, seed {}; KL(old||new) {}, KL(new||old) {})",
        short(k.symmetric, 6),
        k.samples,
        k.seed,
        short(k.old_to_new, 6),
        short(k.new_to_old, 6)
    );
    s
}

/// `x` with `prec` decimals when that is short, in scientific notation
/// when it is huge or tiny (a 300-digit number helps no one), `inf` or
/// `nan` as such.
fn short(x: f64, prec: usize) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x}")
    } else if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{x:.prec$e}", prec = prec.min(3))
    } else {
        format!("{x:.prec$}")
    }
}

/// [`short`] with a sign always.
fn signed(x: f64, prec: usize) -> String {
    let t = short(x, prec);
    if x >= 0.0 && !t.starts_with('+') {
        format!("+{t}")
    } else {
        t
    }
}

/// Arguments of `emstream diff`.
#[derive(Clone, Debug, clap::Args)]
pub struct DiffArgs {
    /// The older checkpoint.
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The newer checkpoint.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Monte-Carlo draws from each mixture for the whole-mixture divergence.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = at_least_one)]
    pub samples: usize,
    /// Seed of the Monte-Carlo draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A count of at least 1 (no draws would give a NaN divergence).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("give at least 1 draw, e.g. 20000".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads the mixture of exactly this checkpoint file (no fallback: a diff
/// names the two files it compares), with the checkpoint's names of the
/// dimensions (when it has as many as the model has dimensions).
fn load_named(
    path: &std::path::Path,
) -> Result<(GaussianMixture, Option<Vec<String>>), ReportError> {
    let ckpt = crate::checkpoint::load(path)?;
    let mix = super::checkpoint_model(&ckpt, path)?;
    let names = ckpt.columns.filter(|n| n.len() == mix.dim());
    Ok((mix, names))
}

/// `emstream diff`: compares the mixtures of two checkpoints and writes the
/// table (or JSON) to `out`.
///
/// # Errors
///
/// [`ReportError`] when a checkpoint cannot be read or holds no model, the
/// dimensions differ, or writing fails.
pub fn run_diff_to<W: Write>(args: &DiffArgs, out: &mut W) -> Result<MixtureDiff, ReportError> {
    let (old, columns_old) = load_named(&args.old)?;
    let (new, columns_new) = load_named(&args.new)?;
    let diff = MixtureDiff {
        columns_old,
        columns_new,
        ..diff_mixtures(&old, &new, args.samples, args.seed)?
    };
    if args.json {
        let v = serde_json::to_string_pretty(&diff)
            .map_err(|e| ReportError::Invalid(format!("cannot encode the diff as JSON: {e}")))?;
        writeln!(out, "{v}")?;
    } else {
        out.write_all(
            render_text(
                &diff,
                &args.old.display().to_string(),
                &args.new.display().to_string(),
            )
            .as_bytes(),
        )?;
    }
    out.flush()?;
    Ok(diff)
}

/// `emstream diff` writing to standard output (a closed standard output is
/// not an error).
///
/// # Errors
///
/// As [`run_diff_to`].
pub fn run_diff(args: &DiffArgs) -> Result<(), ReportError> {
    match run_diff_to(args, &mut std::io::stdout().lock()) {
        Err(ReportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_mixture as mixture;
    use rand::Rng;

    /// Tolerance of closed-form comparisons.
    const TOL: f64 = 1e-9;

    fn two_d() -> GaussianMixture {
        mixture(
            2,
            vec![0.4, 0.6],
            vec![1.0, 1.0, 7.0, 7.0],
            vec![3.0, 2.0, 2.0, 3.0, 2.0, -1.0, -1.0, 2.0],
        )
    }

    #[test]
    fn a_mixture_against_itself_is_zero() {
        let m = two_d();
        let d = diff_mixtures(&m, &m, 5000, 1).unwrap();
        assert_eq!(d.components.len(), 2);
        for c in &d.components {
            assert_eq!(c.old, c.new);
            assert!(c.weight_change.abs() < TOL);
            assert!(c.mean_shift_sd.abs() < TOL);
            assert!(c.covariance_change.abs() < TOL);
            assert!(c.symmetric_kl.abs() < TOL);
        }
        assert_eq!(d.kl.symmetric, 0.0);
        assert!(d.unmatched_old.is_empty() && d.unmatched_new.is_empty());
    }

    #[test]
    fn a_known_shift_is_reported_and_components_are_matched_across_orders() {
        let old = two_d();
        // Same components listed in the other order; component (1,1) moved by
        // (3, 0), which under covariance [[3,2],[2,3]] is sqrt(9 * 3/5)
        // standard deviations; the other one's covariance doubled.
        let new = mixture(
            2,
            vec![0.5, 0.5],
            vec![7.0, 7.0, 4.0, 1.0],
            vec![4.0, -2.0, -2.0, 4.0, 3.0, 2.0, 2.0, 3.0],
        );
        let d = diff_mixtures(&old, &new, 50_000, 2).unwrap();
        let c0 = &d.components[0];
        assert_eq!((c0.old, c0.new), (0, 1));
        assert!((c0.mean_shift_sd - (9.0f64 * 3.0 / 5.0).sqrt()).abs() < TOL);
        assert!(c0.covariance_change.abs() < TOL);
        assert!((c0.weight_change - 0.1).abs() < TOL);
        // Same covariance: symmetric KL is the squared Mahalanobis shift.
        assert!((c0.symmetric_kl - 9.0 * 3.0 / 5.0).abs() < 1e-9);
        let c1 = &d.components[1];
        assert_eq!((c1.old, c1.new), (1, 0));
        assert!(c1.mean_shift_sd.abs() < TOL);
        assert!((c1.covariance_change - 1.0).abs() < TOL);
        // Doubling a covariance in d = 2: KL(new||old) = (2d - d - d ln 2)/2
        // and KL(old||new) = (d/2 - d + d ln 2)/2.
        let expect = 0.5 * (4.0 - 2.0 - 2.0 * 2f64.ln()) + 0.5 * (1.0 - 2.0 + 2.0 * 2f64.ln());
        assert!((c1.symmetric_kl - expect).abs() < 1e-9);
        assert!(d.kl.symmetric > 0.5);
    }

    #[test]
    fn monte_carlo_kl_matches_the_closed_form_for_single_gaussians() {
        // One component each: the mixture KL is the Gaussian KL.
        let a = mixture(2, vec![1.0], vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 1.0]);
        let b = mixture(2, vec![1.0], vec![1.5, 0.0], vec![1.0, 0.0, 0.0, 1.0]);
        let d = diff_mixtures(&a, &b, 100_000, 3).unwrap();
        assert!((d.components[0].symmetric_kl - 2.25).abs() < TOL);
        let k = &d.kl;
        assert!(
            (k.symmetric - 2.25).abs() < 4.0 * k.std_error.max(1e-3),
            "{k:?}"
        );
        assert!((k.old_to_new - 1.125).abs() < 0.05);
    }

    #[test]
    fn different_k_leaves_components_unmatched() {
        let old = two_d();
        let new = mixture(
            2,
            vec![0.3, 0.3, 0.4],
            vec![7.1, 7.0, 20.0, 20.0, 1.0, 1.1],
            vec![2.0, -1.0, -1.0, 2.0, 1.0, 0.0, 0.0, 1.0, 3.0, 2.0, 2.0, 3.0],
        );
        let d = diff_mixtures(&old, &new, 1000, 4).unwrap();
        let pairs: Vec<(usize, usize)> = d.components.iter().map(|c| (c.old, c.new)).collect();
        assert_eq!(pairs, vec![(0, 2), (1, 0)]);
        assert_eq!(d.unmatched_new, vec![1]);
        let back = diff_mixtures(&new, &old, 1000, 4).unwrap();
        let pairs: Vec<(usize, usize)> = back.components.iter().map(|c| (c.old, c.new)).collect();
        assert_eq!(pairs, vec![(0, 1), (2, 0)]);
        assert_eq!(back.unmatched_old, vec![1]);
        let bad = mixture(1, vec![1.0], vec![0.0], vec![1.0]);
        assert!(matches!(
            diff_mixtures(&old, &bad, 10, 0),
            Err(ReportError::Incompatible(_))
        ));
    }

    fn brute_force(cost: &[f64], n: usize, m: usize) -> f64 {
        fn go(cost: &[f64], n: usize, m: usize, row: usize, used: &mut Vec<bool>) -> f64 {
            if row == n {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..m {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[row * m + j] + go(cost, n, m, row + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(cost, n, m, 0, &mut vec![false; m])
    }

    #[test]
    fn hungarian_is_optimal_on_random_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let n = rng.random_range(1..=6);
            let m = rng.random_range(n..=7);
            let cost: Vec<f64> = (0..n * m).map(|_| rng.random::<f64>() * 10.0).collect();
            let a = hungarian(&cost, n, m);
            let mut seen = vec![false; m];
            for &j in &a {
                assert!(!seen[j]);
                seen[j] = true;
            }
            let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i * m + j]).sum();
            assert!((total - brute_force(&cost, n, m)).abs() < 1e-9);
        }
    }

    #[test]
    fn huge_and_tiny_numbers_stay_short() {
        assert_eq!(short(1.5e300, 4), "1.500e300");
        assert_eq!(short(-2.0e-9, 4), "-2.000e-9");
        assert_eq!(short(0.25, 4), "0.2500");
        assert_eq!(short(0.0, 4), "0.0000");
        assert_eq!(short(f64::INFINITY, 4), "inf");
        assert_eq!(signed(0.5, 4), "+0.5000");
        assert_eq!(signed(-0.5, 4), "-0.5000");
    }

    #[test]
    fn text_and_json_renderings_hold_the_numbers() {
        let old = two_d();
        let d = diff_mixtures(&old, &old, 100, 0).unwrap();
        let t = render_text(&d, "a.ckpt", "b.ckpt");
        assert!(t.contains("old: a.ckpt (K = 2, d = 2)"));
        assert!(t.contains("Hungarian"));
        assert_eq!(t.lines().filter(|l| l.contains("+0.0000")).count(), 2);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["components"].as_array().unwrap().len(), 2);
        assert_eq!(v["kl"]["samples"], 100);
    }

    /// Learns `n` points of `truth` (optionally shifted along x) and saves
    /// the learner as a checkpoint at `path`.
    fn learned_checkpoint(truth: &GaussianMixture, n: usize, shift: f64, path: &std::path::Path) {
        named_checkpoint(truth, n, shift, path, None);
    }

    fn named_checkpoint(
        truth: &GaussianMixture,
        n: usize,
        shift: f64,
        path: &std::path::Path,
        columns: Option<Vec<String>>,
    ) {
        use crate::checkpoint::{save, Checkpoint};
        use crate::model::{Params, StepwiseEm};
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut pts = truth.sample(&mut rng, n);
        for p in pts.chunks_mut(truth.dim()) {
            p[0] += shift;
        }
        let params = Params {
            components: crate::model::ComponentCount::Fixed(truth.n_components()),
            warmup: 2000,
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(params, truth.dim());
        em.observe(&pts, None).unwrap();
        em.flush(None).unwrap();
        let ck = Checkpoint {
            columns,
            ..crate::report::test_checkpoint(em)
        };
        save(path, &ck, 0).unwrap();
    }

    #[test]
    fn diff_command_reads_two_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
        let truth = two_d();
        learned_checkpoint(&truth, 20_000, 0.0, &a);
        learned_checkpoint(&truth, 20_000, 2.0, &b);
        let args = DiffArgs {
            old: a.clone(),
            new: b.clone(),
            json: true,
            samples: 5000,
            seed: 0,
        };
        let mut out = Vec::new();
        let d = run_diff_to(&args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["components"].as_array().unwrap().len(), 2);
        // Both components moved by 2 along x: Mahalanobis distances
        // 2 sqrt(3/5) under [[3,2],[2,3]] and 2 sqrt(2/3) under [[2,-1],[-1,2]].
        // The two are 0.084 apart: each shift must be within 0.03 of its
        // own component's, so a swap of the two cannot pass.
        let old_model = load_named(&a).unwrap().0;
        let (first, second) = (2.0 * (3.0f64 / 5.0).sqrt(), 2.0 * (2.0f64 / 3.0).sqrt());
        for c in &d.components {
            let expect = if old_model.mean(c.old)[0] < 4.0 {
                first
            } else {
                second
            };
            assert!((c.mean_shift_sd - expect).abs() < 0.03, "{c:?}");
        }
        // A checkpoint against itself: no movement at all.
        let same = DiffArgs {
            new: a.clone(),
            json: false,
            ..args
        };
        let mut out = Vec::new();
        let d = run_diff_to(&same, &mut out).unwrap();
        assert_eq!(d.kl.symmetric, 0.0);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("mixture symmetric KL: 0.000000"));
        let missing = DiffArgs {
            old: dir.path().join("nope"),
            ..same
        };
        assert!(matches!(
            run_diff_to(&missing, &mut Vec::new()),
            Err(ReportError::Checkpoint(_))
        ));
    }

    #[test]
    fn diff_names_the_dimensions_the_checkpoints_carry() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.ckpt"),
            dir.path().join("b.ckpt"),
            dir.path().join("c.ckpt"),
        );
        let truth = two_d();
        let names = |x: &str, y: &str| Some(vec![x.to_owned(), y.to_owned()]);
        named_checkpoint(&truth, 20_000, 0.0, &a, names("carat", "price"));
        // Moved by 2 along x only: x is the dimension that moved most.
        named_checkpoint(&truth, 20_000, 2.0, &b, names("carat", "price"));
        named_checkpoint(&truth, 20_000, 2.0, &c, names("weight", "cost"));
        let args = DiffArgs {
            old: a.clone(),
            new: b.clone(),
            json: false,
            samples: 1000,
            seed: 0,
        };
        let mut out = Vec::new();
        let d = run_diff_to(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("dimensions: carat, price\n"), "{text}");
        for comp in &d.components {
            assert_eq!(comp.most_moved.0, 0, "{comp:?}");
            assert!(comp.most_moved.1 > 0.5, "{comp:?}");
        }
        let rows: Vec<&str> = text.lines().filter(|l| l.contains(" carat +")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        // JSON carries both lists; differing names are said.
        let mut out = Vec::new();
        run_diff_to(
            &DiffArgs {
                new: c.clone(),
                json: true,
                ..args.clone()
            },
            &mut out,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["columns_old"], serde_json::json!(["carat", "price"]));
        assert_eq!(v["columns_new"], serde_json::json!(["weight", "cost"]));
        let mut out = Vec::new();
        run_diff_to(&DiffArgs { new: c, ..args }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("old dimensions: carat, price"), "{text}");
        assert!(text.contains("new dimensions: weight, cost"), "{text}");
        assert!(text.contains("name their dimensions differently"), "{text}");
    }

    #[test]
    fn the_three_commands_parse_as_clap_subcommands() {
        use crate::report::plot::PlotArgs;
        use crate::report::score::ScoreArgs;
        use crate::score::AlertRule;
        use clap::{CommandFactory, Parser, Subcommand};
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(Subcommand)]
        enum Cmd {
            Score(ScoreArgs),
            Plot(PlotArgs),
            Diff(DiffArgs),
        }
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "emstream",
            "score",
            "--model",
            "m.ckpt",
            "--format",
            "json",
            "--score-fields",
            "--alert-quantile",
            "0.005",
            "--columns",
            "1,2",
        ])
        .unwrap();
        let Cmd::Score(a) = c.cmd else { panic!() };
        assert_eq!(a.alert.rule(), AlertRule::Quantile(0.005));
        assert_eq!(a.read.columns, Some(vec!["1".to_owned(), "2".to_owned()]));
        assert_eq!(a.read.format, crate::input::Format::Json);
        let c = Cli::try_parse_from([
            "emstream", "plot", "m.ckpt", "-o", "m.svg", "--dims", "2,0", "--sample", "10",
        ])
        .unwrap();
        let Cmd::Plot(a) = c.cmd else { panic!() };
        assert_eq!((a.dims, a.sample), (Some((2, 0)), 10));
        assert!(
            Cli::try_parse_from(["emstream", "plot", "m.ckpt", "-o", "x", "--dims", "1,1"])
                .is_err()
        );
        let c = Cli::try_parse_from(["emstream", "diff", "a", "b", "--json"]).unwrap();
        let Cmd::Diff(a) = c.cmd else { panic!() };
        assert!(a.json && a.samples == 20_000);
        // No draws would print a NaN divergence.
        let e = Cli::try_parse_from(["emstream", "diff", "a", "b", "--samples", "0"])
            .err()
            .expect("--samples 0 is refused");
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
}
