//! `emstream plot`: a hand-written SVG picture of a mixture.
//!
//! - d >= 2: the points (if any) projected on two dimensions and each
//!   component's 1-, 2- and 3-sigma ellipses, from the eigen-decomposition
//!   of the marginal 2x2 covariance of those dimensions; equal axes.
//! - d = 1: a histogram of the points (if any), each weighted component
//!   density `w_j N(x | mu_j, sigma_j^2)` and the mixture density.
//!
//! The SVG uses no font file and no library: text asks for the generic
//! `sans-serif` family. Elements carry classes and ids that tests (and CSS)
//! can find: one `<g class="component" id="component-J">` per component,
//! holding `ellipse.sigma-1`, `ellipse.sigma-2`, `ellipse.sigma-3` and
//! `path.mean` (2-D) or `path.component-density` (1-D); `path#mixture-density`
//! (1-D); `g#points` with one `circle` per point (2-D) or `g#histogram` with
//! one `rect.hist-bar` per bin (1-D); `g#legend`.

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::score::load_mixture;
use super::ReportError;
use crate::input::{Batch, BatchReader, Columns, Format, Parser, ParserConfig};
use crate::model::GaussianMixture;

/// Width of the whole picture in pixels.
const WIDTH: f64 = 800.0;
/// Height of the whole picture in pixels.
const HEIGHT: f64 = 600.0;
const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 190.0;
const MARGIN_TOP: f64 = 56.0;
const MARGIN_BOTTOM: f64 = 58.0;
/// Points along each 1-D density curve.
const CURVE_POINTS: usize = 400;

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
    /// The two dimensions to project on (d >= 2); ignored for d = 1.
    pub dims: (usize, usize),
    /// Title; `None` gives "Gaussian mixture: K = .., d = .., ...".
    pub title: Option<String>,
    /// A second mixture drawn underneath in grey dashes (2-sigma ellipses,
    /// or its density in 1-D), e.g. the truth the model should recover.
    pub reference: Option<GaussianMixture>,
    /// Label of the reference in the legend (default "reference").
    pub reference_label: Option<String>,
}

impl PlotOptions {
    /// Options projecting on dimensions 0 and 1.
    pub fn new() -> Self {
        PlotOptions {
            dims: (0, 1),
            ..PlotOptions::default()
        }
    }
}

/// Renders `model` (and `points`, row-major with the model's dimension, if
/// given) to an SVG document.
///
/// # Errors
///
/// [`ReportError::Invalid`] when `dims` are not two different dimensions of
/// the model, when `points` is not a whole number of rows, or when the
/// reference mixture's dimension differs.
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
    if d == 1 {
        Ok(render_1d(model, points, options))
    } else {
        let (i, j) = options.dims;
        if i >= d || j >= d || i == j {
            return Err(ReportError::Invalid(format!(
                "--dims {i},{j}: name two different dimensions below {d}"
            )));
        }
        Ok(render_2d(model, points, options))
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

/// Opens the document: header, background, title, plot frame with grid and
/// tick labels, axis labels, and the clip path of the plot area.
fn open_svg(out: &mut String, title: &str, x: &Axis, y: &Axis, x_label: &str, y_label: &str) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<title>{}</title>", esc(title));
    let (px0, px1) = (x.px_lo, x.px_hi);
    let (py0, py1) = (y.px_hi, y.px_lo); // top, bottom
    let _ = writeln!(
        out,
        "<defs><clipPath id=\"plot-area\"><rect x=\"{px0:.2}\" y=\"{py0:.2}\" width=\"{:.2}\" height=\"{:.2}\"/></clipPath></defs>",
        px1 - px0,
        py1 - py0
    );
    let _ = writeln!(
        out,
        "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        out,
        "<text id=\"title\" x=\"{:.2}\" y=\"30\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" fill=\"#222222\">{}</text>",
        (px0 + px1) / 2.0,
        esc(title)
    );
    let _ = writeln!(out, "<g id=\"axes\">");
    let _ = writeln!(
        out,
        "<rect x=\"{px0:.2}\" y=\"{py0:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"#fbfbfb\" stroke=\"none\"/>",
        px1 - px0,
        py1 - py0
    );
    let (xt, xs) = nice_ticks(x.lo, x.hi, 7);
    for t in &xt {
        let p = x.map(*t);
        let _ = writeln!(
            out,
            "<line x1=\"{p:.2}\" y1=\"{py0:.2}\" x2=\"{p:.2}\" y2=\"{py1:.2}\" stroke=\"#e4e4e4\"/>\
             <line x1=\"{p:.2}\" y1=\"{py1:.2}\" x2=\"{p:.2}\" y2=\"{:.2}\" stroke=\"#444444\"/>\
             <text class=\"tick\" x=\"{p:.2}\" y=\"{:.2}\" text-anchor=\"middle\" fill=\"#444444\">{}</text>",
            py1 + 5.0,
            py1 + 19.0,
            tick_label(*t, xs)
        );
    }
    let (yt, ys) = nice_ticks(y.lo, y.hi, 7);
    for t in &yt {
        let p = y.map(*t);
        let _ = writeln!(
            out,
            "<line x1=\"{px0:.2}\" y1=\"{p:.2}\" x2=\"{px1:.2}\" y2=\"{p:.2}\" stroke=\"#e4e4e4\"/>\
             <line x1=\"{:.2}\" y1=\"{p:.2}\" x2=\"{px0:.2}\" y2=\"{p:.2}\" stroke=\"#444444\"/>\
             <text class=\"tick\" x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\" fill=\"#444444\">{}</text>",
            px0 - 5.0,
            px0 - 8.0,
            p + 4.0,
            tick_label(*t, ys)
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{px0:.2}\" y=\"{py0:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"none\" stroke=\"#444444\"/>",
        px1 - px0,
        py1 - py0
    );
    let _ = writeln!(
        out,
        "<text id=\"x-label\" x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222222\">{}</text>",
        (px0 + px1) / 2.0,
        py1 + 42.0,
        esc(x_label)
    );
    let cy = (py0 + py1) / 2.0;
    let _ = writeln!(
        out,
        "<text id=\"y-label\" x=\"20\" y=\"{cy:.2}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222222\" transform=\"rotate(-90 20 {cy:.2})\">{}</text>",
        esc(y_label)
    );
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

/// Ends a plot: the legend right of the plot area, then the closing tag.
fn close_svg(out: &mut String, entries: &[(Swatch, String)]) {
    legend(
        out,
        WIDTH - MARGIN_RIGHT + 14.0,
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

fn render_2d(model: &GaussianMixture, points: Option<&[f64]>, options: &PlotOptions) -> String {
    let d = model.dim();
    let (i, j) = options.dims;
    let k = model.n_components();
    // Bounds: every 3-sigma ellipse and every point.
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    let mut grow = |m: &GaussianMixture| {
        for c in 0..m.n_components() {
            let (a, _, cc) = marginal(m, c, i, j);
            let mu = m.mean(c);
            xlo = xlo.min(mu[i] - 3.0 * a.sqrt());
            xhi = xhi.max(mu[i] + 3.0 * a.sqrt());
            ylo = ylo.min(mu[j] - 3.0 * cc.sqrt());
            yhi = yhi.max(mu[j] + 3.0 * cc.sqrt());
        }
    };
    grow(model);
    if let Some(r) = &options.reference {
        grow(r);
    }
    if let Some(p) = points {
        for x in p.chunks_exact(d) {
            xlo = xlo.min(x[i]);
            xhi = xhi.max(x[i]);
            ylo = ylo.min(x[j]);
            yhi = yhi.max(x[j]);
        }
    }
    let pad = 0.04 * (xhi - xlo).max(yhi - ylo).max(1e-12);
    let (xlo, xhi, ylo, yhi) = (xlo - pad, xhi + pad, ylo - pad, yhi + pad);
    // Equal axes: one scale for both, the shorter range widened to fill.
    let (pw, ph) = (
        WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
        HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
    );
    let scale = (pw / (xhi - xlo)).min(ph / (yhi - ylo));
    let (xc, yc) = (0.5 * (xlo + xhi), 0.5 * (ylo + yhi));
    let (hx, hy) = (0.5 * pw / scale, 0.5 * ph / scale);
    let x = Axis {
        lo: xc - hx,
        hi: xc + hx,
        px_lo: MARGIN_LEFT,
        px_hi: MARGIN_LEFT + pw,
    };
    let y = Axis {
        lo: yc - hy,
        hi: yc + hy,
        px_lo: MARGIN_TOP + ph,
        px_hi: MARGIN_TOP,
    };
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| default_title(model));
    let mut out = String::with_capacity(64 * 1024);
    open_svg(
        &mut out,
        &title,
        &x,
        &y,
        &format!("dimension {i}"),
        &format!("dimension {j}"),
    );
    let _ = writeln!(out, "<g clip-path=\"url(#plot-area)\">");
    let mut n_points = 0;
    if let Some(p) = points {
        n_points = p.len() / d;
        // Bigger dots when there are few of them.
        let r = match n_points {
            0..=600 => 2.4,
            601..=5000 => 1.8,
            _ => 1.2,
        };
        let _ = writeln!(out, "<g id=\"points\" fill-opacity=\"0.45\">");
        let mut lp = vec![0.0; k];
        for pt in p.chunks_exact(d) {
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
    let ellipse = |out: &mut String, m: &GaussianMixture, c: usize, sigmas: f64, attrs: &str| {
        let (a, b, cc) = marginal(m, c, i, j);
        let (l1, l2, angle) = eigen_2x2(a, b, cc);
        let mu = m.mean(c);
        let (cx, cy) = (x.map(mu[i]), y.map(mu[j]));
        // The y axis points down in SVG, so angles turn the other way.
        let deg = -angle.to_degrees();
        let _ = writeln!(
            out,
            "<ellipse class=\"sigma-{sigmas}\" cx=\"{cx:.2}\" cy=\"{cy:.2}\" rx=\"{:.2}\" ry=\"{:.2}\" transform=\"rotate({deg:.3} {cx:.2} {cy:.2})\" {attrs}/>",
            sigmas * l1.sqrt() * x.scale(),
            sigmas * l2.sqrt() * y.scale(),
        );
    };
    if let Some(r) = &options.reference {
        let _ = writeln!(out, "<g id=\"reference\" class=\"reference\">");
        for c in 0..r.n_components() {
            ellipse(
                &mut out,
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
        let _ = writeln!(
            out,
            "<g class=\"component\" id=\"component-{c}\" data-weight=\"{}\">",
            model.weights()[c]
        );
        ellipse(
            &mut out,
            model,
            c,
            3.0,
            &format!(
                "fill=\"none\" stroke=\"{col}\" stroke-width=\"1.2\" stroke-dasharray=\"3 3\""
            ),
        );
        ellipse(
            &mut out,
            model,
            c,
            2.0,
            &format!("fill=\"none\" stroke=\"{col}\" stroke-width=\"1.6\""),
        );
        ellipse(
            &mut out,
            model,
            c,
            1.0,
            &format!("fill=\"{col}\" fill-opacity=\"0.15\" stroke=\"{col}\" stroke-width=\"2.4\""),
        );
        let mu = model.mean(c);
        let (cx, cy) = (x.map(mu[i]), y.map(mu[j]));
        let _ = writeln!(
            out,
            "<path class=\"mean\" d=\"M{:.2} {cy:.2}H{:.2}M{cx:.2} {:.2}V{:.2}\" stroke=\"#222222\" stroke-width=\"2\"/>",
            cx - 6.0,
            cx + 6.0,
            cy - 6.0,
            cy + 6.0
        );
        let _ = writeln!(out, "</g>");
    }
    let _ = writeln!(out, "</g>");
    let mut entries = component_entries(model);
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
    close_svg(&mut out, &entries);
    out
}

/// Density of N(mu, var) at x.
fn normal_pdf(x: f64, mu: f64, var: f64) -> f64 {
    let z = x - mu;
    (-0.5 * z * z / var).exp() / (std::f64::consts::TAU * var).sqrt()
}

fn render_1d(model: &GaussianMixture, points: Option<&[f64]>, options: &PlotOptions) -> String {
    let k = model.n_components();
    let comp = |m: &GaussianMixture, c: usize| (m.mean(c)[0], m.covariance_matrix(c)[0]);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut grow = |m: &GaussianMixture| {
        for c in 0..m.n_components() {
            let (mu, var) = comp(m, c);
            lo = lo.min(mu - 4.0 * var.sqrt());
            hi = hi.max(mu + 4.0 * var.sqrt());
        }
    };
    grow(model);
    if let Some(r) = &options.reference {
        grow(r);
    }
    let pts = points.filter(|p| !p.is_empty());
    if let Some(p) = pts {
        for &v in p {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let pad = 0.02 * (hi - lo).max(1e-12);
    let (lo, hi) = (lo - pad, hi + pad);
    // Histogram on bins of a nice width.
    let mut bars: Vec<(f64, f64, f64)> = Vec::new(); // (left, right, density)
    if let Some(p) = pts {
        let n = p.len();
        let target = ((n as f64).sqrt() * 1.5).clamp(10.0, 80.0) as usize;
        let (_, width) = nice_ticks(lo, hi, target);
        let first = (lo / width).floor();
        let nb = ((hi / width).ceil() - first).max(1.0) as usize;
        let mut counts = vec![0u64; nb];
        for &v in p {
            let b = ((v / width).floor() - first) as usize;
            counts[b.min(nb - 1)] += 1;
        }
        for (b, &c) in counts.iter().enumerate() {
            if c > 0 {
                let left = (first + b as f64) * width;
                bars.push((left, left + width, c as f64 / (n as f64 * width)));
            }
        }
    }
    let xs: Vec<f64> = (0..CURVE_POINTS)
        .map(|s| lo + (hi - lo) * s as f64 / (CURVE_POINTS - 1) as f64)
        .collect();
    let density = |m: &GaussianMixture, c: usize| -> Vec<f64> {
        let (mu, var) = comp(m, c);
        let w = m.weights()[c];
        xs.iter().map(|&x| w * normal_pdf(x, mu, var)).collect()
    };
    let comps: Vec<Vec<f64>> = (0..k).map(|c| density(model, c)).collect();
    let total = |cs: &[Vec<f64>]| -> Vec<f64> {
        (0..xs.len())
            .map(|s| cs.iter().map(|c| c[s]).sum())
            .collect()
    };
    let mix = total(&comps);
    let reference = options.reference.as_ref().map(|r| {
        let cs: Vec<Vec<f64>> = (0..r.n_components()).map(|c| density(r, c)).collect();
        total(&cs)
    });
    let ymax = mix
        .iter()
        .chain(reference.iter().flatten())
        .copied()
        .chain(bars.iter().map(|b| b.2))
        .fold(0.0f64, f64::max)
        * 1.08;
    let x = Axis {
        lo,
        hi,
        px_lo: MARGIN_LEFT,
        px_hi: WIDTH - MARGIN_RIGHT,
    };
    let y = Axis {
        lo: 0.0,
        hi: ymax.max(1e-300),
        px_lo: HEIGHT - MARGIN_BOTTOM,
        px_hi: MARGIN_TOP,
    };
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| default_title(model));
    let mut out = String::with_capacity(64 * 1024);
    open_svg(&mut out, &title, &x, &y, "x", "density");
    let _ = writeln!(out, "<g clip-path=\"url(#plot-area)\">");
    let n_points = pts.map_or(0, <[f64]>::len);
    if !bars.is_empty() {
        let _ = writeln!(
            out,
            "<g id=\"histogram\" fill=\"#dfe3e8\" stroke=\"#ffffff\" stroke-width=\"0.8\">"
        );
        for (l, r, h) in &bars {
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
        for (n, (&xv, &v)) in xs.iter().zip(vals).enumerate() {
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
    if let Some(r) = &reference {
        let _ = writeln!(
            out,
            "<path id=\"reference\" class=\"reference\" d=\"{}\" fill=\"none\" stroke=\"#555555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
            path(r)
        );
    }
    for (c, vals) in comps.iter().enumerate() {
        let col = component_colour(c);
        let _ = writeln!(
            out,
            "<g class=\"component\" id=\"component-{c}\" data-weight=\"{}\">\n\
             <path class=\"component-density\" d=\"{}\" fill=\"{col}\" fill-opacity=\"0.14\" stroke=\"{col}\" stroke-width=\"2\"/>\n</g>",
            model.weights()[c],
            path(vals)
        );
    }
    let _ = writeln!(
        out,
        "<path id=\"mixture-density\" d=\"{}\" fill=\"none\" stroke=\"#222222\" stroke-width=\"2.5\"/>",
        path(&mix)
    );
    let _ = writeln!(out, "</g>");
    let mut entries = component_entries(model);
    entries.push((Swatch::Line("#222222".into(), "none"), "mixture".into()));
    if options.reference.is_some() {
        let label = reference_label(options);
        entries.push((Swatch::Line("#555555".into(), "6 4"), label));
    }
    if n_points > 0 {
        entries.push((
            Swatch::Patch("#dfe3e8".into()),
            format!("{n_points} points"),
        ));
    }
    close_svg(&mut out, &entries);
    out
}

/// Reads points (row-major, `dim` numbers each) from `input` and keeps a
/// uniform random sample of at most `n` of them (reservoir sampling,
/// seeded, so the same input and seed give the same sample). Returns the
/// sample and the number of points read.
///
/// # Errors
///
/// [`ReportError::Io`] when reading fails.
pub fn reservoir_sample<R: Read>(
    input: R,
    format: Format,
    columns: Option<Columns>,
    dim: usize,
    n: usize,
    seed: u64,
) -> Result<(Vec<f64>, u64), ReportError> {
    let parser = Parser::new(ParserConfig {
        format,
        columns,
        dim: Some(dim),
    });
    let mut reader = BatchReader::new(input, 0, 1 << 20, parser);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample: Vec<f64> = Vec::with_capacity(n.min(1 << 20) * dim);
    let mut seen = 0u64;
    let mut batch = Batch::default();
    while reader.next_into(&mut batch)? {
        for x in batch.values.chunks_exact(dim) {
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
    Ok((sample, seen))
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
    /// SVG file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
    pub output: PathBuf,
    /// Points to draw with the model (a random sample of --sample of them).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// The two 0-based dimensions to project on (d >= 2).
    #[arg(long, value_name = "I,J", value_parser = parse_dims, default_value = "0,1")]
    pub dims: (usize, usize),
    /// Most points drawn from --data (a seeded uniform sample).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub sample: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Record format of --data: csv or json.
    #[arg(long, value_name = "FORMAT", value_parser = crate::config::enum_value::<Format>, default_value = "csv")]
    pub format: Format,
    /// Fields of --data to use, 0-based (as for `run`), e.g. 0,1.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub columns: Option<Vec<usize>>,
    /// Title of the picture.
    #[arg(long)]
    pub title: Option<String>,
}

/// `emstream plot`: writes the SVG picture of a checkpoint's mixture.
///
/// # Errors
///
/// [`ReportError`] when the checkpoint or the data cannot be read, the
/// dimensions do not fit the model, `--data` holds no point of the model's
/// dimension, or the SVG cannot be written.
pub fn run_plot(args: &PlotArgs) -> Result<(), ReportError> {
    let model = load_mixture(&args.checkpoint)?;
    let columns = super::score::check_columns(args.columns.as_deref())?;
    if let Some(c) = &columns {
        if c.len() != model.dim() {
            return Err(ReportError::Invalid(format!(
                "--columns names {} fields but the model has dimension {}: name exactly {}",
                c.len(),
                model.dim(),
                model.dim()
            )));
        }
    }
    let points = match &args.data {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|source| ReportError::File {
                path: path.clone(),
                source,
            })?;
            let (pts, seen) = reservoir_sample(
                std::io::BufReader::new(file),
                args.format,
                columns,
                model.dim(),
                args.sample,
                args.seed,
            )?;
            if seen == 0 {
                return Err(ReportError::Invalid(format!(
                    "--data {}: no record holds a point of the model's dimension {d}: \
                     pick {d} fields with --columns (0-based), or check --format",
                    path.display(),
                    d = model.dim()
                )));
            }
            Some(pts)
        }
        None => None,
    };
    let options = PlotOptions {
        dims: args.dims,
        title: args.title.clone(),
        ..PlotOptions::default()
    };
    let svg = render_svg(&model, points.as_deref(), &options)?;
    std::fs::write(&args.output, svg).map_err(|source| ReportError::File {
        path: args.output.clone(),
        source,
    })
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
        let svg = render_svg(&m, None, &PlotOptions::new()).unwrap();
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
            ..PlotOptions::new()
        };
        let svg = render_svg(&m, None, &opts).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let e = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("sigma-1"))
            .unwrap();
        let rx: f64 = e.attribute("rx").unwrap().parse().unwrap();
        let ry: f64 = e.attribute("ry").unwrap().parse().unwrap();
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
        use crate::checkpoint::{save, Checkpoint};
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
            components: 2,
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(params, 2);
        em.observe(&pts, None).unwrap();
        let ck = Checkpoint {
            learner: em,
            rejected: Default::default(),
            anomalies: 0,
            created_unix_ms: 0,
            updated_unix_ms: 0,
            sources: Vec::new(),
            columns: None,
            selection: None,
        };
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
            dims: (0, 1),
            sample: 500,
            seed: 0,
            format: Format::Csv,
            columns: None,
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
        let bad = PlotArgs {
            dims: (0, 2),
            ..args
        };
        assert!(matches!(run_plot(&bad), Err(ReportError::Invalid(_))));
    }
}
