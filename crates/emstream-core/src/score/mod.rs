//! Per-point score output (`run --score` and `score`): label, log-likelihood
//! under the model before the point was learned, optional responsibilities,
//! and anomaly flags.
//!
//! # Line format
//!
//! One line per accepted record, in input order, no header unless asked for
//! (`score --header`, [`Scorer::header`]):
//!
//! - CSV: `label,log_lik[,resp_0,...,resp_{K-1}][,anomaly]` with `anomaly`
//!   written `1` or `0`, for example `1,-3.2104589210923,0.02,0.98,0`.
//! - JSON: `{"label":1,"log_lik":-3.2104589210923,"resp":[0.02,0.98],"anomaly":false}`;
//!   a log-likelihood that is not finite is written `null`.
//! - A gross outlier (left out of learning, see
//!   [`OUTLIER_SPREAD`](crate::model::em::OUTLIER_SPREAD)) has no label: an
//!   empty label field in CSV (`,-inf`), `"label":null` and
//!   `"outlier":true` in JSON; its log-likelihood is its log density when
//!   finite, else `-inf` (`null` in JSON), never NaN; its
//!   responsibilities are 0.
//!
//! - With `--score-keep` ([`keep`]), the kept input fields come first:
//!   `id,@line,label,log_lik,...` in CSV, `{"id":"s3","@line":4,"label":...}`
//!   in JSON.
//!
//! Numbers are written in the shortest form that reads back to the same
//! `f64` (so a log-likelihood compares exactly with
//! [`GaussianMixture::log_prob`](crate::model::GaussianMixture::log_prob)). `resp` appears with `--score-fields`,
//! `anomaly` with any alert rule.
//!
//! # Anomaly rules
//!
//! - [`AlertRule::Below`]`(t)`: a point is flagged when its log-likelihood is
//!   below `t` (or is NaN).
//! - [`AlertRule::Quantile`]`(q)`: a point is flagged when its log-likelihood
//!   is below the q-quantile of the recent log-likelihoods that are not gross
//!   outliers. Exactly: keep the last [`ALERT_WINDOW`] finite log-likelihoods
//!   (flagged points included, so the detector follows a drifting stream),
//!   and apart the last [`ALERT_NORMAL`] that were not flagged: the model's
//!   normal points. With `m` the median and `t` the [`ALERT_TAIL`]-quantile
//!   of the normal points, the fence is `t - ALERT_FENCE * (m - t)`; the
//!   threshold is the q-quantile of the window values at or above the
//!   fence. Gross outliers (below the fence) are therefore always flagged
//!   but never pull the threshold down into themselves, which a plain
//!   q-quantile would do as soon as outliers are more frequent than q. The
//!   fence stands on the normal points, not on the whole window: points
//!   the model does not explain (a shift it has not absorbed, a burst of
//!   anomalies) are flagged and leave it where it was, however many of
//!   them the window holds, and once the model has followed a shift, the
//!   points it scored badly on the way lie below the fence placed by the
//!   points it now explains, so they stop blunting the threshold within
//!   [`ALERT_NORMAL`] points. A moderate drop of every log-likelihood
//!   (the model explains a noisier stream less well) is followed: the
//!   points above the threshold widen the fence until it holds the new
//!   spread. The threshold is recomputed every
//!   [`ALERT_REFRESH`] points (more often while the window fills). Until the
//!   window holds [`ALERT_MIN_POINTS`] points nothing is flagged; at the very
//!   start the first points of the first block are looked at ahead to fill
//!   it, so the first points are judged too. While fewer than `1/q` points
//!   lie above the fence the threshold is their minimum, so only gross
//!   outliers are flagged then.
//!
//! With 1 % of points 10 standard deviations out, the inliers' tail sits a
//! few nats below the median and the outliers about 50 nats below it, far
//! under the fence; `--alert-quantile 0.005` then flags every outlier and
//! about 0.5 % of the inliers (see the tests).

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::model::{ScoreBuffer, NO_LABEL};

pub mod keep;
pub use keep::{KeepFormat, KeptPrefixes};
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

/// How many recent log-likelihoods [`AlertRule::Quantile`] looks at.
pub const ALERT_WINDOW: usize = 4096;
/// Points between two recomputations of the quantile threshold once the
/// window is full.
pub const ALERT_REFRESH: usize = 512;
/// How many recent points that were not flagged place the fence of
/// [`AlertRule::Quantile`].
pub const ALERT_NORMAL: usize = 512;
/// Points the window must hold before anything is flagged by a quantile.
pub const ALERT_MIN_POINTS: usize = 32;
/// Lower quantile of the window used, with the median, to place the fence
/// below which points are gross outliers.
pub const ALERT_TAIL: f64 = 0.25;
/// How many (median - tail) spreads below the tail quantile the fence lies.
pub const ALERT_FENCE: f64 = 10.0;

/// When a point is flagged as an anomaly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AlertRule {
    /// Never.
    None,
    /// Log-likelihood below a fixed threshold.
    Below(f64),
    /// Log-likelihood below the running q-quantile of recent points.
    Quantile(f64),
}

/// How score lines look.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreOptions {
    /// JSON objects instead of CSV.
    pub json: bool,
    /// Also write the K responsibilities.
    pub responsibilities: bool,
    /// Anomaly rule; any rule but `None` adds an `anomaly` field.
    pub alert: AlertRule,
}

/// The anomaly flags shared by `run --score` and `score`; flatten it into a
/// command's arguments with `#[command(flatten)]`.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct AlertArgs {
    /// Flag points whose log-likelihood is below LL (adds an `anomaly` field).
    #[arg(long, value_name = "LL", allow_negative_numbers = true, value_parser = parse_finite, conflicts_with = "alert_quantile")]
    pub alert_below: Option<f64>,
    /// Flag points whose log-likelihood is below the running Q-quantile of
    /// recent points, 0 < Q < 1 (adds an `anomaly` field).
    #[arg(long, value_name = "Q", value_parser = parse_quantile)]
    pub alert_quantile: Option<f64>,
}

impl AlertArgs {
    /// The rule these flags ask for.
    pub fn rule(&self) -> AlertRule {
        match (self.alert_below, self.alert_quantile) {
            (Some(t), _) => AlertRule::Below(t),
            (None, Some(q)) => AlertRule::Quantile(q),
            (None, None) => AlertRule::None,
        }
    }
}

fn parse_finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a finite number")),
    }
}

fn parse_quantile(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a quantile strictly between 0 and 1 (try 0.005)"
        )),
    }
}

/// Flags anomalies in blocks of log-likelihoods by an [`AlertRule`],
/// keeping the state of the quantile rule between blocks.
///
/// The learner runs it on the thread that produces the scores, so the
/// anomaly count published with a model snapshot is the count of exactly
/// the points that model has seen; the score writer only formats the flags.
#[derive(Clone, Debug)]
pub struct AnomalyDetector {
    rule: AlertRule,
    quantile: Option<QuantileDetector>,
    anomalies: u64,
}

impl AnomalyDetector {
    /// A detector for `rule` (a quantile outside (0, 1) is clamped into it).
    pub fn new(rule: AlertRule) -> Self {
        let quantile = match rule {
            AlertRule::Quantile(q) => Some(QuantileDetector::new(q)),
            _ => None,
        };
        AnomalyDetector {
            rule,
            quantile,
            anomalies: 0,
        }
    }

    /// The rule.
    pub fn rule(&self) -> &AlertRule {
        &self.rule
    }

    /// Judges one block of log-likelihoods, in order: `flags` is replaced by
    /// one flag per point (left empty for [`AlertRule::None`]). Returns how
    /// many were flagged.
    pub fn flag_block(&mut self, lls: &[f64], flags: &mut Vec<bool>) -> u64 {
        flags.clear();
        match self.rule {
            AlertRule::None => return 0,
            // NaN is flagged too.
            AlertRule::Below(t) => flags.extend(lls.iter().map(|&ll| ll < t || ll.is_nan())),
            AlertRule::Quantile(_) => {
                if let Some(det) = self.quantile.as_mut() {
                    det.begin_block(lls);
                    flags.extend(lls.iter().enumerate().map(|(i, &ll)| det.observe(i, ll)));
                    det.end_block();
                }
            }
        }
        let n = flags.iter().filter(|&&f| f).count() as u64;
        self.anomalies += n;
        n
    }

    /// Points flagged so far.
    pub fn anomalies(&self) -> u64 {
        self.anomalies
    }

    /// The log-likelihood below which a point is flagged now: the fixed
    /// threshold of [`AlertRule::Below`], the running one of
    /// [`AlertRule::Quantile`] (`None` while its window is still filling),
    /// `None` without a rule.
    pub fn threshold(&self) -> Option<f64> {
        match self.rule {
            AlertRule::None => None,
            AlertRule::Below(t) => Some(t),
            AlertRule::Quantile(_) => self.quantile_threshold(),
        }
    }

    /// The current threshold of the quantile rule (`None` for other rules or
    /// while the window is still filling), for diagnostics and tests.
    pub fn quantile_threshold(&self) -> Option<f64> {
        self.quantile
            .as_ref()
            .map(|d| d.threshold)
            .filter(|t| t.is_finite())
    }
}

/// Writes score lines; with [`Scorer::write_block`] it also flags
/// anomalies with its own [`AnomalyDetector`], with
/// [`Scorer::write_flagged`] it writes flags judged elsewhere.
#[derive(Clone, Debug)]
pub struct Scorer {
    options: ScoreOptions,
    k: usize,
    buf: Vec<u8>,
    detector: AnomalyDetector,
    flags: Vec<bool>,
    /// The kept fields' names that start the CSV header.
    keep_header: String,
}

/// Bytes of formatted lines held before they are handed to the writer.
const WRITE_CHUNK: usize = 1 << 16;

impl Scorer {
    /// A scorer with these options for a K-component model. K names the
    /// fields of [`Scorer::header`]; the lines of a block take K from its
    /// responsibilities (a block holds whole points of one model).
    ///
    /// A quantile outside (0, 1) is clamped into it.
    pub fn new(options: ScoreOptions, k: usize) -> Self {
        let detector = AnomalyDetector::new(options.alert.clone());
        Scorer {
            options,
            k,
            buf: Vec::with_capacity(WRITE_CHUNK + 1024),
            detector,
            flags: Vec::new(),
            keep_header: String::new(),
        }
    }

    /// Names the kept fields ([`KeepFormat::header`]) first in
    /// [`Scorer::header`].
    pub fn with_keep(mut self, keep: &KeepFormat) -> Self {
        self.keep_header = keep.header();
        self
    }

    /// The CSV header line (with its newline) naming the fields this scorer
    /// writes, for callers that want one; JSON lines need none, so this is
    /// empty for JSON.
    pub fn header(&self) -> String {
        if self.options.json {
            return String::new();
        }
        let mut h = self.keep_header.clone();
        h.push_str("label,log_lik");
        if self.options.responsibilities {
            for j in 0..self.k {
                h.push_str(&format!(",resp_{j}"));
            }
        }
        if self.options.alert != AlertRule::None {
            h.push_str(",anomaly");
        }
        h.push('\n');
        h
    }

    /// Flags the points held in `scores` with this scorer's detector, then
    /// writes one line per point ([`Scorer::write_flagged`]); returns how
    /// many were flagged as anomalies.
    ///
    /// # Errors
    ///
    /// As [`Scorer::write_flagged`].
    pub fn write_block<W: Write>(&mut self, scores: &ScoreBuffer, out: &mut W) -> io::Result<u64> {
        self.write_block_kept(scores, None, out)
    }

    /// [`Scorer::write_block`] with each line started by its kept fields
    /// (one per point, when given).
    ///
    /// # Errors
    ///
    /// As [`Scorer::write_kept`].
    pub fn write_block_kept<W: Write>(
        &mut self,
        scores: &ScoreBuffer,
        kept: Option<&KeptPrefixes>,
        out: &mut W,
    ) -> io::Result<u64> {
        let mut flags = std::mem::take(&mut self.flags);
        let n = self.detector.flag_block(&scores.log_lik, &mut flags);
        let r = self.write_kept(scores, &flags, kept, out);
        self.flags = flags;
        r.map(|()| n)
    }

    /// Writes one line per point held in `scores` (labels, log_lik and, when
    /// asked, resp), with the anomaly field from `flags` (one per point)
    /// when the options have an alert rule.
    ///
    /// # Errors
    ///
    /// The writer's I/O error (a closed stdout shows up here), or
    /// `InvalidInput` when `scores` lacks the responsibilities this scorer
    /// was asked to write or `flags` does not match the points.
    pub fn write_flagged<W: Write>(
        &mut self,
        scores: &ScoreBuffer,
        flags: &[bool],
        out: &mut W,
    ) -> io::Result<()> {
        self.write_kept(scores, flags, None, out)
    }

    /// [`Scorer::write_flagged`] with each line started by its kept fields
    /// (`--score-keep`), one per point, when given.
    ///
    /// # Errors
    ///
    /// As [`Scorer::write_flagged`], and `InvalidInput` when `kept` does
    /// not hold one entry per point.
    pub fn write_kept<W: Write>(
        &mut self,
        scores: &ScoreBuffer,
        flags: &[bool],
        kept: Option<&KeptPrefixes>,
        out: &mut W,
    ) -> io::Result<()> {
        let n = scores.log_lik.len();
        if let Some(k) = kept.filter(|k| k.len() != n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} kept-field entries for {n} points", k.len()),
            ));
        }
        // K of this block's model: a run with `--components auto` knows it
        // only once the warm-up is over.
        let k = match n {
            0 => self.k,
            _ if self.options.responsibilities => scores.resp.len() / n,
            _ => self.k,
        };
        if scores.labels.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} labels for {n} log-likelihoods", scores.labels.len()),
            ));
        }
        if self.options.responsibilities && (scores.resp.len() != n * k || (n > 0 && k == 0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} responsibilities for {n} points of {k} components: set ScoreBuffer::want_resp",
                    scores.resp.len()
                ),
            ));
        }
        let with_flags = self.options.alert != AlertRule::None;
        if with_flags && flags.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} anomaly flags for {n} points", flags.len()),
            ));
        }
        let mut fbuf = zmij::Buffer::new();
        let mut ibuf = itoa::Buffer::new();
        let json = self.options.json;
        self.buf.clear();
        for i in 0..n {
            let ll = scores.log_lik[i];
            let flag = with_flags.then(|| flags[i]);
            let b = &mut self.buf;
            if json {
                b.push(b'{');
                if let Some(k) = kept {
                    b.extend_from_slice(k.get(i));
                }
                b.extend_from_slice(b"\"label\":");
                match scores.labels[i] {
                    NO_LABEL => b.extend_from_slice(b"null"),
                    l => b.extend_from_slice(ibuf.format(l).as_bytes()),
                }
                b.extend_from_slice(b",\"log_lik\":");
                push_json_f64(b, &mut fbuf, ll);
                if self.options.responsibilities {
                    b.extend_from_slice(b",\"resp\":[");
                    for (j, &r) in scores.resp[i * k..(i + 1) * k].iter().enumerate() {
                        if j > 0 {
                            b.push(b',');
                        }
                        push_json_f64(b, &mut fbuf, r);
                    }
                    b.push(b']');
                }
                if scores.labels[i] == NO_LABEL {
                    b.extend_from_slice(b",\"outlier\":true");
                }
                match flag {
                    Some(true) => b.extend_from_slice(b",\"anomaly\":true"),
                    Some(false) => b.extend_from_slice(b",\"anomaly\":false"),
                    None => {}
                }
                b.extend_from_slice(b"}\n");
            } else {
                if let Some(k) = kept {
                    b.extend_from_slice(k.get(i));
                }
                if scores.labels[i] != NO_LABEL {
                    b.extend_from_slice(ibuf.format(scores.labels[i]).as_bytes());
                }
                b.push(b',');
                b.extend_from_slice(fbuf.format(ll).as_bytes());
                if self.options.responsibilities {
                    for &r in &scores.resp[i * k..(i + 1) * k] {
                        b.push(b',');
                        b.extend_from_slice(fbuf.format(r).as_bytes());
                    }
                }
                match flag {
                    Some(true) => b.extend_from_slice(b",1"),
                    Some(false) => b.extend_from_slice(b",0"),
                    None => {}
                }
                b.push(b'\n');
            }
            if self.buf.len() >= WRITE_CHUNK {
                out.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Points flagged so far by this scorer's own detector.
    pub fn anomalies(&self) -> u64 {
        self.detector.anomalies()
    }

    /// The current threshold of the quantile rule (`None` for other rules or
    /// while the window is still filling), for diagnostics and tests.
    pub fn quantile_threshold(&self) -> Option<f64> {
        self.detector.quantile_threshold()
    }
}

#[inline]
fn push_json_f64(b: &mut Vec<u8>, fbuf: &mut zmij::Buffer, v: f64) {
    if v.is_finite() {
        b.extend_from_slice(fbuf.format_finite(v).as_bytes());
    } else {
        b.extend_from_slice(b"null");
    }
}

/// Puts `v` in the ring `ring` of capacity `cap` whose oldest value, once
/// full, is at `head`.
fn ring_push(ring: &mut Vec<f64>, head: &mut usize, cap: usize, v: f64) {
    if ring.len() < cap {
        ring.push(v);
    } else {
        ring[*head] = v;
        *head = (*head + 1) % cap;
    }
}

/// The state of [`AlertRule::Quantile`]: a ring of recent log-likelihoods
/// and the threshold computed from it (see the module docs for the rule).
#[derive(Clone, Debug)]
struct QuantileDetector {
    q: f64,
    ring: Vec<f64>,
    head: usize,
    /// The last [`ALERT_NORMAL`] finite log-likelihoods not flagged.
    normal: Vec<f64>,
    normal_head: usize,
    scratch: Vec<f64>,
    threshold: f64,
    since_refresh: usize,
    /// Points at the start of the current block already put in the ring by
    /// the look-ahead of [`QuantileDetector::begin_block`].
    ahead: usize,
}

impl QuantileDetector {
    fn new(q: f64) -> Self {
        QuantileDetector {
            q: q.clamp(0.0, 1.0),
            ring: Vec::with_capacity(ALERT_WINDOW),
            head: 0,
            normal: Vec::with_capacity(ALERT_NORMAL),
            normal_head: 0,
            scratch: Vec::with_capacity(ALERT_WINDOW),
            threshold: f64::NEG_INFINITY,
            since_refresh: 0,
            ahead: 0,
        }
    }

    fn push(&mut self, v: f64) {
        ring_push(&mut self.ring, &mut self.head, ALERT_WINDOW, v);
    }

    fn push_normal(&mut self, v: f64) {
        ring_push(&mut self.normal, &mut self.normal_head, ALERT_NORMAL, v);
    }

    /// At the very start, fills the window from the first points of the
    /// block so that they can be judged too.
    fn begin_block(&mut self, lls: &[f64]) {
        self.ahead = 0;
        if self.ring.len() >= ALERT_MIN_POINTS {
            return;
        }
        for &v in lls {
            if self.ring.len() >= ALERT_MIN_POINTS {
                break;
            }
            self.ahead += 1;
            if v.is_finite() {
                self.push(v);
                self.push_normal(v);
            }
        }
        self.refresh();
    }

    fn end_block(&mut self) {
        self.ahead = 0;
    }

    /// Judges the point at index `i` of the current block and adds it to
    /// the window.
    fn observe(&mut self, i: usize, ll: f64) -> bool {
        let flagged = ll.is_nan() || ll == f64::NEG_INFINITY || ll < self.threshold;
        if i >= self.ahead && ll.is_finite() {
            self.push(ll);
            if !flagged {
                self.push_normal(ll);
            }
        }
        self.since_refresh += 1;
        if self.since_refresh >= (self.ring.len() / 8).clamp(1, ALERT_REFRESH) {
            self.refresh();
        }
        flagged
    }

    fn refresh(&mut self) {
        self.since_refresh = 0;
        let n = self.ring.len();
        if n < ALERT_MIN_POINTS {
            self.threshold = f64::NEG_INFINITY;
            return;
        }
        let cmp = |a: &f64, b: &f64| a.total_cmp(b);
        let s = &mut self.scratch;
        // The fence, from the normal points (all points while too few).
        s.clear();
        if self.normal.len() >= ALERT_MIN_POINTS {
            s.extend_from_slice(&self.normal);
        } else {
            s.extend_from_slice(&self.ring);
        }
        let m = s.len();
        let i_med = (m - 1) / 2;
        let median = *s.select_nth_unstable_by(i_med, cmp).1;
        let i_tail = ((m - 1) as f64 * ALERT_TAIL) as usize;
        let tail = *s[..i_med].select_nth_unstable_by(i_tail, cmp).1;
        let fence = tail - ALERT_FENCE * (median - tail);
        // The q-quantile of the window's values at or above it.
        s.clear();
        s.extend_from_slice(&self.ring);
        let below = s.iter().filter(|&&v| v < fence).count();
        let above = n - below;
        let rank = (below + (self.q * above as f64) as usize).min(n - 1);
        self.threshold = *s.select_nth_unstable_by(rank, cmp).1;
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::model::GaussianMixture;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn scores_of(m: &GaussianMixture, pts: &[f64], want_resp: bool) -> ScoreBuffer {
        let mut sb = ScoreBuffer {
            want_resp,
            ..ScoreBuffer::default()
        };
        let mut scratch = Vec::new();
        m.score_batch(
            pts,
            &mut scratch,
            &mut sb.log_lik,
            &mut sb.labels,
            want_resp.then_some(&mut sb.resp),
        );
        sb
    }

    #[test]
    fn csv_lines_one_per_point_in_order_with_exact_log_likelihoods() {
        let m = two_d();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let pts = m.sample(&mut rng, 500);
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: false,
                responsibilities: true,
                alert: AlertRule::None,
            },
            2,
        );
        let mut out = Vec::new();
        // Two blocks, as the learner would hand them over.
        scorer
            .write_block(&scores_of(&m, &pts[..300], true), &mut out)
            .unwrap();
        scorer
            .write_block(&scores_of(&m, &pts[300..], true), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        let mut resp = [0.0; 2];
        for (line, x) in lines.iter().zip(pts.chunks(2)) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 4, "{line}");
            assert_eq!(f[0].parse::<usize>().unwrap(), m.predict(x));
            // Shortest round-trip formatting: bit-exact.
            assert_eq!(f[1].parse::<f64>().unwrap(), m.log_prob(x));
            m.responsibilities(x, &mut resp);
            assert_eq!(f[2].parse::<f64>().unwrap(), resp[0]);
            assert_eq!(f[3].parse::<f64>().unwrap(), resp[1]);
        }
        assert_eq!(scorer.anomalies(), 0);
        assert_eq!(scorer.header(), "label,log_lik,resp_0,resp_1\n");
    }

    #[test]
    fn json_lines_parse_and_carry_the_anomaly_flag() {
        let m = two_d();
        let pts = [1.0, 1.0, 100.0, -100.0];
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: true,
                responsibilities: true,
                alert: AlertRule::Below(-20.0),
            },
            2,
        );
        let mut out = Vec::new();
        let flagged = scorer
            .write_block(&scores_of(&m, &pts, true), &mut out)
            .unwrap();
        assert_eq!(flagged, 1);
        let text = String::from_utf8(out).unwrap();
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["anomaly"], false);
        assert_eq!(v[1]["anomaly"], true);
        assert_eq!(json_number(&text, 0, "log_lik"), m.log_prob(&pts[..2]));
        assert_eq!(v[0]["resp"].as_array().unwrap().len(), 2);
        assert_eq!(v[0]["label"], 0);
    }

    #[test]
    fn missing_responsibilities_are_an_error_not_a_panic() {
        let m = two_d();
        let sb = scores_of(&m, &[1.0, 1.0], false);
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: false,
                responsibilities: true,
                alert: AlertRule::None,
            },
            2,
        );
        let err = scorer.write_block(&sb, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn alert_quantile_catches_ten_sigma_outliers_with_few_false_alarms() {
        let m = two_d();
        for seed in [3, 4, 5] {
            let (pts, is_out) = contaminated(&m, 100_000, seed);
            let mut scorer = Scorer::new(
                ScoreOptions {
                    json: false,
                    responsibilities: false,
                    alert: AlertRule::Quantile(0.005),
                },
                2,
            );
            let mut out = Vec::new();
            for block in pts.chunks(2 * 1000) {
                scorer
                    .write_block(&scores_of(&m, block, false), &mut out)
                    .unwrap();
            }
            let flagged = flags(std::str::from_utf8(&out).unwrap());
            assert_eq!(flagged.len(), 100_000);
            let (recall, false_rate) = check_rates(&flagged, &is_out);
            assert!(recall >= 0.99, "seed {seed}: caught {recall}");
            assert!(false_rate <= 0.01, "seed {seed}: false alarms {false_rate}");
            // The rule flags about q of the inliers, not none: the quantile
            // is really used.
            assert!(false_rate > 0.002, "seed {seed}: false alarms {false_rate}");
            assert_eq!(
                scorer.anomalies(),
                flagged.iter().filter(|&&f| f).count() as u64
            );
        }
    }

    #[test]
    fn alert_quantile_judges_the_first_points_too() {
        // Outliers among the very first points of the first block.
        let m = two_d();
        let (mut pts, mut is_out) = contaminated(&m, 5000, 9);
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        for i in [0usize, 3, 17] {
            let o = outlier(&m, &mut rng, 10.0);
            pts[2 * i..2 * i + 2].copy_from_slice(&o);
            is_out[i] = true;
        }
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: false,
                responsibilities: false,
                alert: AlertRule::Quantile(0.005),
            },
            2,
        );
        let mut out = Vec::new();
        scorer
            .write_block(&scores_of(&m, &pts, false), &mut out)
            .unwrap();
        let flagged = flags(std::str::from_utf8(&out).unwrap());
        assert!(flagged[0] && flagged[3] && flagged[17]);
        let (recall, false_rate) = check_rates(&flagged, &is_out);
        assert!(recall >= 0.99, "caught {recall}");
        assert!(false_rate <= 0.01, "false alarms {false_rate}");
    }

    /// Flags of `lls` judged by `--alert-quantile q`, in blocks of 512.
    fn quantile_flags(lls: &[f64], q: f64) -> Vec<bool> {
        let mut det = AnomalyDetector::new(AlertRule::Quantile(q));
        let mut all = Vec::new();
        let mut flags = Vec::new();
        for block in lls.chunks(512) {
            det.flag_block(block, &mut flags);
            all.extend_from_slice(&flags);
        }
        all
    }

    #[test]
    fn alert_quantile_stays_sharp_after_a_shift_the_model_followed() {
        // Normal points (median about -2.2), then 1,500 points the model
        // scores at about -70 before it follows them, then normal points
        // again with an anomaly five times worse than normal (-11) every
        // 100 points: each one is flagged, from the first on.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut lls = Vec::new();
        let mut planted = Vec::new();
        for i in 0..30_000 {
            let z: f64 = StandardNormal.sample(&mut rng);
            let normal = -2.0 - 0.5 * z * z;
            lls.push(match i {
                20_000..21_500 => normal - 68.0,
                21_500.. if i % 100 == 0 => {
                    planted.push(i);
                    -11.0
                }
                _ => normal,
            });
        }
        let flagged = quantile_flags(&lls, 0.001);
        let missed: Vec<usize> = planted.iter().copied().filter(|&i| !flagged[i]).collect();
        assert!(missed.is_empty(), "missed {missed:?}");
        // Nor does the shift itself become normal while it lasts.
        let during = flagged[20_000..21_500].iter().filter(|&&f| f).count();
        assert!(during > 1_400, "{during} of 1500 flagged");
        let normal_flags = flagged[22_000..]
            .iter()
            .enumerate()
            .filter(|&(i, &f)| f && (22_000 + i) % 100 != 0)
            .count();
        assert!(normal_flags < 40, "{normal_flags} false alarms in 8,000");
    }

    #[test]
    fn alert_quantile_follows_a_level_shift() {
        // In-distribution log-likelihoods that drop by 3 nats for good: the
        // detector must stop flagging them once the window has moved on.
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: false,
                responsibilities: false,
                alert: AlertRule::Quantile(0.01),
            },
            1,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut sb = ScoreBuffer::default();
        for i in 0..40_000 {
            let z: f64 = StandardNormal.sample(&mut rng);
            let shift = if i < 20_000 { 0.0 } else { -3.0 };
            sb.log_lik.push(-0.5 * z * z + shift);
            sb.labels.push(0);
        }
        let mut out = Vec::new();
        scorer.write_block(&sb, &mut out).unwrap();
        let flagged = flags(std::str::from_utf8(&out).unwrap());
        let late = flagged[30_000..].iter().filter(|&&f| f).count();
        assert!(late < 300, "{late} of the last 10000 flagged");
    }

    #[test]
    fn alert_below_flags_exactly_the_points_under_the_threshold() {
        let m = two_d();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let pts = m.sample(&mut rng, 2000);
        let sb = scores_of(&m, &pts, false);
        let t = -5.0;
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: false,
                responsibilities: false,
                alert: AlertRule::Below(t),
            },
            2,
        );
        let mut out = Vec::new();
        let n = scorer.write_block(&sb, &mut out).unwrap();
        let flagged = flags(std::str::from_utf8(&out).unwrap());
        let expect: Vec<bool> = sb.log_lik.iter().map(|&l| l < t).collect();
        assert_eq!(flagged, expect);
        assert_eq!(n, expect.iter().filter(|&&f| f).count() as u64);
        assert!(n > 0);
    }

    #[test]
    fn alert_flags_parse_and_validate() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            alert: AlertArgs,
        }
        let c = Cli::try_parse_from(["x", "--alert-below", "-12.5"]).unwrap();
        assert_eq!(c.alert.rule(), AlertRule::Below(-12.5));
        let c = Cli::try_parse_from(["x", "--alert-quantile", "0.005"]).unwrap();
        assert_eq!(c.alert.rule(), AlertRule::Quantile(0.005));
        assert!(Cli::try_parse_from(["x", "--alert-quantile", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--alert-below", "nan"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "--alert-below", "-1", "--alert-quantile", "0.1"]).is_err()
        );
        assert_eq!(
            Cli::try_parse_from(["x"]).unwrap().alert.rule(),
            AlertRule::None
        );
    }
}
