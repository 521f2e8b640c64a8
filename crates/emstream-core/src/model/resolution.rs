//! The resolution of each input dimension: the step its values are
//! rounded to (integers, 0.1, 0.25 ...), detected from the values as they
//! stream, or given by the user.
//!
//! A value rounded to a step `q` stands for its whole rounding cell, of
//! width `q`: the most probability a density can give it is 1, a density
//! of `1/q` over the cell. A Gaussian's peak density along an axis of
//! variance `s²` is `1/√(2π s²)`, which is `1/q` at `s² = q²/(2π)`: the
//! engine keeps every component's covariance at least `diag(q²/(2π))`
//! ([`floor_of_step`], [`super::Engine::set_floor`]), so no component
//! claims more for one repeated value than the value's cell can hold.
//! Without a floor a component sitting on one repeated value shrinks to
//! the covariance floor and its density becomes a spike that wins every
//! comparison of likelihoods (BIC, scores, alert thresholds). The rounding
//! error's own variance, `q²/12` ([`rounding_variance`]), is too low a
//! floor: a component there still out-scores a uniform cell by 0.32 nats
//! per axis, enough for components on repeated values to win BIC. The
//! criteria for choosing K score rounded values by their dequantised
//! log-likelihood on top of this ([`super::select::Criteria::of_rounded`]).
//!
//! Detection works on differences from the first value seen, so a grid
//! with an offset (0.05, 0.15, 0.25 ...) has the step 0.1: the step is the
//! largest of the candidate steps `m·10^e` (`m` in 5, 2.5, 2, 1) that
//! divides every difference seen. A dimension whose step falls off the
//! candidates, or is finer than [`MIN_STEP_PER_SPREAD`] of its spread, is
//! continuous: it gets no floor, and is no longer looked at.

/// Largest and smallest decimal exponents of the candidate steps.
const MAX_EXP: i32 = 9;
const MIN_EXP: i32 = -12;

/// A step finer than this fraction of the dimension's standard deviation
/// means continuous values: its variance floor (`q²/(2π)`, under 2e-7 of
/// the variance) is below the default regularisation (1e-6 of the
/// variance) and could never shape a density.
pub const MIN_STEP_PER_SPREAD: f64 = 1e-3;

/// Differences of more than this many steps cannot be told apart from a
/// multiple of the step in f64; they count as not divisible.
const MAX_STEPS: f64 = 1e9;

/// Tolerance of "a whole number of steps", in steps (decimal text parsed
/// to f64 is off by a few units in the last place).
const STEP_TOLERANCE: f64 = 1e-6;

/// The candidate steps, largest first.
fn candidates() -> impl Iterator<Item = f64> {
    (MIN_EXP..=MAX_EXP).rev().flat_map(|e| {
        [5.0, 2.5, 2.0, 1.0].into_iter().map(move |m| {
            if e >= 0 {
                m * 10f64.powi(e)
            } else {
                m / 10f64.powi(-e)
            }
        })
    })
}

/// Whether `x` is a whole number of steps `q` (0 is; a difference that
/// is not 0 but rounds to no step is not).
fn divides(q: f64, x: f64) -> bool {
    let r = x / q;
    let k = r.round();
    r == 0.0 || (k != 0.0 && r.abs() <= MAX_STEPS && (r - k).abs() <= STEP_TOLERANCE)
}

/// What is known of one dimension's step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DimResolution {
    /// No two different values seen yet.
    Unseen,
    /// Every difference from the first value is a whole number of steps:
    /// the largest candidate step that divides them all.
    Step(f64),
    /// Continuous values (no candidate step, or one too fine to matter).
    Continuous,
}

impl DimResolution {
    /// Takes in the difference of one value from the dimension's first.
    #[inline]
    fn see(&mut self, diff: f64) {
        if diff == 0.0 || !diff.is_finite() {
            return;
        }
        *self = match *self {
            DimResolution::Continuous => return,
            DimResolution::Unseen => candidates()
                .find(|&q| divides(q, diff))
                .map_or(DimResolution::Continuous, DimResolution::Step),
            DimResolution::Step(step) => {
                if divides(step, diff) {
                    return;
                }
                candidates()
                    .skip_while(|&q| q >= step)
                    .find(|&q| divides(q, step) && divides(q, diff))
                    .map_or(DimResolution::Continuous, DimResolution::Step)
            }
        };
    }

    /// The detected step, if any.
    pub fn step(&self) -> Option<f64> {
        match *self {
            DimResolution::Step(step) => Some(step),
            _ => None,
        }
    }
}

/// Each dimension's resolution: the user's steps where given, the detected
/// ones elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The user's step per dimension (`None`: detect).
    given: Vec<Option<f64>>,
    /// The first finite value of each dimension (differences are taken
    /// from it).
    origin: Vec<Option<f64>>,
    /// What the values showed, per dimension.
    seen: Vec<DimResolution>,
    /// Whether any dimension still needs looking at.
    watching: bool,
}

/// A value off the grid of a step the user gave.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("--resolution {step} does not fit dimension {dim} (0-based): the value {value} is not a whole number of steps of {step} from the first value {origin}; {hint}")]
pub struct OffGrid {
    /// The dimension (0-based).
    pub dim: usize,
    /// The step given.
    pub step: f64,
    /// The first value of the dimension.
    pub origin: f64,
    /// The value off the grid.
    pub value: f64,
    /// What to give instead.
    pub hint: String,
}

impl Resolution {
    /// Nothing seen yet, for points of dimension `dim`, with the user's
    /// steps `given` (`None` per dimension: detect; one entry for all).
    ///
    /// # Errors
    ///
    /// A message when `given` has neither 0, 1 nor `dim` entries.
    pub fn new(dim: usize, given: &[Option<f64>]) -> Result<Self, String> {
        let given = match given.len() {
            0 => vec![None; dim],
            1 => vec![given[0]; dim],
            n if n == dim => given.to_vec(),
            n => {
                return Err(format!(
                    "--resolution lists {n} steps for points of dimension {dim}: give one step for all, or one per dimension (auto to detect one)"
                ))
            }
        };
        Ok(Resolution {
            given,
            origin: vec![None; dim],
            seen: vec![DimResolution::Unseen; dim],
            watching: true,
        })
    }

    /// Rebuilt from its stored parts.
    ///
    /// # Errors
    ///
    /// A message when the parts disagree with `dim` or a step is not
    /// finite and positive.
    pub fn from_parts(
        given: Vec<Option<f64>>,
        origin: Vec<Option<f64>>,
        seen: Vec<DimResolution>,
    ) -> Result<Self, String> {
        let dim = seen.len();
        if given.len() != dim || origin.len() != dim {
            return Err(format!(
                "the resolution has {} given steps and {} first values for {dim} dimensions",
                given.len(),
                origin.len()
            ));
        }
        let ok = |q: f64| q.is_finite() && q > 0.0;
        if !given.iter().flatten().all(|&q| ok(q))
            || !seen.iter().filter_map(DimResolution::step).all(ok)
        {
            return Err("a resolution step is not finite and positive".into());
        }
        if !origin.iter().flatten().all(|o| o.is_finite()) {
            return Err("a first value of the resolution is not finite".into());
        }
        let mut r = Resolution {
            given,
            origin,
            seen,
            watching: true,
        };
        r.watching = r.needs_watching();
        Ok(r)
    }

    /// All dimensions continuous, nothing watched: a model learned before
    /// resolutions were kept goes on exactly as it was learned.
    pub fn continuous(dim: usize) -> Self {
        Resolution {
            given: vec![None; dim],
            origin: vec![None; dim],
            seen: vec![DimResolution::Continuous; dim],
            watching: false,
        }
    }

    fn needs_watching(&self) -> bool {
        self.seen
            .iter()
            .zip(&self.given)
            .any(|(s, g)| g.is_some() || *s != DimResolution::Continuous)
    }

    /// Whether any dimension is still looked at ([`Resolution::observe`]
    /// costs nothing otherwise).
    pub fn watching(&self) -> bool {
        self.watching
    }

    /// The user's steps.
    pub fn given(&self) -> &[Option<f64>] {
        &self.given
    }

    /// The first value of each dimension.
    pub fn origin(&self) -> &[Option<f64>] {
        &self.origin
    }

    /// What the values showed.
    pub fn seen(&self) -> &[DimResolution] {
        &self.seen
    }

    /// Takes in rows of points (a whole number of rows of the dimension).
    /// Costs nothing once every dimension is continuous.
    ///
    /// # Errors
    ///
    /// [`OffGrid`] for the first value that is not on the grid of a step
    /// the user gave.
    pub fn observe(&mut self, points: &[f64]) -> Result<(), OffGrid> {
        if !self.watching {
            return Ok(());
        }
        let d = self.seen.len();
        for a in 0..d {
            let given = self.given[a];
            if self.seen[a] == DimResolution::Continuous && given.is_none() {
                continue;
            }
            let mut column = points.iter().skip(a).step_by(d).copied();
            let origin = match self.origin[a] {
                Some(o) => o,
                None => match column.find(|x| x.is_finite()) {
                    Some(o) => {
                        self.origin[a] = Some(o);
                        o
                    }
                    None => continue,
                },
            };
            let seen = &mut self.seen[a];
            for x in column {
                let diff = x - origin;
                seen.see(diff);
                if let Some(q) = given {
                    if diff.is_finite() && !divides(q, diff) {
                        return Err(self.off_grid(a, q, origin, x));
                    }
                }
            }
        }
        self.watching = self.needs_watching();
        Ok(())
    }

    /// The error for `value`, off the grid of the step `q` given for
    /// dimension `a`.
    fn off_grid(&self, a: usize, q: f64, origin: f64, value: f64) -> OffGrid {
        let hint = match self.seen[a].step() {
            Some(s) => format!("the values are on a grid of {s}: give {s} or a divisor of it, or leave --resolution out to detect it"),
            None => "the values are continuous: leave --resolution out (or give auto for this dimension)".to_string(),
        };
        OffGrid {
            dim: a,
            step: q,
            origin,
            value,
            hint,
        }
    }

    /// Turns every detected step finer than [`MIN_STEP_PER_SPREAD`] of
    /// its dimension's spread (`variance`, the data's per-dimension
    /// variance) into continuous values, for good.
    pub fn settle(&mut self, variance: &[f64]) {
        for ((s, g), v) in self.seen.iter_mut().zip(&self.given).zip(variance) {
            if g.is_none() && s.step().is_some_and(|q| q < MIN_STEP_PER_SPREAD * v.sqrt()) {
                *s = DimResolution::Continuous;
            }
        }
        self.watching = self.needs_watching();
    }

    /// Each dimension's step in use: the given one, else the detected one
    /// (`None`: continuous, or not known yet).
    pub fn steps(&self) -> Vec<Option<f64>> {
        self.given
            .iter()
            .zip(&self.seen)
            .map(|(g, s)| g.or(s.step()))
            .collect()
    }

    /// The variance floor per dimension, [`floor_of_step`] for a step `q`
    /// and 0 for continuous values.
    pub fn floor(&self) -> Vec<f64> {
        self.steps()
            .iter()
            .map(|q| q.map_or(0.0, floor_of_step))
            .collect()
    }
}

/// The variance floor of a dimension rounded to the step `q`,
/// `q²/(2π)`: a Gaussian of this variance has the peak density `1/q`, that
/// of a rounding cell holding all the probability (see the module docs).
pub fn floor_of_step(q: f64) -> f64 {
    q * q / (2.0 * std::f64::consts::PI)
}

/// The variance of the rounding error, `q²/12` (uniform over the cell),
/// of the dimension whose variance floor is `floor` ([`floor_of_step`]);
/// 0 for 0.
pub fn rounding_variance(floor: f64) -> f64 {
    floor * std::f64::consts::PI / 6.0
}

/// The resolution the user gives (`--resolution`, config key
/// `resolution`): `auto` (detect every dimension), one step for every
/// dimension, or one per dimension (`auto` for some). In a config file a
/// number, `"auto"`, or an array such as `[0.1, 1, "auto"]`; as a flag
/// `0.1` or `0.1,1,auto`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawSpec", into = "RawSpec")]
pub struct ResolutionSpec(pub Vec<Option<f64>>);

/// A `--resolution` that is not a positive step, `auto`, or a list of them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("resolution must be auto (detect), a positive step such as 1, 0.1 or 0.25, or one per dimension such as 0.1,1,auto; got {0:?}")]
pub struct BadResolution(pub String);

impl std::str::FromStr for ResolutionSpec {
    type Err = BadResolution;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(ResolutionSpec::default());
        }
        let steps = t
            .split(',')
            .map(|part| {
                let p = part.trim();
                if p.eq_ignore_ascii_case("auto") {
                    return Ok(None);
                }
                match p.parse::<f64>() {
                    Ok(q) if q.is_finite() && q > 0.0 => Ok(Some(q)),
                    _ => Err(BadResolution(s.to_string())),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if steps.iter().all(Option::is_none) {
            return Ok(ResolutionSpec::default());
        }
        Ok(ResolutionSpec(steps))
    }
}

impl std::fmt::Display for ResolutionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("auto");
        }
        for (i, q) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match q {
                Some(q) => write!(f, "{q}")?,
                None => f.write_str("auto")?,
            }
        }
        Ok(())
    }
}

/// The serialised form of [`ResolutionSpec`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum RawSpec {
    Number(f64),
    Text(String),
    List(Vec<RawStep>),
}

/// One entry of a per-dimension list.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum RawStep {
    Number(f64),
    Text(String),
}

impl TryFrom<RawSpec> for ResolutionSpec {
    type Error = BadResolution;
    fn try_from(r: RawSpec) -> Result<Self, Self::Error> {
        let text = |s: RawStep| match s {
            RawStep::Number(q) => q.to_string(),
            RawStep::Text(t) => t,
        };
        match r {
            RawSpec::Number(q) => q.to_string().parse(),
            RawSpec::Text(t) => t.parse(),
            RawSpec::List(l) if l.is_empty() => Err(BadResolution("[]".into())),
            RawSpec::List(l) => l
                .into_iter()
                .map(text)
                .collect::<Vec<_>>()
                .join(",")
                .parse(),
        }
    }
}

impl From<ResolutionSpec> for RawSpec {
    fn from(s: ResolutionSpec) -> Self {
        match s.0.as_slice() {
            [] => RawSpec::Text("auto".into()),
            [Some(q)] => RawSpec::Number(*q),
            steps => RawSpec::List(
                steps
                    .iter()
                    .map(|q| q.map_or(RawStep::Text("auto".into()), RawStep::Number))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(values: &[f64]) -> DimResolution {
        let mut r = Resolution::new(1, &[]).unwrap();
        r.observe(values).unwrap();
        r.seen()[0]
    }

    #[test]
    fn the_spec_parses_steps_and_refuses_zero_negative_and_nan() {
        let p = |s: &str| s.parse::<ResolutionSpec>();
        assert_eq!(p("auto").unwrap(), ResolutionSpec::default());
        assert_eq!(p("0.1").unwrap().0, vec![Some(0.1)]);
        assert_eq!(
            p("0.1, auto,1").unwrap().0,
            vec![Some(0.1), None, Some(1.0)]
        );
        assert_eq!(p("0.1,auto,1").unwrap().to_string(), "0.1,auto,1");
        for bad in ["0", "-1", "nan", "NaN", "inf", "x", "0.1,,1", ""] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("positive step"), "{bad}: {e}");
        }
    }

    #[test]
    fn integers_tenths_and_quarters_are_detected() {
        assert_eq!(detect(&[3.0, 5.0, 4.0, 7.0]).step(), Some(1.0));
        assert_eq!(detect(&[0.3, 0.1, 1.7, -2.2]).step(), Some(0.1));
        assert_eq!(detect(&[0.25, 1.0, 0.75, 2.5]).step(), Some(0.25));
        assert_eq!(detect(&[0.5, 1.0, 3.5]).step(), Some(0.5));
        assert_eq!(detect(&[1000.0, 3000.0, 2000.0]).step(), Some(1000.0));
        // An offset grid: differences decide.
        assert_eq!(detect(&[0.05, 0.15, 0.35, 1.25]).step(), Some(0.1));
        // A finer value later refines the step.
        assert_eq!(detect(&[1.0, 2.0, 2.5, 2.25]).step(), Some(0.25));
    }

    #[test]
    fn one_value_shows_no_step_and_full_precision_is_continuous() {
        assert_eq!(detect(&[7.3, 7.3, 7.3]), DimResolution::Unseen);
        assert_eq!(
            detect(&[0.1234567891234, 0.98765432101234]),
            DimResolution::Continuous
        );
        assert_eq!(
            detect(&[std::f64::consts::PI, std::f64::consts::E]),
            DimResolution::Continuous
        );
    }

    #[test]
    fn a_step_too_fine_for_the_spread_settles_as_continuous() {
        let mut r = Resolution::new(2, &[]).unwrap();
        // Seven significant digits on unit spread, integers on unit spread.
        r.observe(&[-1.443608, 3.0, 0.4217856, 4.0, -0.1991338, 2.0])
            .unwrap();
        assert!(r.seen()[0].step().is_some_and(|q| q < 1e-6));
        r.settle(&[1.0, 1.0]);
        assert_eq!(r.seen()[0], DimResolution::Continuous);
        assert_eq!(r.steps(), vec![None, Some(1.0)]);
        assert_eq!(r.floor(), vec![0.0, floor_of_step(1.0)]);
    }

    #[test]
    fn a_given_step_must_divide_the_values() {
        let mut r = Resolution::new(2, &[Some(0.5)]).unwrap();
        r.observe(&[1.0, 2.0, 1.5, 3.0]).unwrap();
        let e = r.observe(&[1.25, 2.0]).unwrap_err();
        assert_eq!(e.dim, 0);
        assert_eq!(e.value, 1.25);
        assert!(e.to_string().contains("give 0.25"), "{e}");
        let mut r = Resolution::new(1, &[Some(0.3)]).unwrap();
        r.observe(&[0.3, 0.9, 1.5, -0.6]).unwrap();
        assert!(Resolution::new(3, &[Some(1.0), None]).is_err());
        let mut r = Resolution::new(1, &[Some(2.0)]).unwrap();
        assert!(r.observe(&[1.0, 2.0]).is_err(), "2 does not divide 1");
    }
}
