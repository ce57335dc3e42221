//! Exponential decay in event time, kept exact with forward decay (see docs/architecture.md,
//! "Scoring, exactly", for the maths in words).
//!
//! An event worth `p` points at time `s` is worth `p * 2^(-(t - s) / h)` at `t >= s`. Each
//! lead keeps, per rule, `acc = sum(p_i * 2^((s_i - L) / h))` against a landmark `L`, and
//! `value(t) = acc * 2^((L - t) / h)`, clamped to the rule's `cap`.
//!
//! Floating point: every formula is evaluated in the same order as the reference Python
//! implementation this replaced, and `pow`/`log2` are glibc's (called through a pointer so
//! that LLVM cannot rewrite `pow(2, x)` into `exp2(x)`), so results are bit-identical to it.

use pyo3::prelude::*;

unsafe extern "C" {
    fn pow(x: f64, y: f64) -> f64;
    fn log2(x: f64) -> f64;
}

/// `2^x`, computed by the C library's `pow` exactly as CPython's `2.0 ** x` does.
#[inline]
pub fn pow2(x: f64) -> f64 {
    let f: unsafe extern "C" fn(f64, f64) -> f64 = std::hint::black_box(pow);
    // SAFETY: `pow` is the C library's pure function of two doubles.
    unsafe { f(2.0, x) }
}

/// `log2(x)` from the C library (CPython's `math.log2`).
#[inline]
pub fn log2_c(x: f64) -> f64 {
    let f: unsafe extern "C" fn(f64) -> f64 = std::hint::black_box(log2);
    // SAFETY: as above.
    unsafe { f(x) }
}

/// `ln 2`, as CPython's `math.log(2.0)` (correctly rounded).
const LN2: f64 = std::f64::consts::LN_2;

/// Move the landmark once it is this many half-lives (of the shortest rule) behind the
/// lead's clock (keeps weights below 2^64).
pub const REBASE_AFTER_HALF_LIVES: f64 = 64.0;

/// Decay parameters of one rule.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub half_life_ms: i64,
    pub cap: Option<f64>,
}

/// One rule's accumulated contribution: `acc` against the curve's landmark.
#[derive(Clone, Copy, Debug)]
pub struct Term {
    pub rule: u32,
    pub acc: f64,
    pub half_life_ms: i64,
    pub cap: Option<f64>,
}

#[inline]
pub fn ratio(num: i64, den: i64) -> f64 {
    // Both stay far below 2^53, so this is CPython's correctly rounded int / int.
    num as f64 / den as f64
}

#[inline]
pub fn clamp(value: f64, cap: Option<f64>) -> f64 {
    match cap {
        None => value,
        Some(c) => {
            if value > c {
                c
            } else if value < -c {
                -c
            } else {
                value
            }
        }
    }
}

impl Term {
    /// Decayed, capped contribution at `at_ms`.
    #[inline]
    pub fn value(&self, at_ms: i64, landmark_ms: i64) -> f64 {
        clamp(
            self.acc * pow2(ratio(landmark_ms - at_ms, self.half_life_ms)),
            self.cap,
        )
    }
}

/// A lead's score as a function of time between two events: positive terms fall towards
/// 0, negative terms rise towards 0, so on `[a, b]` the score is at least
/// `pos(b) + neg(a)`, the bound that makes `first_below` exact.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    pub landmark_ms: i64,
    pub positive: Vec<Term>,
    pub negative: Vec<Term>,
}

enum Outcome {
    NotApplicable,
    Found(Option<i64>),
}

impl Curve {
    pub fn new(terms: &[Term], landmark_ms: i64) -> Curve {
        Curve {
            landmark_ms,
            positive: terms.iter().copied().filter(|t| t.acc > 0.0).collect(),
            negative: terms.iter().copied().filter(|t| t.acc < 0.0).collect(),
        }
    }

    /// From a lead's accumulators (rule, acc) in insertion order.
    pub fn from_sums(sums: &[(u32, f64)], params: &[Param], landmark_ms: i64) -> Curve {
        let mut curve = Curve {
            landmark_ms,
            ..Curve::default()
        };
        for &(rule, acc) in sums {
            if acc == 0.0 {
                continue;
            }
            let p = params[rule as usize];
            let term = Term {
                rule,
                acc,
                half_life_ms: p.half_life_ms,
                cap: p.cap,
            };
            if acc > 0.0 {
                curve.positive.push(term);
            } else {
                curve.negative.push(term);
            }
        }
        curve
    }

    pub fn pos(&self, at_ms: i64) -> f64 {
        let mut total = 0.0;
        let shift = self.landmark_ms - at_ms;
        for t in &self.positive {
            let value = t.acc * pow2(ratio(shift, t.half_life_ms));
            total += match t.cap {
                Some(c) if value > c => c,
                _ => value,
            };
        }
        total
    }

    pub fn neg(&self, at_ms: i64) -> f64 {
        let mut total = 0.0;
        let shift = self.landmark_ms - at_ms;
        for t in &self.negative {
            let value = t.acc * pow2(ratio(shift, t.half_life_ms));
            total += match t.cap {
                Some(c) if value < -c => -c,
                _ => value,
            };
        }
        total
    }

    /// The score at `at_ms`: always `pos + neg`, so bounds and values agree to the bit.
    #[inline]
    pub fn score(&self, at_ms: i64) -> f64 {
        self.pos(at_ms) + self.neg(at_ms)
    }

    /// Earliest whole millisecond `m` in `[lo, hi]` with `score(m) < threshold`.
    pub fn first_below(&self, threshold: f64, lo: i64, hi: i64) -> Option<i64> {
        if lo > hi {
            return None;
        }
        if let Outcome::Found(m) = self.closed_form(threshold, lo, hi) {
            return m;
        }
        if let Outcome::Found(m) = self.newton(threshold, lo, hi) {
            return m;
        }
        self.branch_and_bound(threshold, lo, hi)
    }

    /// The exact search behind `first_below` (used alone by tests).
    pub fn branch_and_bound(&self, threshold: f64, lo: i64, hi: i64) -> Option<i64> {
        // Depth-first, left half first: when score(a) < threshold every earlier
        // millisecond has been checked or ruled out by the bound, so `a` is the first.
        let mut stack = vec![(lo, hi)];
        while let Some((a, b)) = stack.pop() {
            if a > b {
                continue;
            }
            if self.score(a) < threshold {
                return Some(a);
            }
            if a == b || self.pos(b) + self.neg(a) >= threshold {
                continue;
            }
            let mid = a + (b - a) / 2;
            stack.push((mid + 1, b));
            stack.push((a + 1, mid));
        }
        None
    }

    fn cap_binds(&self, at_ms: i64) -> bool {
        self.positive.iter().any(|t| match t.cap {
            Some(c) => t.value(at_ms, self.landmark_ms).abs() >= c,
            None => false,
        })
    }

    /// Float rounding can put an analytic answer one tick off: settle it on the grid.
    fn settle(&self, threshold: f64, mut m: i64, lo: i64, hi: i64) -> Option<i64> {
        while m > lo && self.score(m - 1) < threshold {
            m -= 1;
        }
        while m <= hi && self.score(m) >= threshold {
            m += 1;
        }
        if m <= hi {
            Some(m)
        } else {
            None
        }
    }

    fn newton(&self, threshold: f64, lo: i64, hi: i64) -> Outcome {
        let terms = &self.positive;
        if !self.negative.is_empty() || terms.is_empty() || threshold <= 0.0 {
            return Outcome::NotApplicable;
        }
        if self.cap_binds(lo) {
            return Outcome::NotApplicable;
        }
        if self.score(lo) < threshold {
            return Outcome::Found(Some(lo));
        }
        if self.score(hi) >= threshold {
            return Outcome::Found(None);
        }
        let landmark = self.landmark_ms as f64;
        let mut t = lo as f64;
        let mut converged = false;
        for _ in 0..100 {
            let mut value = 0.0;
            let mut slope = 0.0;
            for term in terms {
                let h = term.half_life_ms as f64;
                let v = term.acc * pow2((landmark - t) / h);
                value += v;
                slope -= v * LN2 / h;
            }
            let excess = value - threshold;
            if excess <= 0.0 || slope >= 0.0 {
                converged = true;
                break;
            }
            let step = -excess / slope;
            t = (t + step).min(hi as f64);
            if step < 0.25 {
                converged = true;
                break;
            }
        }
        if !converged {
            return Outcome::NotApplicable;
        }
        let m = (t.floor() as i64).max(lo).min(hi);
        Outcome::Found(self.settle(threshold, m, lo, hi))
    }

    fn closed_form(&self, threshold: f64, lo: i64, hi: i64) -> Outcome {
        let terms = &self.positive;
        if !self.negative.is_empty() || terms.is_empty() || threshold <= 0.0 {
            return Outcome::NotApplicable;
        }
        let half_life = terms[0].half_life_ms;
        if terms.iter().any(|t| t.half_life_ms != half_life) || self.cap_binds(lo) {
            return Outcome::NotApplicable;
        }
        let mut total = 0.0;
        for t in terms {
            total += t.acc;
        }
        // total * 2^((L - t) / h) < threshold  <=>  t > L + h * log2(total / threshold)
        let crossing =
            self.landmark_ms as f64 + half_life as f64 * (log2_c(total) - log2_c(threshold));
        if !crossing.is_finite() || crossing.abs() > 2f64.powi(62) {
            return Outcome::NotApplicable;
        }
        let m = lo.max(crossing.floor() as i64 + 1);
        Outcome::Found(self.settle(threshold, m, lo, hi))
    }

    /// A time by which the score is certainly below `threshold` (if it ever will be): when
    /// the positive part alone, uncapped, has decayed under it.
    pub fn horizon_ms(&self, start_ms: i64, threshold: f64) -> i64 {
        let longest = self
            .positive
            .iter()
            .chain(self.negative.iter())
            .map(|t| t.half_life_ms)
            .max()
            .unwrap_or(1);
        let shift = self.landmark_ms - start_ms;
        let mut positive = 0.0;
        for t in &self.positive {
            positive += t.acc * pow2(ratio(shift, t.half_life_ms));
        }
        if threshold > 0.0 && positive > 0.0 {
            let halvings = (log2_c(positive) - log2_c(threshold)).max(0.0) + 1.0;
            if halvings.is_finite() {
                return start_ms + (halvings * longest as f64).ceil() as i64;
            }
        }
        start_ms + 1100 * longest
    }
}

/// Re-express accumulators against a new landmark (values at any time unchanged).
pub fn rebase(sums: &mut [(u32, f64)], params: &[Param], old_ms: i64, new_ms: i64) {
    let shift = old_ms - new_ms;
    for entry in sums.iter_mut() {
        entry.1 *= pow2(ratio(shift, params[entry.0 as usize].half_life_ms));
    }
}

/// `Curve::from_sums(..).score(at)` without building the curve (same terms, same order).
pub fn score_from_sums(sums: &[(u32, f64)], params: &[Param], landmark_ms: i64, at_ms: i64) -> f64 {
    let mut positive = 0.0;
    let mut negative = 0.0;
    let shift = landmark_ms - at_ms;
    for &(rule, acc) in sums {
        if acc == 0.0 {
            continue;
        }
        let p = params[rule as usize];
        let value = acc * pow2(ratio(shift, p.half_life_ms));
        if acc > 0.0 {
            positive += match p.cap {
                Some(c) if value > c => c,
                _ => value,
            };
        } else {
            negative += match p.cap {
                Some(c) if value < -c => -c,
                _ => value,
            };
        }
    }
    positive + negative
}

/// `pos(end) + neg(start)`: a lower bound of the score on `[start, end]`.
pub fn lower_bound_from_sums(
    sums: &[(u32, f64)],
    params: &[Param],
    landmark_ms: i64,
    start_ms: i64,
    end_ms: i64,
) -> f64 {
    let mut positive = 0.0;
    let mut negative = 0.0;
    for &(rule, acc) in sums {
        if acc == 0.0 {
            continue;
        }
        let p = params[rule as usize];
        if acc > 0.0 {
            let value = acc * pow2(ratio(landmark_ms - end_ms, p.half_life_ms));
            positive += match p.cap {
                Some(c) if value > c => c,
                _ => value,
            };
        } else {
            let value = acc * pow2(ratio(landmark_ms - start_ms, p.half_life_ms));
            negative += match p.cap {
                Some(c) if value < -c => -c,
                _ => value,
            };
        }
    }
    positive + negative
}

// ------------------------------------------------------------------------------ Python

/// A score curve for Python (`tests/decay_curve.py:Curve` wraps it): terms are
/// `(acc, half_life_ms, cap)` in order.
#[pyclass(name = "Curve", module = "leadscore_core", frozen)]
pub struct PyCurve {
    pub curve: Curve,
}

#[pymethods]
impl PyCurve {
    #[new]
    fn py_new(terms: Vec<(f64, i64, Option<f64>)>, landmark_ms: i64) -> PyCurve {
        let terms: Vec<Term> = terms
            .into_iter()
            .enumerate()
            .map(|(i, (acc, half_life_ms, cap))| Term {
                rule: i as u32,
                acc,
                half_life_ms,
                cap,
            })
            .collect();
        PyCurve {
            curve: Curve::new(&terms, landmark_ms),
        }
    }

    /// Indices (into the constructor's terms) of the positive and of the negative terms.
    fn split(&self) -> (Vec<u32>, Vec<u32>) {
        (
            self.curve.positive.iter().map(|t| t.rule).collect(),
            self.curve.negative.iter().map(|t| t.rule).collect(),
        )
    }

    fn pos(&self, at_ms: i64) -> f64 {
        self.curve.pos(at_ms)
    }

    fn neg(&self, at_ms: i64) -> f64 {
        self.curve.neg(at_ms)
    }

    fn score(&self, at_ms: i64) -> f64 {
        self.curve.score(at_ms)
    }

    fn first_below(&self, threshold: f64, lo_ms: i64, hi_ms: i64) -> Option<i64> {
        self.curve.first_below(threshold, lo_ms, hi_ms)
    }

    /// Only the branch-and-bound search, for tests.
    fn search(&self, threshold: f64, lo_ms: i64, hi_ms: i64) -> Option<i64> {
        if lo_ms > hi_ms {
            return None;
        }
        self.curve.branch_and_bound(threshold, lo_ms, hi_ms)
    }

    /// Only the closed-form path (None = not applicable, else `(answer,)`), for tests.
    fn closed_form(&self, threshold: f64, lo_ms: i64, hi_ms: i64) -> Option<(Option<i64>,)> {
        match self.curve.closed_form(threshold, lo_ms, hi_ms) {
            Outcome::NotApplicable => None,
            Outcome::Found(m) => Some((m,)),
        }
    }

    /// Only Newton's method (None = not applicable, else `(answer,)`), for tests.
    fn newton(&self, threshold: f64, lo_ms: i64, hi_ms: i64) -> Option<(Option<i64>,)> {
        match self.curve.newton(threshold, lo_ms, hi_ms) {
            Outcome::NotApplicable => None,
            Outcome::Found(m) => Some((m,)),
        }
    }

    fn horizon_ms(&self, start_ms: i64, threshold: f64) -> i64 {
        self.curve.horizon_ms(start_ms, threshold)
    }
}

/// `value` (points against `from_ms`) as worth against `to_ms`:
/// `value * 2^((from_ms - to_ms) / half_life_ms)`. Moving a landmark, or reading a
/// forward-decayed value at a time, is this.
#[inline]
pub fn decay_to(value: f64, from_ms: i64, to_ms: i64, half_life_ms: i64) -> f64 {
    value * pow2(ratio(from_ms - to_ms, half_life_ms))
}

#[pyfunction(name = "decay_to")]
fn py_decay_to(value: f64, from_ms: i64, to_ms: i64, half_life_ms: i64) -> PyResult<f64> {
    if half_life_ms < 1 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "half_life_ms must be >= 1",
        ));
    }
    Ok(decay_to(value, from_ms, to_ms, half_life_ms))
}

/// `2 ** x` exactly as the engine computes it.
#[pyfunction(name = "pow2")]
fn py_pow2(x: f64) -> f64 {
    pow2(x)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCurve>()?;
    m.add_function(wrap_pyfunction!(py_pow2, m)?)?;
    m.add_function(wrap_pyfunction!(py_decay_to, m)?)?;
    m.add("REBASE_AFTER_HALF_LIVES", REBASE_AFTER_HALF_LIVES)?;
    Ok(())
}
