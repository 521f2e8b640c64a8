//! `emstream inspect PATH [--json]`: what a checkpoint holds, as a readable
//! summary with one table per component, or as one JSON object for scripts.
//!
//! The JSON object always has `format_version`, `dim`, `names` (the
//! dimensions' names, or null), `components`,
//! `covariance` (`"full"`, `"diag"` or `"spherical"`), `resolution` (each
//! dimension's rounding step, null for continuous values), `warmed_up`,
//! `fitted_on_the_fly`, `pending_points`, `points_seen`, `records_rejected` (total),
//! `rejected_by_reason` (object of snake_case reason to count), `reseeds`,
//! `repairs`, `refused_batches`, `refused_points`, `outliers`, `updates`,
//! `avg_log_likelihood` (null before any point was scored), `anomalies`,
//! `created`, `updated` (ISO 8601 UTC), `created_unix_ms`, `updated_unix_ms`,
//! `params` (the learner options), and the model: `weights` (K numbers),
//! `means` (K lists of d), `covariances` (K full d-by-d nested lists whatever
//! the covariance type) and `std_devs` (K lists of d). Before the warm-up has
//! finished (`warmed_up` false) the checkpoint holds no model: the model
//! shown is then fitted on the fly on the warm-up buffer
//! (`fitted_on_the_fly` true), deterministically, and is not saved; the
//! four lists are empty only when the buffer cannot be fitted (empty, or
//! fewer distinct points than components). A file shorter than the
//! warm-up ends with a model fitted on its points saved beside the buffer
//! (`warmed_up` and `fitted_on_the_fly` false, the model shown).
//!
//! How K was chosen and how it fares: `bic_by_k` (a list of `{"k", "bic"}`
//! for every K tried on the warm-up with `--components auto`, else null),
//! `chosen_by` (the rule's sentence, else null), `component_changes` (K
//! changes made by `--adapt-components`), and `bic`, `aic` of the current
//! model on its recent-points reservoir of `recent_points` points (the
//! last 2,000 points learned from, 5,000 with `--adapt-components`; null
//! before the warm-up or with an empty reservoir, as in a checkpoint of
//! format 2): lower is better, and runs with different K on the same
//! stream compare by them.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::checkpoint::{Checkpoint, FORMAT_VERSION};
use crate::input::RejectCounts;
use crate::model::select::{Criteria, ModelSelection};
use crate::model::{CovarianceType, GaussianMixture};

/// Everything the reports show, gathered from a checkpoint once.
struct Summary<'a> {
    dim: usize,
    components: usize,
    covariance: CovarianceType,
    params: Value,
    points_seen: u64,
    updates: u64,
    reseeds: u64,
    repairs: u64,
    refused_batches: u64,
    refused_points: u64,
    outliers: u64,
    log_lik_sum: f64,
    log_lik_points: u64,
    pending_points: usize,
    /// The warm-up's size (`--warmup`).
    warmup: usize,
    rejected: &'a RejectCounts,
    anomalies: u64,
    created_unix_ms: u64,
    updated_unix_ms: u64,
    mixture: Option<&'a GaussianMixture>,
    /// Whether `mixture` was fitted on the fly on a warm-up buffer saved
    /// unfitted (it is not in the checkpoint).
    on_the_fly: bool,
    /// Names of the dimensions, when known.
    names: Option<&'a [String]>,
    selection: Option<&'a ModelSelection>,
    component_changes: u64,
    /// BIC and AIC on the recent-points reservoir (a model and points).
    criteria: Option<Criteria>,
    /// Each dimension's rounding step (`None`: continuous or not known).
    resolution: Vec<Option<f64>>,
    /// Whether `mixture` is the provisional model of a warm-up that the
    /// input ended before filling (saved with the buffer).
    provisional: bool,
}

/// Width of one value column of the compact table: with the index and
/// weight columns, 8 dimensions fit in 100 columns.
const TABLE_COL: usize = 10;

impl<'a> Summary<'a> {
    /// The summary of `ck`; `fly` is the model fitted on the fly on its
    /// warm-up buffer when it has none ([`on_the_fly`]).
    fn of(
        ck: &'a Checkpoint,
        names: Option<&'a [String]>,
        fly: Option<&'a GaussianMixture>,
    ) -> Self {
        let l = &ck.learner;
        let p = l.params();
        let c = l.counters();
        Summary {
            dim: l.dim(),
            components: l
                .n_components()
                .or(fly.map(GaussianMixture::n_components))
                .or(p.fixed_components())
                .unwrap_or_default(),
            covariance: p.covariance,
            params: serde_json::to_value(&**p).unwrap_or(Value::Null),
            points_seen: c.points_seen,
            updates: c.updates,
            reseeds: c.reseeds,
            repairs: c.repairs,
            refused_batches: c.refused_batches,
            refused_points: c.refused_points,
            outliers: c.outliers,
            log_lik_sum: c.log_lik_sum,
            log_lik_points: c.log_lik_points,
            pending_points: l.pending_points(),
            warmup: p.warmup,
            rejected: &ck.rejected,
            anomalies: ck.anomalies,
            created_unix_ms: ck.created_unix_ms,
            updated_unix_ms: ck.updated_unix_ms,
            mixture: l.mixture().or(fly),
            on_the_fly: l.mixture().is_none() && l.provisional().is_none() && fly.is_some(),
            names: names
                .or(ck.columns.as_deref())
                .filter(|n| n.len() == l.dim()),
            selection: ck.selection.as_ref(),
            component_changes: c.component_changes,
            criteria: l.criteria().filter(|c| c.points > 0),
            resolution: l.resolution().steps(),
            provisional: l.mixture().is_none() && l.provisional().is_some(),
        }
    }

    /// The name of dimension `a`, or its index.
    fn dim_name(&self, a: usize) -> String {
        match self.names {
            Some(n) => n[a].clone(),
            None => format!("dim {a}"),
        }
    }

    /// The K x d table of weights and means, heaviest component first.
    fn compact_table(&self, m: &GaussianMixture, s: &mut String) {
        let d = m.dim();
        let _ = writeln!(
            s,
            "\ncomponents by weight: mean of each dimension (details below)"
        );
        let _ = write!(s, "  {:>3} {:>8}", "#", "weight");
        for a in 0..d {
            let _ = write!(
                s,
                " {:>w$}",
                fit(&self.dim_name(a), TABLE_COL - 1),
                w = TABLE_COL - 1
            );
        }
        s.push('\n');
        let mut order: Vec<usize> = (0..m.n_components()).collect();
        order.sort_by(|&a, &b| m.weights()[b].total_cmp(&m.weights()[a]));
        for j in order {
            let _ = write!(s, "  {j:>3} {:>8.4}", m.weights()[j]);
            for &v in m.mean(j) {
                let _ = write!(s, " {:>w$}", short_num(v), w = TABLE_COL - 1);
            }
            s.push('\n');
        }
    }

    /// The K-choice lines of the text summary.
    fn k_text(&self, s: &mut String) {
        if let Some(sel) = self.selection {
            let _ = writeln!(s, "  K chosen by       {}", sel.chosen_by);
            let _ = writeln!(s, "  BIC by K          {:>4} {:>16}", "K", "BIC");
            for &(k, b) in &sel.bic_by_k {
                let _ = writeln!(s, "                    {k:>4} {:>16}", num(b));
            }
        }
        if self.component_changes > 0 {
            let _ = writeln!(s, "  K changes         {}", self.component_changes);
        }
        if let Some(c) = &self.criteria {
            let _ = writeln!(
                s,
                "  BIC / AIC         {} / {} on the {} most recent points (lower is better)",
                num(c.bic),
                num(c.aic),
                c.points
            );
        }
    }

    fn avg_log_lik(&self) -> Option<f64> {
        (self.log_lik_points > 0).then(|| self.log_lik_sum / self.log_lik_points as f64)
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.by_reason.values().sum()
    }

    fn rejected_by_reason(&self) -> Vec<(String, u64)> {
        self.rejected
            .by_reason
            .iter()
            .map(|(r, &n)| (snake_case(&format!("{r:?}")), n))
            .collect()
    }

    fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "emstream checkpoint, format version {FORMAT_VERSION}");
        let _ = writeln!(
            s,
            "  model             {} components, {} dimensions, {} covariance",
            self.components, self.dim, self.covariance
        );
        if self.resolution.iter().any(Option::is_some) {
            let parts: Vec<String> = self
                .resolution
                .iter()
                .enumerate()
                .map(|(a, q)| {
                    let q = q.map_or("none".to_string(), |q| q.to_string());
                    format!("{} {q}", self.dim_name(a))
                })
                .collect();
            let _ = writeln!(s, "  resolution        {}", parts.join(", "));
        } else {
            let _ = writeln!(s, "  resolution        none (continuous values)");
        }
        let _ = writeln!(
            s,
            "  created           {}",
            iso8601_utc(self.created_unix_ms)
        );
        let _ = writeln!(
            s,
            "  updated           {}",
            iso8601_utc(self.updated_unix_ms)
        );
        let _ = writeln!(s, "  points seen       {}", self.points_seen);
        let _ = writeln!(s, "  updates           {}", self.updates);
        match self.avg_log_lik() {
            Some(v) => {
                let _ = writeln!(
                    s,
                    "  avg log-lik       {} per point over the stream's {} points, test-then-train\n                    (each point scored by the model before it learned from it)",
                    num(v),
                    self.log_lik_points
                );
            }
            None => {
                let _ = writeln!(s, "  avg log-lik       - (no point scored yet)");
            }
        }
        let _ = write!(s, "  records rejected  {}", self.rejected_total());
        if !self.rejected.by_reason.is_empty() {
            // The words of the run's summary line ("3 not a number").
            let parts: Vec<String> = self
                .rejected
                .by_reason
                .iter()
                .map(|(r, n)| format!("{n} {}", r.text()))
                .collect();
            let _ = write!(s, " ({})", parts.join(", "));
        }
        s.push('\n');
        let _ = writeln!(s, "  re-seeds          {}", self.reseeds);
        let _ = writeln!(s, "  repairs           {}", self.repairs);
        let _ = writeln!(
            s,
            "  refused batches   {} ({} points)",
            self.refused_batches, self.refused_points
        );
        let _ = writeln!(s, "  outliers ignored  {}", self.outliers);
        let _ = writeln!(s, "  anomalies         {}", self.anomalies);
        self.k_text(&mut s);
        let Some(m) = self.mixture else {
            let _ = writeln!(
                s,
                "\nStill warming up: no model yet; {} points wait in the warm-up buffer (too few distinct points to fit {} components on the fly).",
                self.pending_points, self.components
            );
            return s;
        };
        if self.on_the_fly && self.pending_points > self.warmup {
            let _ = writeln!(
                s,
                "\nStill warming up: a signal stopped the first fit; {} points wait in the warm-up buffer, saved unfitted (the warm-up's {} and {} received after them: --resume fits the former and learns the latter). The model below is fitted on the fly that way; it is not in the checkpoint.",
                self.pending_points,
                self.warmup,
                self.pending_points - self.warmup
            );
        } else if self.on_the_fly {
            let _ = writeln!(
                s,
                "\nStill warming up: {} points wait in the warm-up buffer, saved unfitted (--resume goes on filling it). The model below is fitted on the fly on them, as the end of the warm-up would; it is not in the checkpoint.",
                self.pending_points
            );
        } else if self.provisional {
            let _ = writeln!(
                s,
                "\nStill warming up: the input ended after {} of {} warm-up points; the model below was fitted on them and is saved with them (--resume goes on filling the warm-up).",
                self.pending_points, self.warmup
            );
        } else {
            let _ = writeln!(
                s,
                "  pending points    {} (in the partial mini-batch)",
                self.pending_points
            );
        }
        self.compact_table(m, &mut s);
        let d = m.dim();
        let full = m.covariance_type() == CovarianceType::Full;
        // The dimension column fits the longest name (up to 24).
        let dw = (0..d)
            .map(|a| self.dim_name(a).chars().count())
            .max()
            .unwrap_or(3)
            .clamp(5, 24);
        for j in 0..m.n_components() {
            let _ = writeln!(s, "\ncomponent {j}  weight {}", num(m.weights()[j]));
            let cov = m.covariance_matrix(j);
            let _ = write!(s, "  {:>dw$} {:>14} {:>14}", "dim", "mean", "std dev");
            if full && d > 1 {
                let _ = write!(s, "   correlations");
            }
            s.push('\n');
            for a in 0..d {
                let sd_a = cov[a * d + a].sqrt();
                let label = match self.names {
                    Some(_) => fit(&self.dim_name(a), dw),
                    None => a.to_string(),
                };
                let _ = write!(
                    s,
                    "  {label:>dw$} {:>14} {:>14}",
                    num(m.mean(j)[a]),
                    num(sd_a)
                );
                if full && d > 1 {
                    s.push_str("  ");
                    for b in 0..a {
                        let r = cov[a * d + b] / (sd_a * cov[b * d + b].sqrt());
                        let _ = write!(s, " {r:>6.3}");
                    }
                    let _ = write!(s, " {:>6.3}", 1.0);
                }
                s.push('\n');
            }
        }
        if !full && d > 1 {
            let _ = writeln!(
                s,
                "\n({} covariance: dimensions are uncorrelated within a component)",
                m.covariance_type()
            );
        }
        s
    }

    fn json(&self) -> Value {
        let mut weights = Vec::new();
        let mut means = Vec::new();
        let mut covariances = Vec::new();
        let mut std_devs = Vec::new();
        if let Some(m) = self.mixture {
            let d = m.dim();
            for j in 0..m.n_components() {
                weights.push(json!(m.weights()[j]));
                means.push(json!(m.mean(j)));
                let c = m.covariance_matrix(j);
                let rows: Vec<Value> = c.chunks_exact(d).map(|r| json!(r)).collect();
                covariances.push(Value::Array(rows));
                let sd: Vec<f64> = (0..d).map(|a| c[a * d + a].sqrt()).collect();
                std_devs.push(json!(sd));
            }
        }
        let by_reason: Map<String, Value> = self
            .rejected_by_reason()
            .into_iter()
            .map(|(r, n)| (r, json!(n)))
            .collect();
        json!({
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "names": self.names,
            "components": self.components,
            "covariance": self.covariance.name(),
            "resolution": self.resolution,
            "warmed_up": self.mixture.is_some() && !self.on_the_fly && !self.provisional,
            "fitted_on_the_fly": self.on_the_fly,
            "pending_points": self.pending_points,
            "points_seen": self.points_seen,
            "records_rejected": self.rejected_total(),
            "rejected_by_reason": by_reason,
            "reseeds": self.reseeds,
            "repairs": self.repairs,
            "refused_batches": self.refused_batches,
            "refused_points": self.refused_points,
            "outliers": self.outliers,
            "updates": self.updates,
            "avg_log_likelihood": self.avg_log_lik(),
            "log_lik_points": self.log_lik_points,
            "anomalies": self.anomalies,
            "created": iso8601_utc(self.created_unix_ms),
            "updated": iso8601_utc(self.updated_unix_ms),
            "created_unix_ms": self.created_unix_ms,
            "updated_unix_ms": self.updated_unix_ms,
            "params": self.params,
            "weights": weights,
            "means": means,
            "covariances": covariances,
            "std_devs": std_devs,
            "bic_by_k": self.selection.map(|sel| {
                sel.bic_by_k
                    .iter()
                    .map(|&(k, b)| json!({ "k": k, "bic": b }))
                    .collect::<Vec<_>>()
            }),
            "chosen_by": self.selection.map(|sel| sel.chosen_by.as_str()),
            "component_changes": self.component_changes,
            "recent_points": self.criteria.map_or(0, |c| c.points),
            "bic": self.criteria.map(|c| c.bic),
            "aic": self.criteria.map(|c| c.aic),
        })
    }
}

/// A readable summary of a checkpoint: the model's shape, counters, times
/// and, once the warm-up is over, a compact K x d table of weights and
/// means (heaviest first; 8 dimensions fit in 100 columns), then one table
/// per component with its weight, mean, standard deviations and (full
/// covariance) correlations. `names` (one per dimension, else ignored)
/// label the dimensions; without them, the names the checkpoint recorded
/// from its input (a header, JSON `--fields`), if any.
pub fn render_text(ck: &Checkpoint, names: Option<&[String]>) -> String {
    let fly = on_the_fly(ck);
    Summary::of(ck, names, fly.as_ref()).text()
}

/// The model fitted on the fly on the warm-up buffer of a checkpoint
/// saved unfitted ([`crate::model::StepwiseEm::model_or_fit`]); `None`
/// when the checkpoint has its model, or the buffer cannot be fitted.
fn on_the_fly(ck: &Checkpoint) -> Option<GaussianMixture> {
    if ck.learner.mixture().is_some() {
        return None;
    }
    ck.learner
        .model_or_fit()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// The checkpoint as one JSON object (fields listed in the module docs);
/// `covariances` are always full d-by-d matrices; `names` is `names`, else
/// the checkpoint's recorded names, else null.
pub fn render_json(ck: &Checkpoint, names: Option<&[String]>) -> Value {
    let fly = on_the_fly(ck);
    Summary::of(ck, names, fly.as_ref()).json()
}

/// `name` cut to at most `width` characters (a cut one ends in `~`).
fn fit(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_owned()
    } else {
        let mut cut: String = name.chars().take(width.saturating_sub(1)).collect();
        cut.push('~');
        cut
    }
}

/// A number in at most 9 characters with 4 significant digits: plain
/// between 0.001 and 10^6, else in scientific notation.
fn short_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if (1e-3..1e6).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    }
}

/// `FieldCount` -> `field_count`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// A number in a fixed-point form when that is readable, scientific otherwise.
fn num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 || (1e-4..1e7).contains(&a) {
        format!("{x:.6}")
    } else {
        format!("{x:.6e}")
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for a count of
/// days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as ISO 8601 UTC, e.g. `2024-02-29T13:05:09.250Z`.
pub(crate) fn iso8601_utc(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RejectReason;
    use crate::model::MixtureParams;

    #[test]
    fn dates_match_known_instants() {
        // Values checked with `date -u -d @SECONDS`.
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_709_211_909_250), "2024-02-29T13:05:09.250Z");
        assert_eq!(iso8601_utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(iso8601_utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn reason_names_are_snake_case() {
        assert_eq!(snake_case("FieldCount"), "field_count");
        assert_eq!(snake_case("InvalidUtf8"), "invalid_utf8");
    }

    fn mixture(cov: CovarianceType) -> GaussianMixture {
        let covariances = match cov {
            CovarianceType::Full => vec![4.0, 1.2, 1.2, 1.0, 1.0, 0.0, 0.0, 9.0],
            CovarianceType::Diagonal => vec![4.0, 1.0, 1.0, 9.0],
            CovarianceType::Spherical => vec![4.0, 0.25],
        };
        GaussianMixture::new(MixtureParams {
            covariance: cov,
            dim: 2,
            weights: vec![0.25, 0.75],
            means: vec![-1.5, 2.0, 10.0, 0.0],
            covariances,
        })
        .unwrap()
    }

    fn summary<'a>(m: Option<&'a GaussianMixture>, rejected: &'a RejectCounts) -> Summary<'a> {
        Summary {
            dim: 2,
            components: 2,
            covariance: m.map_or(CovarianceType::Full, |m| m.covariance_type()),
            params: json!({"components": 2}),
            points_seen: 12_000,
            updates: 7,
            reseeds: 1,
            repairs: 2,
            refused_batches: 3,
            refused_points: 30,
            outliers: 4,
            log_lik_sum: -7000.0,
            log_lik_points: 2000,
            pending_points: if m.is_some() { 17 } else { 4321 },
            warmup: 5000,
            resolution: vec![Some(0.1), None],
            provisional: false,
            names: None,
            rejected,
            anomalies: 5,
            created_unix_ms: 1_709_211_909_250,
            updated_unix_ms: 1_709_215_509_250,
            mixture: m,
            on_the_fly: false,
            selection: None,
            component_changes: 0,
            criteria: None,
        }
    }

    fn rejects() -> RejectCounts {
        let mut r = RejectCounts::default();
        r.by_reason.insert(RejectReason::NotNumeric, 2);
        r.by_reason.insert(RejectReason::FieldCount, 10);
        r
    }

    #[test]
    fn text_shows_counters_times_and_component_tables() {
        let m = mixture(CovarianceType::Full);
        let r = rejects();
        let t = summary(Some(&m), &r).text();
        for want in [
            "2 components, 2 dimensions, full covariance",
            "resolution        dim 0 0.1, dim 1 none",
            "created           2024-02-29T13:05:09.250Z",
            "updated           2024-02-29T14:05:09.250Z",
            "points seen       12000",
            "avg log-lik       -3.500000 per point over the stream's 2000 points, test-then-train\n",
            "records rejected  12 (10 wrong number of fields, 2 not a number)",
            "re-seeds          1",
            "repairs           2",
            "refused batches   3 (30 points)",
            "outliers ignored  4",
            "component 0  weight 0.250000",
            "component 1  weight 0.750000",
            "correlations",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // Component 0: sd (2, 1), correlation 1.2 / (2 * 1) = 0.6.
        let row1 = t
            .lines()
            .find(|l| l.trim_start().starts_with("1 ") && l.contains("0.600"))
            .unwrap_or_else(|| panic!("no correlation row in\n{t}"));
        assert!(
            row1.contains("2.000000") && row1.contains("1.000000"),
            "{row1}"
        );
        assert!(!t.contains("warming up"));
    }

    /// The header and two rows of the compact table in `t`.
    fn table_lines(t: &str) -> Vec<&str> {
        t.lines()
            .skip_while(|l| !l.starts_with("components by weight"))
            .skip(1)
            .take(3)
            .collect()
    }

    #[test]
    fn compact_table_sorts_by_weight_and_fits_100_columns() {
        let m = mixture(CovarianceType::Full);
        let r = rejects();
        let t = summary(Some(&m), &r).text();
        let table = table_lines(&t);
        assert_eq!(
            table,
            [
                "    #   weight     dim 0     dim 1",
                "    1   0.7500     10.00         0",
                "    0   0.2500    -1.500     2.000",
            ],
            "{t}"
        );
        assert!(t.find("components by weight") < t.find("component 0  weight"));
        // Eight dimensions with long names and awkward values: 100 columns.
        let d = 8;
        let mut cov = vec![0.0; d * d];
        for a in 0..d {
            cov[a * d + a] = 1.0;
        }
        let big = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Full,
            dim: d,
            weights: vec![0.5, 0.5],
            means: (0..2 * d)
                .map(|i| -1.234_567e7 / 10f64.powi(i as i32))
                .collect(),
            covariances: [cov.clone(), cov].concat(),
        })
        .unwrap();
        let names: Vec<String> = (0..d).map(|a| format!("a very long name {a}")).collect();
        let mut s = summary(Some(&big), &r);
        s.dim = d;
        s.names = Some(&names);
        let t = s.text();
        let table = table_lines(&t);
        for l in &table {
            assert!(
                l.chars().count() <= 100,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        assert!(table[0].contains(" a very l~"), "{}", table[0]);
        assert!(table[1].contains("-1.23e7"), "{}", table[1]);
        // Names label the per-component rows too.
        assert!(t.contains("a very long name 7"), "{t}");
    }

    #[test]
    fn short_numbers_keep_four_significant_digits() {
        for (v, want) in [
            (0.0, "0"),
            (2745.123, "2745"),
            (61.75, "61.75"),
            (0.70213, "0.7021"),
            (-0.00123456, "-0.001235"),
            (1.5e-7, "1.50e-7"),
            (123_456_789.0, "1.23e8"),
        ] {
            assert_eq!(short_num(v), want);
        }
    }

    #[test]
    fn text_before_warm_up_says_so() {
        let r = RejectCounts::default();
        let mut s = summary(None, &r);
        s.log_lik_points = 0;
        let t = s.text();
        assert!(t.contains("Still warming up"), "{t}");
        assert!(t.contains("4321 points wait"), "{t}");
        assert!(t.contains("records rejected  0\n"), "{t}");
        assert!(t.contains("no point scored yet"), "{t}");
        assert!(!t.contains("component 0"), "{t}");
    }

    #[test]
    fn text_for_diagonal_has_no_correlations() {
        let m = mixture(CovarianceType::Diagonal);
        let r = RejectCounts::default();
        let t = summary(Some(&m), &r).text();
        assert!(!t.contains("correlations"), "{t}");
        assert!(t.contains("uncorrelated"), "{t}");
        assert!(t.contains("3.000000"), "sd of variance 9 missing in\n{t}");
    }

    #[test]
    fn the_choice_of_k_and_the_criteria_are_shown() {
        let m = mixture(CovarianceType::Full);
        let r = RejectCounts::default();
        let sel = ModelSelection {
            bic_by_k: vec![(1, 900.0), (2, 700.5), (3, 705.0)],
            chosen_by: "smallest K with BIC within 10 of the minimum".into(),
        };
        let mut s = summary(Some(&m), &r);
        let plain = (s.text(), s.json());
        assert!(!plain.0.contains("BIC"), "{}", plain.0);
        assert!(plain.1["bic_by_k"].is_null() && plain.1["bic"].is_null());
        s.selection = Some(&sel);
        s.component_changes = 2;
        s.criteria = Some(Criteria::from_log_lik(-1000.0, 11, 2000));
        let t = s.text();
        for want in [
            "K chosen by       smallest K with BIC within 10",
            "       2       700.500000",
            "K changes         2",
            "on the 2000 most recent points",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        let v = s.json();
        assert_eq!(v["bic_by_k"][1]["k"], 2);
        assert_eq!(v["bic_by_k"][1]["bic"], 700.5);
        assert_eq!(v["chosen_by"], sel.chosen_by.as_str());
        assert_eq!(v["component_changes"], 2);
        assert_eq!(v["recent_points"], 2000);
        assert_eq!(v["aic"], 2000.0 + 22.0);
        let bic = v["bic"].as_f64().unwrap();
        assert!((bic - (2000.0 + 11.0 * 2000f64.ln())).abs() < 1e-9, "{bic}");
    }

    fn as_f64s(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn json_has_the_model_and_counters() {
        for cov in [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ] {
            let m = mixture(cov);
            let r = rejects();
            let v = summary(Some(&m), &r).json();
            assert_eq!(v["format_version"], FORMAT_VERSION);
            assert_eq!(v["dim"], 2);
            assert_eq!(v["components"], 2);
            assert_eq!(v["resolution"], json!([0.1, null]));
            assert_eq!(v["covariance"], cov.name());
            assert_eq!(v["points_seen"], 12_000);
            assert_eq!(v["records_rejected"], 12);
            assert_eq!(v["rejected_by_reason"]["field_count"], 10);
            assert_eq!(v["rejected_by_reason"]["not_numeric"], 2);
            assert_eq!(v["reseeds"], 1);
            assert_eq!(v["updates"], 7);
            assert_eq!(v["avg_log_likelihood"], -3.5);
            assert_eq!(v["created"], "2024-02-29T13:05:09.250Z");
            assert_eq!(v["warmed_up"], true);
            assert_eq!(as_f64s(&v["weights"]), vec![0.25, 0.75]);
            assert_eq!(as_f64s(&v["means"][1]), vec![10.0, 0.0]);
            for j in 0..2 {
                let rows = v["covariances"][j].as_array().unwrap();
                assert_eq!(rows.len(), 2);
                let flat: Vec<f64> = rows.iter().flat_map(as_f64s).collect();
                assert_eq!(flat, m.covariance_matrix(j), "{cov} component {j}");
            }
            assert_eq!(as_f64s(&v["std_devs"][0])[0], 2.0);
        }
    }

    #[test]
    fn json_before_warm_up_has_empty_model() {
        let r = RejectCounts::default();
        let mut s = summary(None, &r);
        s.log_lik_points = 0;
        let v = s.json();
        assert_eq!(v["warmed_up"], false);
        assert_eq!(v["pending_points"], 4321);
        assert!(v["avg_log_likelihood"].is_null());
        assert_eq!(v["weights"].as_array().unwrap().len(), 0);
        assert_eq!(v["covariances"].as_array().unwrap().len(), 0);
        assert_eq!(v["records_rejected"], 0);
        assert!(v["rejected_by_reason"].as_object().unwrap().is_empty());
    }

    fn real_checkpoint(n: usize) -> Checkpoint {
        use crate::model::{testdata, Params, StepwiseEm};
        use rand::SeedableRng;
        let params = Params {
            components: crate::model::ComponentCount::Fixed(2),
            batch_size: 100,
            warmup: 500,
            seed: 3,
            ..Params::default()
        };
        let mut learner = StepwiseEm::new(params.check().unwrap(), 2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let xs = testdata::two_clusters().sample(&mut rng, n);
        learner.observe(&xs, None).unwrap();
        Checkpoint {
            learner,
            rejected: rejects(),
            anomalies: 0,
            created_unix_ms: 1_709_211_909_250,
            updated_unix_ms: 1_709_215_509_250,
            sources: Vec::new(),
            columns: None,
            selection: None,
        }
    }

    #[test]
    fn reports_of_a_real_checkpoint() {
        let ck = real_checkpoint(20_050);
        let m = ck.learner.mixture().unwrap();
        let v = render_json(&ck, None);
        assert_eq!(v["points_seen"], ck.learner.counters().points_seen);
        assert_eq!(v["pending_points"], 50);
        assert_eq!(v["covariance"], "full");
        assert_eq!(as_f64s(&v["weights"]), m.weights());
        let avg = v["avg_log_likelihood"].as_f64().unwrap();
        assert!((avg - ck.learner.counters().avg_log_lik()).abs() < 1e-12);
        // The learned means are near the true ones (1, 1) and (7, 7), in
        // some order.
        let mut firsts: Vec<f64> = (0..2).map(|j| as_f64s(&v["means"][j])[0]).collect();
        firsts.sort_by(f64::total_cmp);
        assert!(
            (firsts[0] - 1.0).abs() < 0.3 && (firsts[1] - 7.0).abs() < 0.3,
            "{firsts:?}"
        );
        let t = render_text(&ck, None);
        assert!(t.contains("component 1  weight"), "{t}");
        assert!(t.contains("records rejected  12"), "{t}");

        let early = real_checkpoint(321);
        let t = render_text(&early, None);
        assert!(t.contains("321 points wait in the warm-up buffer"), "{t}");
        // Saved unfitted, shown fitted on the fly, the same every time.
        assert!(t.contains("fitted on the fly"), "{t}");
        assert!(t.contains("component 1  weight"), "{t}");
        assert_eq!(render_text(&early, None), t);
        let v = render_json(&early, None);
        assert_eq!(v["warmed_up"], false);
        assert_eq!(v["fitted_on_the_fly"], true);
        assert_eq!(as_f64s(&v["weights"]).len(), 2);
        let fly = early.learner.model_or_fit().unwrap();
        assert_eq!(as_f64s(&v["weights"]), fly.weights());
        assert!(early.learner.mixture().is_none());
        assert_eq!(v["points_seen"], early.learner.counters().points_seen);
        assert_eq!(v["params"]["warmup"], 500);

        // A signal stopped the first fit with 200 points behind the
        // warm-up's: shown fitted on the fly as a resume would do it.
        let mut stopped = real_checkpoint(0);
        let stop = crate::model::em::Interrupt::default();
        stopped.learner.set_interrupt(stop.clone());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(4);
        let xs = crate::model::testdata::two_clusters().sample(&mut rng, 700);
        assert!(stopped.learner.observe(&xs, None).is_err());
        let t = render_text(&stopped, None);
        assert!(
            t.contains("a signal stopped the first fit; 700 points wait in the warm-up buffer, saved unfitted (the warm-up's 500 and 200 received after them"),
            "{t}"
        );
        let v = render_json(&stopped, None);
        assert_eq!(v["pending_points"], 700);
        assert_eq!(v["fitted_on_the_fly"], true);
        let fly = stopped.learner.model_or_fit().unwrap();
        assert_eq!(as_f64s(&v["weights"]), fly.weights());
    }
}
