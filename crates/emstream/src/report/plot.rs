//! `emstream plot`: a hand-written SVG picture of a mixture (rendered to
//! PNG by `resvg` for `-o x.png`, see [`svg_to_png`]).
//!
//! - d = 2, or d > 2 with `--dims I,J`: the points (if any) projected on two
//!   dimensions and each component's 1-, 2- and 3-sigma ellipses, from the
//!   eigen-decomposition of the marginal 2x2 covariance of those
//!   dimensions. Each axis fits its own data (Old Faithful's eruptions of
//!   2-5 minutes and waits of 40-100 minutes both fill the frame); equal
//!   scales are an option ([`PlotOptions::equal_aspect`]).
//! - d > 2 by default: a corner grid, every pair of dimensions below the
//!   diagonal and each dimension's histogram and marginal densities on it.
//! - d = 1: a histogram of the points (if any), each weighted component
//!   density `w_j N(x | mu_j, sigma_j^2)` and the mixture density.
//!
//! Histograms count every point of `--data` in bounded memory
//! ([`Histogram`] doubles its bin width to take in a far value); the
//! scatter shows a seeded uniform sample. Axis labels are the dimensions'
//! names when known (the data's header, or [`PlotOptions::names`]).
//!
//! The SVG uses no font file and no library: text asks for the generic
//! `sans-serif` family. Elements carry classes and ids that tests (and CSS)
//! can find: one `<g class="component" id="component-J">` per component,
//! holding `ellipse.sigma-1`, `ellipse.sigma-2`, `ellipse.sigma-3` and
//! `path.mean` (2-D) or `path.component-density` (1-D); `path#mixture-density`
//! (1-D); `g#points` with one `circle` per point (2-D) or `g#histogram` with
//! one `rect.hist-bar` per bin (1-D); `g#legend`; `text#x-label`,
//! `text#y-label`. In a grid each panel is a `g.panel` with
//! `data-dims="I,J"` (or `"I"` on the diagonal) holding the same shapes
//! with classes only (components are `g.panel-component`).

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ReportError;
use crate::input::{Batch, BatchReader, Columns, Format, Parser, ParserConfig};
use crate::model::GaussianMixture;

/// Width of a single-panel picture in pixels.
const WIDTH: f64 = 800.0;
/// Height of a single-panel picture in pixels.
const HEIGHT: f64 = 600.0;
const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 190.0;
const MARGIN_TOP: f64 = 56.0;
const MARGIN_BOTTOM: f64 = 58.0;
/// Side of one panel of the pair grid, in pixels.
const CELL: f64 = 170.0;
/// Space between the panels of the grid, in pixels.
const GAP: f64 = 12.0;
/// Points along each 1-D density curve.
const CURVE_POINTS: usize = 400;
/// Histogram bins when `--bins` is not given, for streamed data.
const DEFAULT_BINS: usize = 30;

/// Component colours (Tableau 10); components past the tenth get hues a
/// golden angle apart.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The colour of component `j`.
pub fn component_colour(j: usize) -> String {
    match PALETTE.get(j) {
        Some(c) => (*c).to_string(),
        None => format!("hsl({:.0},60%,45%)", (j as f64 * 137.508) % 360.0),
    }
}

/// What to draw besides the mixture itself.
#[derive(Clone, Debug, Default)]
pub struct PlotOptions {
    /// The two dimensions to project on (d >= 2) when not drawing the grid;
    /// ignored for d = 1.
    pub dims: (usize, usize),
    /// Title; `None` gives "Gaussian mixture: K = .., d = .., ...".
    pub title: Option<String>,
    /// A second mixture drawn underneath in grey dashes (2-sigma ellipses,
    /// or its density in 1-D), e.g. the truth the model should recover.
    pub reference: Option<GaussianMixture>,
    /// Label of the reference in the legend (default "reference").
    pub reference_label: Option<String>,
    /// One scale for both axes of a projection (circles stay circles);
    /// otherwise each axis fits its own data.
    pub equal_aspect: bool,
    /// Names of the model's dimensions, for axis labels ("dimension I"
    /// without them).
    pub names: Option<Vec<String>>,
    /// For d > 2: the corner grid of every pair instead of `dims` alone.
    pub pair_grid: bool,
    /// Histogram bins built from `points` (0: about 1.5 sqrt(n), 10 to 80).
    pub bins: usize,
    /// Histograms of every point of the data, one per dimension (e.g. from
    /// [`read_data`]); when absent they are built from `points`.
    pub histograms: Option<Vec<Histogram>>,
}

impl PlotOptions {
    /// Options projecting on dimensions 0 and 1.
    pub fn new() -> Self {
        PlotOptions {
            dims: (0, 1),
            ..PlotOptions::default()
        }
    }

    /// The label of dimension `i`: its name, or "dimension i".
    fn label(&self, i: usize) -> String {
        self.names
            .as_ref()
            .and_then(|n| n.get(i))
            .cloned()
            .unwrap_or_else(|| format!("dimension {i}"))
    }
}

/// Counts of values in equal bins, in bounded memory: a value beyond the
/// range doubles the bin width (merging neighbours) until it fits, so every
/// value counts and the number of bins never changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Left edge of the first bin.
    lo: f64,
    /// Width of every bin.
    width: f64,
    /// Count per bin (an even number of bins).
    counts: Vec<u64>,
}

impl Histogram {
    /// `bins` equal bins over `[lo, hi)` (at least 2 and even, raised if
    /// needed; an empty or invalid range becomes one of width 1 around
    /// `lo`).
    pub fn new(lo: f64, hi: f64, bins: usize) -> Self {
        let bins = bins.max(2).next_multiple_of(2);
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi > lo {
            (lo, hi)
        } else {
            let c = if lo.is_finite() { lo } else { 0.0 };
            (c - 0.5, c + 0.5)
        };
        Histogram {
            lo,
            width: (hi - lo) / bins as f64,
            counts: vec![0; bins],
        }
    }

    /// Counts `v` (non-finite values are ignored).
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let n = self.counts.len();
        let half = n / 2;
        while v < self.lo && self.width.is_finite() {
            // Double to the left: the old bins become the right half.
            for k in (0..half).rev() {
                self.counts[half + k] = self.counts[2 * k] + self.counts[2 * k + 1];
            }
            self.counts[..half].fill(0);
            self.lo -= n as f64 * self.width;
            self.width *= 2.0;
        }
        while v >= self.lo + n as f64 * self.width && self.width.is_finite() {
            // Double to the right: the old bins become the left half.
            for k in 0..half {
                self.counts[k] = self.counts[2 * k] + self.counts[2 * k + 1];
            }
            self.counts[half..].fill(0);
            self.width *= 2.0;
        }
        let b = ((v - self.lo) / self.width) as usize;
        self.counts[b.min(n - 1)] += 1;
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(left, right, density)` of every non-empty bin; the densities
    /// integrate to 1.
    pub fn bars(&self) -> Vec<(f64, f64, f64)> {
        let total = self.total() as f64;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(b, &c)| {
                let left = self.lo + b as f64 * self.width;
                (left, left + self.width, c as f64 / (total * self.width))
            })
            .collect()
    }

    /// The span of the non-empty bins, if any.
    pub fn range(&self) -> Option<(f64, f64)> {
        let first = self.counts.iter().position(|&c| c > 0)?;
        let last = self.counts.iter().rposition(|&c| c > 0)?;
        Some((
            self.lo + first as f64 * self.width,
            self.lo + (last + 1) as f64 * self.width,
        ))
    }
}

/// A histogram of one dimension of row-major `points`, over their own
/// range, with `bins` bins (0: about 1.5 sqrt(n), 10 to 80).
fn histogram_of(points: &[f64], d: usize, i: usize, bins: usize) -> Histogram {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in points.chunks_exact(d) {
        lo = lo.min(p[i]);
        hi = hi.max(p[i]);
    }
    let n = points.len() / d;
    let bins = if bins > 0 {
        bins
    } else {
        ((n as f64).sqrt() * 1.5).clamp(10.0, 80.0) as usize
    };
    // A hair past the largest value, so it falls inside the last bin.
    let mut h = Histogram::new(lo, hi + (hi - lo).abs() * 1e-9 + f64::MIN_POSITIVE, bins);
    for p in points.chunks_exact(d) {
        h.add(p[i]);
    }
    h
}

/// Renders `model` (and `points`, row-major with the model's dimension, if
/// given) to an SVG document.
///
/// # Errors
///
/// [`ReportError::Invalid`] when `dims` are not two different dimensions of
/// the model (unless the grid is drawn), when `points` is not a whole
/// number of rows, when the reference mixture's dimension differs, or when
/// `names` or `histograms` do not have one entry per dimension.
pub fn render_svg(
    model: &GaussianMixture,
    points: Option<&[f64]>,
    options: &PlotOptions,
) -> Result<String, ReportError> {
    let d = model.dim();
    if let Some(p) = points {
        if p.len() % d != 0 {
            return Err(ReportError::Invalid(format!(
                "{} numbers are not a whole number of points of dimension {d}",
                p.len()
            )));
        }
    }
    if let Some(r) = &options.reference {
        if r.dim() != d {
            return Err(ReportError::Invalid(format!(
                "the reference mixture has dimension {}, the model {d}",
                r.dim()
            )));
        }
    }
    let lengths = [
        ("names", options.names.as_ref().map(Vec::len)),
        ("histograms", options.histograms.as_ref().map(Vec::len)),
    ];
    for (what, n) in lengths {
        if let Some(n) = n.filter(|&n| n != d) {
            return Err(ReportError::Invalid(format!(
                "{n} {what} for a model of dimension {d}: give one per dimension"
            )));
        }
    }
    let points = points.filter(|p| !p.is_empty());
    // One histogram per dimension: given, or built from the points.
    let hists: Option<Vec<Histogram>> = options.histograms.clone().or_else(|| {
        points.map(|p| {
            (0..d)
                .map(|i| histogram_of(p, d, i, options.bins))
                .collect()
        })
    });
    if d == 1 {
        Ok(render_1d(model, hists.as_ref().map(|h| &h[0]), options))
    } else if d > 2 && options.pair_grid {
        Ok(render_grid(model, points, hists.as_deref(), options))
    } else {
        let (i, j) = options.dims;
        if i >= d || j >= d || i == j {
            return Err(ReportError::Invalid(format!(
                "--dims {i},{j}: name two different dimensions below {d}"
            )));
        }
        Ok(render_2d(model, points, hists.as_deref(), options))
    }
}

/// An affine map from data to pixels on one axis.
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Axis {
    fn map(&self, v: f64) -> f64 {
        self.px_lo + (v - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)
    }
    fn scale(&self) -> f64 {
        ((self.px_hi - self.px_lo) / (self.hi - self.lo)).abs()
    }
}

/// Tick values at a 1-2-5 step, about `target` of them, inside [lo, hi].
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let range = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm < 1.5 {
            1.0
        } else if norm < 3.5 {
            2.0
        } else if norm < 7.5 {
            5.0
        } else {
            10.0
        };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|t| t as f64 * step).collect();
    (ticks, step)
}

/// A tick label with as many decimals as the step needs, and no "-0".
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

fn default_title(model: &GaussianMixture) -> String {
    format!(
        "Gaussian mixture: K = {}, d = {}, {} covariance",
        model.n_components(),
        model.dim(),
        model.covariance_type()
    )
}

/// Opens the document: header, background and title (centred at
/// `title_x`, moved in so that a long title stays inside the picture).
fn open_svg(out: &mut String, width: f64, height: f64, title: &str, title_x: f64) {
    // About 9.5 pixels per character of 16-pixel bold sans-serif.
    let half = 0.5 * 9.5 * title.chars().count() as f64;
    let title_x = title_x
        .max(half + 10.0)
        .min((width - half - 10.0).max(width / 2.0));
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<title>{}</title>", esc(title));
    let _ = writeln!(
        out,
        "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        out,
        "<text id=\"title\" x=\"{title_x:.2}\" y=\"30\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" fill=\"#222222\">{}</text>",
        esc(title)
    );
}

/// How one panel's frame is drawn.
struct Frame<'a> {
    /// Id of the panel's clip path.
    clip: &'a str,
    /// About this many ticks per axis.
    ticks: usize,
    /// Tick labels under the x axis / left of the y axis.
    x_ticks: bool,
    y_ticks: bool,
    /// Axis labels, if any.
    x_label: Option<&'a str>,
    y_label: Option<&'a str>,
    /// Whether the labels get the ids `x-label` / `y-label` (single plots).
    label_ids: bool,
}

/// A panel's clip path, background, grid, ticks, frame and axis labels.
fn panel_axes(out: &mut String, x: &Axis, y: &Axis, f: &Frame) {
    let (px0, px1) = (x.px_lo, x.px_hi);
    let (py0, py1) = (y.px_hi, y.px_lo); // top, bottom
    let _ = writeln!(
        out,
        "<defs><clipPath id=\"{}\"><rect x=\"{px0:.2}\" y=\"{py0:.2}\" width=\"{:.2}\" height=\"{:.2}\"/></clipPath></defs>",
        f.clip,
        px1 - px0,
        py1 - py0
    );
    let _ = writeln!(out, "<g class=\"axes\">");
    let _ = writeln!(
        out,
        "<rect x=\"{px0:.2}\" y=\"{py0:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"#fbfbfb\" stroke=\"none\"/>",
        px1 - px0,
        py1 - py0
    );
    let (xt, xs) = nice_ticks(x.lo, x.hi, f.ticks);
    for t in &xt {
        let p = x.map(*t);
        let _ = write!(
            out,
            "<line x1=\"{p:.2}\" y1=\"{py0:.2}\" x2=\"{p:.2}\" y2=\"{py1:.2}\" stroke=\"#e4e4e4\"/>\
             <line x1=\"{p:.2}\" y1=\"{py1:.2}\" x2=\"{p:.2}\" y2=\"{:.2}\" stroke=\"#444444\"/>",
            py1 + 5.0,
        );
        if f.x_ticks {
            let _ = write!(
                out,
                "<text class=\"tick\" x=\"{p:.2}\" y=\"{:.2}\" text-anchor=\"middle\" fill=\"#444444\">{}</text>",
                py1 + 19.0,
                tick_label(*t, xs)
            );
        }
        out.push('\n');
    }
    let (yt, ys) = nice_ticks(y.lo, y.hi, f.ticks);
    for t in &yt {
        let p = y.map(*t);
        let _ = write!(
            out,
            "<line x1=\"{px0:.2}\" y1=\"{p:.2}\" x2=\"{px1:.2}\" y2=\"{p:.2}\" stroke=\"#e4e4e4\"/>\
             <line x1=\"{:.2}\" y1=\"{p:.2}\" x2=\"{px0:.2}\" y2=\"{p:.2}\" stroke=\"#444444\"/>",
            px0 - 5.0,
        );
        if f.y_ticks {
            let _ = write!(
                out,
                "<text class=\"tick\" x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\" fill=\"#444444\">{}</text>",
                px0 - 8.0,
                p + 4.0,
                tick_label(*t, ys)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "<rect x=\"{px0:.2}\" y=\"{py0:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"none\" stroke=\"#444444\"/>",
        px1 - px0,
        py1 - py0
    );
    let (xid, yid) = if f.label_ids {
        (" id=\"x-label\"", " id=\"y-label\"")
    } else {
        ("", "")
    };
    if let Some(label) = f.x_label {
        let _ = writeln!(
            out,
            "<text class=\"axis-label\"{xid} x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222222\">{}</text>",
            (px0 + px1) / 2.0,
            py1 + if f.x_ticks { 40.0 } else { 20.0 },
            esc(label)
        );
    }
    if let Some(label) = f.y_label {
        let cy = (py0 + py1) / 2.0;
        let lx = px0 - if f.y_ticks { 52.0 } else { 14.0 };
        let _ = writeln!(
            out,
            "<text class=\"axis-label\"{yid} x=\"{lx:.2}\" y=\"{cy:.2}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222222\" transform=\"rotate(-90 {lx:.2} {cy:.2})\">{}</text>",
            esc(label)
        );
    }
    let _ = writeln!(out, "</g>");
}

/// Legend entries: (swatch kind, colour, text).
enum Swatch {
    Patch(String),
    Line(String, &'static str),
    Dot(String),
}

/// The legend entries of the components: colour and weight.
fn component_entries(model: &GaussianMixture) -> Vec<(Swatch, String)> {
    (0..model.n_components())
        .map(|c| {
            (
                Swatch::Patch(component_colour(c)),
                format!("{c}: weight {:.3}", model.weights()[c]),
            )
        })
        .collect()
}

/// The name of the reference mixture in the legend.
fn reference_label(options: &PlotOptions) -> String {
    options
        .reference_label
        .clone()
        .unwrap_or_else(|| "reference".into())
}

/// Ends a plot of width `width`: the legend right of the plot area, then
/// the closing tag.
fn close_svg(out: &mut String, width: f64, entries: &[(Swatch, String)]) {
    legend(
        out,
        width - MARGIN_RIGHT + 14.0,
        MARGIN_TOP,
        "Components",
        entries,
    );
    out.push_str("</svg>\n");
}

fn legend(out: &mut String, x0: f64, y0: f64, heading: &str, entries: &[(Swatch, String)]) {
    let row = 20.0;
    let h = 30.0 + row * entries.len() as f64;
    let _ = writeln!(out, "<g id=\"legend\">");
    let _ = writeln!(
        out,
        "<rect x=\"{x0:.2}\" y=\"{y0:.2}\" width=\"{:.2}\" height=\"{h:.2}\" rx=\"4\" fill=\"#ffffff\" stroke=\"#cccccc\"/>",
        MARGIN_RIGHT - 24.0
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.2}\" y=\"{:.2}\" font-weight=\"bold\" fill=\"#222222\">{}</text>",
        x0 + 10.0,
        y0 + 19.0,
        esc(heading)
    );
    for (n, (sw, text)) in entries.iter().enumerate() {
        let y = y0 + 36.0 + row * n as f64;
        let sx = x0 + 10.0;
        match sw {
            Swatch::Patch(c) => {
                let _ = write!(
                    out,
                    "<rect class=\"swatch\" x=\"{sx:.2}\" y=\"{:.2}\" width=\"18\" height=\"12\" rx=\"2\" fill=\"{c}\" fill-opacity=\"0.35\" stroke=\"{c}\" stroke-width=\"2\"/>",
                    y - 10.0
                );
            }
            Swatch::Line(c, dash) => {
                let _ = write!(
                    out,
                    "<line class=\"swatch\" x1=\"{sx:.2}\" y1=\"{:.2}\" x2=\"{:.2}\" y2=\"{:.2}\" stroke=\"{c}\" stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/>",
                    y - 4.0,
                    sx + 18.0,
                    y - 4.0
                );
            }
            Swatch::Dot(c) => {
                let _ = write!(
                    out,
                    "<circle class=\"swatch\" cx=\"{:.2}\" cy=\"{:.2}\" r=\"3\" fill=\"{c}\"/>",
                    sx + 9.0,
                    y - 4.0
                );
            }
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.2}\" y=\"{y:.2}\" fill=\"#222222\">{}</text>",
            sx + 26.0,
            esc(text)
        );
    }
    let _ = writeln!(out, "</g>");
}

/// Eigen-decomposition of a symmetric 2x2 matrix [[a, b], [b, c]]: the two
/// eigenvalues (larger first) and the angle of the larger one's
/// eigenvector from the x axis, in radians.
fn eigen_2x2(a: f64, b: f64, c: f64) -> (f64, f64, f64) {
    let mid = 0.5 * (a + c);
    let rad = (0.25 * (a - c) * (a - c) + b * b).sqrt();
    let angle = 0.5 * (2.0 * b).atan2(a - c);
    ((mid + rad).max(0.0), (mid - rad).max(0.0), angle)
}

/// The marginal 2x2 covariance of dimensions (i, j) of component `c`.
fn marginal(model: &GaussianMixture, c: usize, i: usize, j: usize) -> (f64, f64, f64) {
    let d = model.dim();
    let m = model.covariance_matrix(c);
    (m[i * d + i], m[i * d + j], m[j * d + j])
}

/// The data range of dimension `i` to show: every component's mean plus
/// and minus `sigmas` standard deviations (of the model and the
/// reference), every point and every counted value, padded by 4 %.
fn dim_range(
    model: &GaussianMixture,
    points: Option<&[f64]>,
    hist: Option<&Histogram>,
    options: &PlotOptions,
    i: usize,
    sigmas: f64,
) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for m in std::iter::once(model).chain(options.reference.as_ref()) {
        for c in 0..m.n_components() {
            let sd = m.covariance_matrix(c)[i * m.dim() + i].sqrt();
            let mu = m.mean(c)[i];
            lo = lo.min(mu - sigmas * sd);
            hi = hi.max(mu + sigmas * sd);
        }
    }
    if let Some(p) = points {
        for x in p.chunks_exact(model.dim()) {
            lo = lo.min(x[i]);
            hi = hi.max(x[i]);
        }
    }
    if let Some((a, b)) = hist.and_then(Histogram::range) {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    let pad = 0.04 * (hi - lo).max(1e-12);
    (lo - pad, hi + pad)
}

/// Where a pair panel draws and how its elements are named.
struct PairPanel<'a> {
    /// Dimensions on the x and y axes.
    i: usize,
    j: usize,
    x: Axis,
    y: Axis,
    /// Id of the clip path.
    clip: &'a str,
    /// A single plot (ids on groups) rather than a grid panel.
    single: bool,
}

/// Points, reference ellipses and components of one projection.
fn draw_pair(
    out: &mut String,
    model: &GaussianMixture,
    points: Option<&[f64]>,
    options: &PlotOptions,
    p: &PairPanel,
) -> usize {
    let d = model.dim();
    let k = model.n_components();
    let (i, j, x, y) = (p.i, p.j, p.x, p.y);
    let _ = writeln!(out, "<g clip-path=\"url(#{})\">", p.clip);
    let mut n_points = 0;
    if let Some(pts) = points {
        n_points = pts.len() / d;
        // Bigger dots when there are few of them; smaller in a grid.
        let r = match n_points {
            0..=600 => 2.4,
            601..=5000 => 1.8,
            _ => 1.2,
        } * if p.single { 1.0 } else { 0.85 };
        let group = if p.single {
            "id=\"points\""
        } else {
            "class=\"points\""
        };
        let _ = writeln!(out, "<g {group} fill-opacity=\"0.45\">");
        let mut lp = vec![0.0; k];
        for pt in pts.chunks_exact(d) {
            model.weighted_log_probs(pt, &mut lp);
            let label = lp
                .iter()
                .enumerate()
                .fold(0, |b, (c, &v)| if v > lp[b] { c } else { b });
            let _ = writeln!(
                out,
                "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"{r}\" fill=\"{}\"/>",
                x.map(pt[i]),
                y.map(pt[j]),
                component_colour(label)
            );
        }
        let _ = writeln!(out, "</g>");
    }
    // The ellipse of the marginal covariance, turned into pixels first
    // (x scale sx, y scale -sy as y points down), so it is right for any
    // two scales.
    let ellipse = |out: &mut String, m: &GaussianMixture, c: usize, sigmas: f64, attrs: &str| {
        let (a, b, cc) = marginal(m, c, i, j);
        let (sx, sy) = (x.scale(), y.scale());
        let (l1, l2, angle) = eigen_2x2(a * sx * sx, -b * sx * sy, cc * sy * sy);
        let mu = m.mean(c);
        let (cx, cy) = (x.map(mu[i]), y.map(mu[j]));
        let deg = angle.to_degrees();
        let _ = writeln!(
            out,
            "<ellipse class=\"sigma-{sigmas}\" cx=\"{cx:.2}\" cy=\"{cy:.2}\" rx=\"{:.2}\" ry=\"{:.2}\" transform=\"rotate({deg:.3} {cx:.2} {cy:.2})\" {attrs}/>",
            sigmas * l1.sqrt(),
            sigmas * l2.sqrt(),
        );
    };
    if let Some(r) = &options.reference {
        let group = if p.single {
            "id=\"reference\" class=\"reference\""
        } else {
            "class=\"reference\""
        };
        let _ = writeln!(out, "<g {group}>");
        for c in 0..r.n_components() {
            ellipse(
                out,
                r,
                c,
                2.0,
                "fill=\"none\" stroke=\"#555555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"",
            );
        }
        let _ = writeln!(out, "</g>");
    }
    for c in 0..k {
        let col = component_colour(c);
        if p.single {
            let _ = writeln!(
                out,
                "<g class=\"component\" id=\"component-{c}\" data-weight=\"{}\">",
                model.weights()[c]
            );
        } else {
            let _ = writeln!(out, "<g class=\"panel-component\" data-component=\"{c}\">");
        }
        ellipse(
            out,
            model,
            c,
            3.0,
            &format!(
                "fill=\"none\" stroke=\"{col}\" stroke-width=\"1.2\" stroke-dasharray=\"3 3\""
            ),
        );
        ellipse(
            out,
            model,
            c,
            2.0,
            &format!("fill=\"none\" stroke=\"{col}\" stroke-width=\"1.6\""),
        );
        ellipse(
            out,
            model,
            c,
            1.0,
            &format!("fill=\"{col}\" fill-opacity=\"0.15\" stroke=\"{col}\" stroke-width=\"2.4\""),
        );
        let mu = model.mean(c);
        let (cx, cy) = (x.map(mu[i]), y.map(mu[j]));
        let arm = if p.single { 6.0 } else { 4.0 };
        let _ = writeln!(
            out,
            "<path class=\"mean\" d=\"M{:.2} {cy:.2}H{:.2}M{cx:.2} {:.2}V{:.2}\" stroke=\"#222222\" stroke-width=\"2\"/>",
            cx - arm,
            cx + arm,
            cy - arm,
            cy + arm
        );
        let _ = writeln!(out, "</g>");
    }
    let _ = writeln!(out, "</g>");
    n_points
}

/// Density of N(mu, var) at x.
fn normal_pdf(x: f64, mu: f64, var: f64) -> f64 {
    let z = x - mu;
    (-0.5 * z * z / var).exp() / (std::f64::consts::TAU * var).sqrt()
}

/// The weighted marginal densities of dimension `i` of every component of
/// `m` at `xs`.
fn marginal_densities(m: &GaussianMixture, i: usize, xs: &[f64]) -> Vec<Vec<f64>> {
    (0..m.n_components())
        .map(|c| {
            let (mu, var) = (m.mean(c)[i], m.covariance_matrix(c)[i * m.dim() + i]);
            let w = m.weights()[c];
            xs.iter().map(|&x| w * normal_pdf(x, mu, var)).collect()
        })
        .collect()
}

/// Pointwise sum of curves.
fn sum_curves(curves: &[Vec<f64>], n: usize) -> Vec<f64> {
    (0..n).map(|s| curves.iter().map(|c| c[s]).sum()).collect()
}

/// The curves of a density panel of dimension `i` over `[lo, hi]`: the x
/// values, each component's, the mixture's and the reference's, and the
/// largest value to show (bars included).
struct Densities {
    xs: Vec<f64>,
    comps: Vec<Vec<f64>>,
    mix: Vec<f64>,
    reference: Option<Vec<f64>>,
    bars: Vec<(f64, f64, f64)>,
    ymax: f64,
}

impl Densities {
    fn new(
        model: &GaussianMixture,
        hist: Option<&Histogram>,
        options: &PlotOptions,
        i: usize,
        (lo, hi): (f64, f64),
    ) -> Self {
        let xs: Vec<f64> = (0..CURVE_POINTS)
            .map(|s| lo + (hi - lo) * s as f64 / (CURVE_POINTS - 1) as f64)
            .collect();
        let comps = marginal_densities(model, i, &xs);
        let mix = sum_curves(&comps, xs.len());
        let reference = options
            .reference
            .as_ref()
            .map(|r| sum_curves(&marginal_densities(r, i, &xs), xs.len()));
        let bars = hist.map(Histogram::bars).unwrap_or_default();
        let ymax = mix
            .iter()
            .chain(reference.iter().flatten())
            .copied()
            .chain(bars.iter().map(|b| b.2))
            .fold(0.0f64, f64::max)
            * 1.08;
        Densities {
            xs,
            comps,
            mix,
            reference,
            bars,
            ymax: ymax.max(1e-300),
        }
    }

    /// Draws the histogram and the curves; `single` gives the groups ids.
    fn draw(&self, out: &mut String, model: &GaussianMixture, x: &Axis, y: &Axis, single: bool) {
        if !self.bars.is_empty() {
            let id = if single { " id=\"histogram\"" } else { "" };
            let _ = writeln!(
                out,
                "<g class=\"histogram\"{id} fill=\"#dfe3e8\" stroke=\"#ffffff\" stroke-width=\"0.8\">"
            );
            for (l, r, h) in &self.bars {
                let (x0, x1) = (x.map(*l), x.map(*r));
                let (y0, y1) = (y.map(*h), y.map(0.0));
                let _ = writeln!(
                    out,
                    "<rect class=\"hist-bar\" x=\"{x0:.2}\" y=\"{y0:.2}\" width=\"{:.2}\" height=\"{:.2}\"/>",
                    x1 - x0,
                    y1 - y0
                );
            }
            let _ = writeln!(out, "</g>");
        }
        let path = |vals: &[f64]| -> String {
            let mut s = String::with_capacity(vals.len() * 16);
            for (n, (&xv, &v)) in self.xs.iter().zip(vals).enumerate() {
                let _ = write!(
                    s,
                    "{}{:.2} {:.2}",
                    if n == 0 { "M" } else { "L" },
                    x.map(xv),
                    y.map(v)
                );
            }
            s
        };
        if let Some(r) = &self.reference {
            let id = if single { "id=\"reference\" " } else { "" };
            let _ = writeln!(
                out,
                "<path {id}class=\"reference\" d=\"{}\" fill=\"none\" stroke=\"#555555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
                path(r)
            );
        }
        for (c, vals) in self.comps.iter().enumerate() {
            let col = component_colour(c);
            let group = if single {
                format!(
                    "class=\"component\" id=\"component-{c}\" data-weight=\"{}\"",
                    model.weights()[c]
                )
            } else {
                format!("class=\"panel-component\" data-component=\"{c}\"")
            };
            let _ = writeln!(
                out,
                "<g {group}>\n\
                 <path class=\"component-density\" d=\"{}\" fill=\"{col}\" fill-opacity=\"0.14\" stroke=\"{col}\" stroke-width=\"2\"/>\n</g>",
                path(vals)
            );
        }
        let id = if single {
            "id=\"mixture-density\" "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<path {id}class=\"mixture-density\" d=\"{}\" fill=\"none\" stroke=\"#222222\" stroke-width=\"{}\"/>",
            path(&self.mix),
            if single { 2.5 } else { 1.8 }
        );
    }
}

/// Two axes over the given data ranges in the pixel box
/// `[px0, px1] x [py_top, py_bottom]`; with `equal`, one scale for both
/// (the shorter range widened to fill).
fn pair_axes(
    (xlo, xhi): (f64, f64),
    (ylo, yhi): (f64, f64),
    (px0, px1): (f64, f64),
    (py_top, py_bottom): (f64, f64),
    equal: bool,
) -> (Axis, Axis) {
    let (pw, ph) = (px1 - px0, py_bottom - py_top);
    let ((xlo, xhi), (ylo, yhi)) = if equal {
        let scale = (pw / (xhi - xlo)).min(ph / (yhi - ylo));
        let (xc, yc) = (0.5 * (xlo + xhi), 0.5 * (ylo + yhi));
        let (hx, hy) = (0.5 * pw / scale, 0.5 * ph / scale);
        ((xc - hx, xc + hx), (yc - hy, yc + hy))
    } else {
        ((xlo, xhi), (ylo, yhi))
    };
    (
        Axis {
            lo: xlo,
            hi: xhi,
            px_lo: px0,
            px_hi: px1,
        },
        Axis {
            lo: ylo,
            hi: yhi,
            px_lo: py_bottom,
            px_hi: py_top,
        },
    )
}

/// Legend lines shared by every plot with ellipses.
fn ellipse_entries(entries: &mut Vec<(Swatch, String)>, options: &PlotOptions, n_points: usize) {
    entries.push((
        Swatch::Line("#888888".into(), "none"),
        "1, 2 sigma ellipses".into(),
    ));
    entries.push((
        Swatch::Line("#888888".into(), "3 3"),
        "3 sigma ellipse".into(),
    ));
    if options.reference.is_some() {
        let label = reference_label(options);
        entries.push((
            Swatch::Line("#555555".into(), "6 4"),
            format!("{label} (2 sigma)"),
        ));
    }
    if n_points > 0 {
        entries.push((Swatch::Dot("#888888".into()), format!("{n_points} points")));
    }
}

/// Opens a single-panel picture: document, title, and the panel's axes
/// with the ids `plot-area`, `x-label` and `y-label`.
fn open_single(
    model: &GaussianMixture,
    options: &PlotOptions,
    x: &Axis,
    y: &Axis,
    x_label: &str,
    y_label: &str,
) -> String {
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| default_title(model));
    let mut out = String::with_capacity(64 * 1024);
    open_svg(&mut out, WIDTH, HEIGHT, &title, (x.px_lo + x.px_hi) / 2.0);
    panel_axes(
        &mut out,
        x,
        y,
        &Frame {
            clip: "plot-area",
            ticks: 7,
            x_ticks: true,
            y_ticks: true,
            x_label: Some(x_label),
            y_label: Some(y_label),
            label_ids: true,
        },
    );
    out
}

fn render_2d(
    model: &GaussianMixture,
    points: Option<&[f64]>,
    hists: Option<&[Histogram]>,
    options: &PlotOptions,
) -> String {
    let (i, j) = options.dims;
    let xr = dim_range(model, points, hists.map(|h| &h[i]), options, i, 3.0);
    let yr = dim_range(model, points, hists.map(|h| &h[j]), options, j, 3.0);
    let (x, y) = pair_axes(
        xr,
        yr,
        (MARGIN_LEFT, WIDTH - MARGIN_RIGHT),
        (MARGIN_TOP, HEIGHT - MARGIN_BOTTOM),
        options.equal_aspect,
    );
    let mut out = open_single(model, options, &x, &y, &options.label(i), &options.label(j));
    let panel = PairPanel {
        i,
        j,
        x,
        y,
        clip: "plot-area",
        single: true,
    };
    let n_points = draw_pair(&mut out, model, points, options, &panel);
    let mut entries = component_entries(model);
    ellipse_entries(&mut entries, options, n_points);
    close_svg(&mut out, WIDTH, &entries);
    out
}

fn render_1d(model: &GaussianMixture, hist: Option<&Histogram>, options: &PlotOptions) -> String {
    let range = dim_range(model, None, hist, options, 0, 4.0);
    let dens = Densities::new(model, hist, options, 0, range);
    let x = Axis {
        lo: range.0,
        hi: range.1,
        px_lo: MARGIN_LEFT,
        px_hi: WIDTH - MARGIN_RIGHT,
    };
    let y = Axis {
        lo: 0.0,
        hi: dens.ymax,
        px_lo: HEIGHT - MARGIN_BOTTOM,
        px_hi: MARGIN_TOP,
    };
    let xl = options
        .names
        .as_ref()
        .map_or_else(|| "x".to_owned(), |n| n[0].clone());
    let mut out = open_single(model, options, &x, &y, &xl, "density");
    let _ = writeln!(out, "<g clip-path=\"url(#plot-area)\">");
    dens.draw(&mut out, model, &x, &y, true);
    let _ = writeln!(out, "</g>");
    let mut entries = component_entries(model);
    entries.push((Swatch::Line("#222222".into(), "none"), "mixture".into()));
    if options.reference.is_some() {
        let label = reference_label(options);
        entries.push((Swatch::Line("#555555".into(), "6 4"), label));
    }
    if let Some(h) = hist {
        entries.push((
            Swatch::Patch("#dfe3e8".into()),
            format!("{} points", h.total()),
        ));
    }
    close_svg(&mut out, WIDTH, &entries);
    out
}

/// The corner grid for d > 2: below the diagonal every pair (x: the
/// column's dimension, y: the row's), on it each dimension's histogram and
/// marginal densities. Columns share x ranges and rows share y ranges, so
/// ticks are written on the bottom row and the left column only.
fn render_grid(
    model: &GaussianMixture,
    points: Option<&[f64]>,
    hists: Option<&[Histogram]>,
    options: &PlotOptions,
) -> String {
    let d = model.dim();
    let side = d as f64 * CELL + (d - 1) as f64 * GAP;
    let (width, height) = (
        MARGIN_LEFT + side + MARGIN_RIGHT,
        MARGIN_TOP + side + MARGIN_BOTTOM,
    );
    let ranges: Vec<(f64, f64)> = (0..d)
        .map(|i| dim_range(model, points, hists.map(|h| &h[i]), options, i, 3.0))
        .collect();
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| default_title(model));
    let mut out = String::with_capacity(256 * 1024);
    open_svg(&mut out, width, height, &title, MARGIN_LEFT + side / 2.0);
    let cell = |k: usize| k as f64 * (CELL + GAP);
    let mut n_points = 0;
    for r in 0..d {
        for c in 0..=r {
            let (px0, py0) = (MARGIN_LEFT + cell(c), MARGIN_TOP + cell(r));
            let clip = format!("panel-{c}-{r}");
            let bottom = r + 1 == d;
            let xl = options.label(c);
            let yl = options.label(r);
            if r == c {
                let dens = Densities::new(model, hists.map(|h| &h[c]), options, c, ranges[c]);
                let (x, y) = pair_axes(
                    ranges[c],
                    (0.0, dens.ymax),
                    (px0, px0 + CELL),
                    (py0, py0 + CELL),
                    false,
                );
                let _ = writeln!(out, "<g class=\"panel\" data-dims=\"{c}\">");
                panel_axes(
                    &mut out,
                    &x,
                    &y,
                    &Frame {
                        clip: &clip,
                        ticks: 4,
                        x_ticks: bottom,
                        y_ticks: false,
                        x_label: bottom.then_some(xl.as_str()),
                        y_label: None,
                        label_ids: false,
                    },
                );
                let _ = writeln!(
                    out,
                    "<text class=\"panel-name\" x=\"{:.2}\" y=\"{:.2}\" font-size=\"11\" fill=\"#222222\">{}</text>",
                    px0 + 5.0,
                    py0 + 14.0,
                    esc(&xl)
                );
                let _ = writeln!(out, "<g clip-path=\"url(#{clip})\">");
                dens.draw(&mut out, model, &x, &y, false);
                let _ = writeln!(out, "</g>\n</g>");
            } else {
                let (x, y) = pair_axes(
                    ranges[c],
                    ranges[r],
                    (px0, px0 + CELL),
                    (py0, py0 + CELL),
                    options.equal_aspect,
                );
                let _ = writeln!(out, "<g class=\"panel\" data-dims=\"{c},{r}\">");
                panel_axes(
                    &mut out,
                    &x,
                    &y,
                    &Frame {
                        clip: &clip,
                        ticks: 4,
                        x_ticks: bottom,
                        y_ticks: c == 0,
                        x_label: bottom.then_some(xl.as_str()),
                        y_label: (c == 0).then_some(yl.as_str()),
                        label_ids: false,
                    },
                );
                let panel = PairPanel {
                    i: c,
                    j: r,
                    x,
                    y,
                    clip: &clip,
                    single: false,
                };
                n_points = draw_pair(&mut out, model, points, options, &panel);
                let _ = writeln!(out, "</g>");
            }
        }
    }
    let mut entries = component_entries(model);
    ellipse_entries(&mut entries, options, n_points);
    close_svg(&mut out, width, &entries);
    out
}

/// What one pass over a data file gives a plot.
#[derive(Clone, Debug)]
pub struct DataSummary {
    /// A seeded uniform sample of the points, row-major.
    pub sample: Vec<f64>,
    /// Points read (accepted records).
    pub seen: u64,
    /// Records rejected.
    pub rejected: u64,
    /// One histogram per dimension, of every point read.
    pub histograms: Vec<Histogram>,
    /// The dimensions' names from the data's header (or JSON fields).
    pub names: Option<Vec<String>>,
}

/// Reads points of dimension `dim` from `input` once, in bounded memory:
/// keeps a uniform random sample of at most `n` of them (reservoir
/// sampling, seeded, so the same input and seed give the same sample) and
/// counts every point into `histograms` (one per dimension, or none).
///
/// # Errors
///
/// [`ReportError::Io`] when reading fails; [`ReportError::Invalid`] when
/// the input does not fit `config` (e.g. a `--columns` name the header
/// lacks).
pub fn read_data<R: Read>(
    input: R,
    config: ParserConfig,
    dim: usize,
    n: usize,
    seed: u64,
    mut histograms: Vec<Histogram>,
) -> Result<DataSummary, ReportError> {
    let parser = Parser::new(ParserConfig {
        dim: Some(dim),
        ..config
    });
    let mut reader = BatchReader::new(input, 0, 1 << 20, parser);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample: Vec<f64> = Vec::with_capacity(n.min(1 << 20) * dim);
    let (mut seen, mut rejected) = (0u64, 0u64);
    let mut batch = Batch::default();
    while reader.next_into(&mut batch)? {
        if let Some(e) = batch.fatal.take() {
            return Err(ReportError::Invalid(e.to_string()));
        }
        rejected += batch.rejected.total();
        for x in batch.values.chunks_exact(dim) {
            for (h, &v) in histograms.iter_mut().zip(x) {
                h.add(v);
            }
            if (seen as usize) < n {
                sample.extend_from_slice(x);
            } else {
                let r = rng.random_range(0..=seen);
                if (r as usize) < n {
                    let at = r as usize * dim;
                    sample[at..at + dim].copy_from_slice(x);
                }
            }
            seen += 1;
        }
    }
    Ok(DataSummary {
        sample,
        seen,
        rejected,
        histograms,
        names: reader.parser().names().map(<[String]>::to_vec),
    })
}

/// Reads points (row-major, `dim` numbers each) from `input` and keeps a
/// uniform random sample of at most `n` of them (see [`read_data`]).
/// Returns the sample and the number of points read.
///
/// # Errors
///
/// As [`read_data`].
pub fn reservoir_sample<R: Read>(
    input: R,
    format: Format,
    columns: Option<Columns>,
    dim: usize,
    n: usize,
    seed: u64,
) -> Result<(Vec<f64>, u64), ReportError> {
    let config = ParserConfig {
        format,
        columns,
        ..ParserConfig::default()
    };
    let data = read_data(input, config, dim, n, seed, Vec::new())?;
    Ok((data.sample, data.seen))
}

fn parse_dims(s: &str) -> Result<(usize, usize), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [a, b] => match (a.parse(), b.parse()) {
            (Ok(i), Ok(j)) if i != j => Ok((i, j)),
            _ => Err(format!(
                "{s:?}: give two different 0-based dimensions, e.g. 0,1"
            )),
        },
        _ => Err(format!(
            "{s:?}: give two 0-based dimensions separated by a comma, e.g. 0,1"
        )),
    }
}

/// Arguments of `emstream plot`.
#[derive(Clone, Debug, clap::Args)]
pub struct PlotArgs {
    /// Checkpoint holding the model.
    #[arg(value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Picture to write: SVG (a name ending in .svg, or without an
    /// extension) or PNG (.png, rendered with resvg); `-` writes SVG to
    /// standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE.svg|FILE.png")]
    pub output: PathBuf,
    /// Points to draw with the model: a random sample of --sample of them
    /// in the scatter, every one in the histograms (`-` is standard input).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// The two 0-based dimensions to project on; for d > 2 without it, a
    /// grid of every pair.
    #[arg(long, value_name = "I,J", value_parser = parse_dims)]
    pub dims: Option<(usize, usize)>,
    /// Most points drawn from --data (a seeded uniform sample).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub sample: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Histogram bins (d = 1, and the diagonal of the grid).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BINS)]
    pub bins: usize,
    /// One scale for both axes (circles stay circles); by default each
    /// axis fits its own data.
    #[arg(long)]
    pub equal_aspect: bool,
    /// How to read --data (as for `run`).
    #[command(flatten)]
    pub input: super::InputArgs,
    /// Title of the picture (default: what the checkpoint holds).
    #[arg(long)]
    pub title: Option<String>,
}

/// The title of a checkpoint's plot: the model, the points it has seen
/// and when it was last written.
fn checkpoint_title(model: &GaussianMixture, ck: &crate::checkpoint::Checkpoint) -> String {
    let seen = match ck.learner.mixture() {
        Some(_) => format!("{} points seen", ck.learner.counters().points_seen),
        None => {
            // A stopped first fit keeps the points received after the
            // warm-up's behind them: the model on the fly is fitted on the
            // warm-up's and learns the rest, as a resume would.
            let (held, warmup) = (ck.learner.pending_points(), ck.learner.params().warmup);
            match held.checked_sub(warmup).filter(|&behind| behind > 0) {
                Some(behind) => format!(
                    "warm-up of {warmup} points fitted on the fly and the {behind} behind them learned"
                ),
                None => format!("warm-up of {held} points fitted on the fly"),
            }
        }
    };
    let when = super::inspect::iso8601_utc(ck.updated_unix_ms);
    // Minutes are enough in a title.
    let when = when.get(..16).unwrap_or(&when).replace('T', " ");
    format!(
        "K = {} mixture, d = {}, {} covariance: {seen}, saved {when} UTC",
        model.n_components(),
        model.dim(),
        model.covariance_type()
    )
}

/// What `-o` asks for, by the file name's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputKind {
    /// `.svg` or no extension.
    Svg,
    /// `.png`: the SVG rendered by `resvg`.
    Png,
}

/// The kind of picture an output name asks for; a name that promises
/// another format is refused, so no file ever holds the wrong format.
fn output_kind(path: &Path) -> Result<OutputKind, ReportError> {
    match path.extension().and_then(|e| e.to_str()) {
        None => Ok(OutputKind::Svg),
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(OutputKind::Svg),
        Some(e) if e.eq_ignore_ascii_case("png") => Ok(OutputKind::Png),
        Some(e) => Err(ReportError::Invalid(format!(
            "-o {}: emstream plot writes SVG or PNG, not .{e}; name the file .svg or .png",
            path.display()
        ))),
    }
}

/// Families tried, in order, for the SVG's generic `sans-serif` text.
const SANS_FAMILIES: [&str; 5] = [
    "DejaVu Sans",
    "Liberation Sans",
    "Noto Sans",
    "Arial",
    "Helvetica",
];

/// Renders an SVG document to PNG bytes with `resvg`, the text in a sans
/// font of the system. Returns the PNG and whether a font was found
/// (without one the picture has no text).
///
/// # Errors
///
/// [`ReportError::Invalid`] when the SVG cannot be parsed or the picture
/// cannot be encoded (neither happens with emstream's own SVG).
pub fn svg_to_png(svg: &str) -> Result<(Vec<u8>, bool), ReportError> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    let family = SANS_FAMILIES
        .iter()
        .find(|f| {
            db.faces()
                .any(|face| face.families.iter().any(|(name, _)| name == *f))
        })
        .map(|f| (*f).to_owned())
        .or_else(|| {
            db.faces()
                .next()
                .and_then(|face| face.families.first().map(|(name, _)| name.clone()))
        });
    let have_font = family.is_some();
    if let Some(f) = family {
        db.set_sans_serif_family(f);
    }
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        ReportError::Invalid(format!("cannot render the picture as PNG: {what}: {e}"))
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| bad("SVG", &e))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| bad("size", &format!("{}x{}", size.width(), size.height())))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let png = pixmap.encode_png().map_err(|e| bad("PNG", &e))?;
    Ok((png, have_font))
}

/// `emstream plot`: writes the SVG picture of a checkpoint's mixture.
///
/// # Errors
///
/// [`ReportError`] when the output name is neither an SVG's nor a PNG's, the checkpoint or
/// the data cannot be read, the dimensions do not fit the model, `--data`
/// holds no point of the model's dimension, or the SVG cannot be written.
pub fn run_plot(args: &PlotArgs) -> Result<(), ReportError> {
    let kind = output_kind(&args.output)?;
    let ck = crate::checkpoint::load(&args.checkpoint)?;
    let model = super::checkpoint_model(&ck, &args.checkpoint)?;
    let d = model.dim();
    let config = args.input.parser_config(d)?;
    let mut options = PlotOptions {
        dims: args.dims.unwrap_or((0, 1)),
        title: Some(
            args.title
                .clone()
                .unwrap_or_else(|| checkpoint_title(&model, &ck)),
        ),
        equal_aspect: args.equal_aspect,
        pair_grid: args.dims.is_none(),
        bins: args.bins,
        ..PlotOptions::default()
    };
    let points = match &args.data {
        Some(path) => {
            let file = super::open_input(path)?;
            // Bins over each dimension's +-4 sigma span of the model; a
            // point beyond widens them.
            let hists = (0..d)
                .map(|i| {
                    let (lo, hi) = dim_range(&model, None, None, &options, i, 4.0);
                    Histogram::new(lo, hi, args.bins)
                })
                .collect();
            let data = read_data(file, config, d, args.sample, args.seed, hists)?;
            if data.seen == 0 {
                return Err(ReportError::Data(format!(
                    "--data {}: no record holds a point of the model's dimension {d}: \
                     pick {d} fields with --columns (0-based or header names), or check --format and --delimiter",
                    path.display(),
                )));
            }
            options.names = data.names.or_else(|| ck.columns.clone());
            options.histograms = Some(data.histograms);
            Some(data.sample)
        }
        None => {
            options.names = ck.columns.clone();
            None
        }
    };
    let svg = render_svg(&model, points.as_deref(), &options)?;
    let bytes = match kind {
        OutputKind::Svg => svg.into_bytes(),
        OutputKind::Png => {
            let (png, have_font) = svg_to_png(&svg)?;
            if !have_font {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    b"emstream plot: no system font found, so the PNG has no text; install one (e.g. fonts-dejavu-core) or write .svg\n",
                );
            }
            png
        }
    };
    super::write_output(&args.output, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_mixture as mixture;

    fn components<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some("component"))
            .collect()
    }

    fn with_class<'a>(n: roxmltree::Node<'a, 'a>, class: &str) -> usize {
        n.descendants()
            .filter(|c| c.attribute("class") == Some(class))
            .count()
    }

    #[test]
    fn the_title_of_a_warm_up_checkpoint_says_how_its_model_was_fitted() {
        use crate::model::{Params, StepwiseEm};
        let params = Params {
            components: crate::model::ComponentCount::Fixed(2),
            warmup: 500,
            batch_size: 100,
            ..Params::default()
        }
        .check()
        .unwrap();
        let pts =
            crate::model::testdata::two_clusters().sample(&mut ChaCha8Rng::seed_from_u64(3), 700);
        let title = |em: StepwiseEm| {
            let ck = crate::report::test_checkpoint(em);
            checkpoint_title(&ck.learner.model_or_fit().unwrap(), &ck)
        };
        let mut filling = StepwiseEm::new(params.clone(), 2);
        filling.observe(&pts[..2 * 321], None).unwrap();
        let t = title(filling);
        assert!(
            t.contains("warm-up of 321 points fitted on the fly,"),
            "{t}"
        );
        // A signal stopped the first fit: 500 + 200 points held.
        let mut stopped = StepwiseEm::new(params.clone(), 2);
        let stop = crate::model::em::Interrupt::default();
        stopped.set_interrupt(stop.clone());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(stopped.observe(&pts, None).is_err());
        assert_eq!(stopped.pending_points(), 700);
        let t = title(stopped);
        assert!(
            t.contains("warm-up of 500 points fitted on the fly and the 200 behind them learned,"),
            "{t}"
        );
        let mut learned = StepwiseEm::new(params, 2);
        learned.observe(&pts, None).unwrap();
        assert!(title(learned).contains("700 points seen"));
    }

    #[test]
    fn two_d_svg_parses_with_three_ellipses_per_component() {
        let m = mixture(
            2,
            vec![0.3, 0.5, 0.2],
            vec![1.0, 1.0, 7.0, 7.0, -3.0, 5.0],
            vec![3.0, 2.0, 2.0, 3.0, 2.0, -1.0, -1.0, 2.0, 1.0, 0.0, 0.0, 0.5],
        );
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let pts = m.sample(&mut rng, 300);
        let svg = render_svg(&m, Some(&pts), &PlotOptions::new()).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let comps = components(&doc);
        assert_eq!(comps.len(), 3);
        for c in &comps {
            for s in ["sigma-1", "sigma-2", "sigma-3", "mean"] {
                assert_eq!(with_class(*c, s), 1, "{s}");
            }
        }
        let circles = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("points"))
            .unwrap()
            .children()
            .filter(|n| n.has_tag_name("circle"))
            .count();
        assert_eq!(circles, 300);
        assert!(svg.contains("weight 0.500"));
    }

    #[test]
    fn ellipse_axes_come_from_the_marginal_covariance() {
        // Component with variances 4 and 1 along the axes rotated by 30°.
        let t = 30f64.to_radians();
        let (c, s) = (t.cos(), t.sin());
        let (l1, l2) = (4.0, 1.0);
        let a = l1 * c * c + l2 * s * s;
        let b = (l1 - l2) * c * s;
        let cc = l1 * s * s + l2 * c * c;
        let (e1, e2, angle) = eigen_2x2(a, b, cc);
        assert!((e1 - 4.0).abs() < 1e-12 && (e2 - 1.0).abs() < 1e-12);
        assert!((angle - t).abs() < 1e-12);
        // In the SVG, the 1-sigma radii ratio is 2 (equal axes) and the
        // rotation is -30 degrees (y points down).
        let m = mixture(2, vec![1.0], vec![0.0, 0.0], vec![a, b, b, cc]);
        let equal = PlotOptions {
            equal_aspect: true,
            ..PlotOptions::new()
        };
        let svg = render_svg(&m, None, &equal).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let e = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("sigma-1"))
            .unwrap();
        let rx: f64 = e.attribute("rx").unwrap().parse().unwrap();
        let ry: f64 = e.attribute("ry").unwrap().parse().unwrap();
        assert!((rx / ry - 2.0).abs() < 1e-3, "{rx} {ry}");
        assert!(e
            .attribute("transform")
            .unwrap()
            .starts_with("rotate(-30.000"));
    }

    #[test]
    fn projection_of_higher_dimensions_uses_the_chosen_pair() {
        let mut cov = vec![0.0; 9];
        for (a, v) in [1.0, 2.0, 9.0].iter().enumerate() {
            cov[a * 3 + a] = *v;
        }
        let m = mixture(3, vec![1.0], vec![0.0, 0.0, 0.0], cov);
        let opts = PlotOptions {
            dims: (2, 0),
            equal_aspect: true,
            ..PlotOptions::new()
        };
        let (rx, ry) = radii(&render_svg(&m, None, &opts).unwrap());
        assert!((rx / ry - 3.0).abs() < 1e-3);
        let bad = PlotOptions {
            dims: (0, 3),
            ..PlotOptions::new()
        };
        assert!(matches!(
            render_svg(&m, None, &bad),
            Err(ReportError::Invalid(_))
        ));
    }

    #[test]
    fn one_d_svg_has_a_curve_per_component_and_the_mixture() {
        let m = mixture(
            1,
            vec![0.3, 0.3, 0.4],
            vec![-5.0, 5.0, 0.0],
            vec![1.2, 1.8, 1.6],
        );
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let pts = m.sample(&mut rng, 300);
        let opts = PlotOptions {
            reference: Some(m.clone()),
            ..PlotOptions::new()
        };
        let svg = render_svg(&m, Some(&pts), &opts).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let comps = components(&doc);
        assert_eq!(comps.len(), 3);
        for c in &comps {
            assert_eq!(with_class(*c, "component-density"), 1);
        }
        assert!(doc
            .descendants()
            .any(|n| n.attribute("id") == Some("mixture-density")));
        let bars = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("hist-bar"))
            .count();
        assert!(bars >= 10, "{bars} bars");
        // The histogram is a density: bar areas sum to 1.
        let area: f64 = {
            let x = |n: &roxmltree::Node| -> f64 { n.attribute("width").unwrap().parse().unwrap() };
            let h =
                |n: &roxmltree::Node| -> f64 { n.attribute("height").unwrap().parse().unwrap() };
            doc.descendants()
                .filter(|n| n.attribute("class") == Some("hist-bar"))
                .map(|n| x(&n) * h(&n))
                .sum()
        };
        // Compare with the area under the mixture curve in pixels.
        let curve = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("mixture-density"))
            .unwrap()
            .attribute("d")
            .unwrap()
            .to_string();
        let pts_px: Vec<(f64, f64)> = curve[1..]
            .split('L')
            .map(|p| {
                let mut it = p.split(' ').map(|v| v.parse::<f64>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .collect();
        let base = HEIGHT - MARGIN_BOTTOM;
        let curve_area: f64 = pts_px
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (base - 0.5 * (w[0].1 + w[1].1)))
            .sum();
        assert!(
            (area / curve_area - 1.0).abs() < 0.02,
            "{area} vs {curve_area}"
        );
    }

    #[test]
    fn nice_ticks_are_round() {
        let (t, s) = nice_ticks(-3.2, 11.7, 7);
        assert_eq!(s, 2.0);
        assert_eq!(t, vec![-2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let (t, s) = nice_ticks(0.0, 0.034, 6);
        assert!((s - 0.005).abs() < 1e-15);
        assert_eq!(tick_label(t[2], s), "0.010");
        assert_eq!(tick_label(-0.0, 1.0), "0");
    }

    #[test]
    fn titles_are_escaped() {
        let m = mixture(1, vec![1.0], vec![0.0], vec![1.0]);
        let opts = PlotOptions {
            title: Some("a < b & \"c\"".into()),
            ..PlotOptions::new()
        };
        let svg = render_svg(&m, None, &opts).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let t = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("title"))
            .unwrap();
        assert_eq!(t.text(), Some("a < b & \"c\""));
    }

    #[test]
    fn reservoir_sample_is_seeded_and_keeps_all_when_few() {
        let text: String = (0..1000).map(|i| format!("{i},{}\n", 2 * i)).collect();
        let (all, seen) = reservoir_sample(text.as_bytes(), Format::Csv, None, 2, 5000, 1).unwrap();
        assert_eq!(seen, 1000);
        assert_eq!(all.len(), 2000);
        assert_eq!(&all[..4], &[0.0, 0.0, 1.0, 2.0]);
        let (a, _) = reservoir_sample(text.as_bytes(), Format::Csv, None, 2, 100, 7).unwrap();
        let (b, _) = reservoir_sample(text.as_bytes(), Format::Csv, None, 2, 100, 7).unwrap();
        let (c, _) = reservoir_sample(text.as_bytes(), Format::Csv, None, 2, 100, 8).unwrap();
        assert_eq!(a.len(), 200);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Rows stay whole, and the sample spreads over the whole input.
        assert!(a.chunks(2).all(|p| p[1] == 2.0 * p[0]));
        let late = a.chunks(2).filter(|p| p[0] >= 500.0).count();
        assert!((30..=70).contains(&late), "{late}");
    }

    #[test]
    fn plot_command_writes_an_svg_with_the_sampled_points() {
        use crate::checkpoint::save;
        use crate::model::{Params, StepwiseEm};
        let dir = tempfile::tempdir().unwrap();
        let truth = mixture(
            2,
            vec![0.5, 0.5],
            vec![1.0, 1.0, 7.0, 7.0],
            vec![3.0, 2.0, 2.0, 3.0, 2.0, -1.0, -1.0, 2.0],
        );
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pts = truth.sample(&mut rng, 10_000);
        let params = Params {
            components: crate::model::ComponentCount::Fixed(2),
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(params, 2);
        em.observe(&pts, None).unwrap();
        let ck = crate::report::test_checkpoint(em);
        let ckpt = dir.path().join("m.ckpt");
        save(&ckpt, &ck, 0).unwrap();
        let data = dir.path().join("pts.csv");
        let text: String = pts
            .chunks(2)
            .map(|p| format!("{},{}\n", p[0], p[1]))
            .collect();
        std::fs::write(&data, text).unwrap();
        let out = dir.path().join("m.svg");
        let args = PlotArgs {
            checkpoint: ckpt,
            output: out.clone(),
            data: Some(data),
            dims: Some((0, 1)),
            sample: 500,
            seed: 0,
            bins: DEFAULT_BINS,
            equal_aspect: false,
            input: crate::report::InputArgs::default(),
            title: None,
        };
        run_plot(&args).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(components(&doc).len(), 2);
        let circles = doc
            .descendants()
            .filter(|n| n.has_tag_name("circle") && n.attribute("class").is_none())
            .count();
        assert_eq!(circles, 500);
        let title = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("title"))
            .unwrap();
        assert!(
            title
                .text()
                .unwrap()
                .contains("10000 points seen, saved 1970-01-01 00:00 UTC"),
            "{:?}",
            title.text()
        );
        let bad = PlotArgs {
            dims: Some((0, 2)),
            ..args.clone()
        };
        assert!(matches!(run_plot(&bad), Err(ReportError::Invalid(_))));
        // A .png name gets a PNG of the picture's size, never an SVG.
        let png = PlotArgs {
            output: dir.path().join("m.png"),
            ..args.clone()
        };
        run_plot(&png).unwrap();
        let bytes = std::fs::read(dir.path().join("m.png")).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), (WIDTH as u32, HEIGHT as u32));
        // Another format's name is refused, and nothing is written.
        let jpg = PlotArgs {
            output: dir.path().join("m.jpg"),
            ..args
        };
        let e = run_plot(&jpg).unwrap_err().to_string();
        assert!(e.contains("SVG or PNG"), "{e}");
        assert!(!dir.path().join("m.jpg").exists());
    }

    /// `rx`, `ry` of the first `sigma-1` ellipse.
    fn radii(svg: &str) -> (f64, f64) {
        let doc = roxmltree::Document::parse(svg).unwrap();
        let e = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("sigma-1"))
            .unwrap();
        let r = |a| e.attribute(a).unwrap().parse::<f64>().unwrap();
        (r("rx"), r("ry"))
    }

    #[test]
    fn axes_fit_their_own_data_unless_equal_aspect_is_asked() {
        // Old Faithful's scales: eruptions of 2-5 minutes, waits of 50-90.
        let m = mixture(
            2,
            vec![0.35, 0.65],
            vec![2.0, 54.5, 4.3, 80.0],
            vec![0.07, 0.4, 0.4, 34.0, 0.17, 0.9, 0.9, 36.0],
        );
        let names = Some(vec!["eruptions".to_owned(), "waiting".to_owned()]);
        let own = PlotOptions {
            names: names.clone(),
            ..PlotOptions::new()
        };
        let svg = render_svg(&m, None, &own).unwrap();
        let (rx, ry) = radii(&svg);
        // Both 1-sigma radii are a good part of the frame.
        assert!(rx.min(ry) > 25.0, "{rx} {ry}");
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let text = |id: &str| {
            doc.descendants()
                .find(|n| n.attribute("id") == Some(id))
                .and_then(|n| n.text())
                .map(str::to_owned)
        };
        assert_eq!(text("x-label").as_deref(), Some("eruptions"));
        assert_eq!(text("y-label").as_deref(), Some("waiting"));
        let equal = PlotOptions {
            equal_aspect: true,
            ..own
        };
        let (rx, ry) = radii(&render_svg(&m, None, &equal).unwrap());
        // One scale: the eruption spread is a sliver.
        assert!(rx.min(ry) < 3.0, "{rx} {ry}");
        let wrong = PlotOptions {
            names: Some(vec!["a".into()]),
            ..PlotOptions::new()
        };
        assert!(matches!(
            render_svg(&m, None, &wrong),
            Err(ReportError::Invalid(_))
        ));
    }

    #[test]
    fn grid_for_higher_dimensions_has_every_pair_and_each_density() {
        let d = 4;
        let mut cov = vec![0.0; d * d];
        for a in 0..d {
            cov[a * d + a] = 1.0 + a as f64;
        }
        let mut cov2 = cov.clone();
        cov2[1] = 0.5;
        cov2[d] = 0.5;
        let means = vec![0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0];
        let m = mixture(d, vec![0.4, 0.6], means, [cov, cov2].concat());
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let pts = m.sample(&mut rng, 200);
        let opts = PlotOptions {
            pair_grid: true,
            names: Some(["a", "b", "c", "d"].map(String::from).to_vec()),
            ..PlotOptions::new()
        };
        let svg = render_svg(&m, Some(&pts), &opts).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let panels: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("panel"))
            .collect();
        assert_eq!(panels.len(), d * (d + 1) / 2);
        let pairs: Vec<&str> = panels
            .iter()
            .filter_map(|p| p.attribute("data-dims"))
            .filter(|s| s.contains(','))
            .collect();
        assert_eq!(pairs, ["0,1", "0,2", "1,2", "0,3", "1,3", "2,3"]);
        for p in &panels {
            assert_eq!(with_class(*p, "panel-component"), 2);
            let diagonal = !p.attribute("data-dims").unwrap().contains(',');
            assert_eq!(with_class(*p, "mixture-density") == 1, diagonal);
            assert_eq!(with_class(*p, "sigma-2") == 2, !diagonal);
        }
        // Labels: names on the bottom row and the left column.
        let labels: Vec<&str> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("axis-label"))
            .filter_map(|n| n.text())
            .collect();
        for name in ["a", "b", "c", "d"] {
            assert!(labels.contains(&name), "{labels:?}");
        }
        // Asking for a pair draws that pair alone.
        let one = PlotOptions {
            pair_grid: false,
            dims: (3, 1),
            ..opts
        };
        let svg = render_svg(&m, Some(&pts), &one).unwrap();
        assert!(!svg.contains("class=\"panel\""));
        assert!(svg.contains(">d</text>"));
    }

    #[test]
    fn histogram_doubles_its_bins_and_keeps_every_value() {
        let mut h = Histogram::new(0.0, 1.0, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let values: Vec<f64> = (0..5000)
            .map(|i| {
                let v: f64 = rng.random_range(0.0..1.0);
                if i % 100 == 0 {
                    v * 50.0 - 20.0
                } else {
                    v
                }
            })
            .chain([f64::NAN, f64::INFINITY])
            .collect();
        for &v in &values {
            h.add(v);
        }
        assert_eq!(h.total(), 5000);
        assert_eq!(h.counts.len(), 10);
        // Each bin holds exactly the values in it.
        for (b, &c) in h.counts.iter().enumerate() {
            let left = h.lo + b as f64 * h.width;
            let n = values
                .iter()
                .filter(|&&v| v >= left && v < left + h.width)
                .count() as u64;
            assert_eq!(c, n, "bin {b}");
        }
        let (lo, hi) = h.range().unwrap();
        assert!(lo <= -19.0 && hi >= 29.0, "{lo} {hi}");
        let area: f64 = h.bars().iter().map(|(l, r, d)| (r - l) * d).sum();
        assert!((area - 1.0).abs() < 1e-12);
    }

    #[test]
    fn histograms_count_all_the_data_not_only_the_sample() {
        let text: String = (0..3000).map(|i| format!("x\n{}\n", i % 7)).collect();
        let config = ParserConfig::default();
        let data = read_data(
            text.as_bytes(),
            config,
            1,
            10,
            1,
            vec![Histogram::new(0.0, 1.0, 8)],
        )
        .unwrap();
        assert_eq!(data.seen, 3000);
        assert_eq!(data.sample.len(), 10);
        assert_eq!(data.histograms[0].total(), 3000);
        assert_eq!(data.rejected, 2999, "the x lines after the header");
        assert_eq!(data.names, Some(vec!["x".to_owned()]));
    }
}
