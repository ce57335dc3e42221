//! The per-event orchestration (`accept`) and the hot/cool state machine over one lead
//! (see `scoring/state_machine.py` for the rules in words). Per lead, at each event, with `t = max(clock, occurred_at)`:
//!
//! 1. if the lead is hot and its decayed score fell below `cool` in `(clock, t]`, it cooled
//!    at the first such millisecond (no trigger event);
//! 2. apply the matched rules' points, each with the event's own time;
//! 3. not hot and `score(t) >= hot` (and the fit grade allows): becomes hot at `t`; hot and
//!    (`score(t) < cool` or the fit grade no longer allows): cooled at `t`.
//!
//! Rule matching and fit grades stay in Python (`scoring.rules`, `scoring.profile`);
//! this module receives the matched rule indices and the fit after each profile change.

use ahash::AHashMap;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::decay::{
    decay_to, lower_bound_from_sums, pow2, rebase, score_from_sums, Curve, Param,
    REBASE_AFTER_HALF_LIVES,
};

/// How many rules a crossing's reasons list (the fit-grade reason is added in Python).
pub const TOP_REASONS: usize = 5;

/// A rules file, as the state machine needs it.
#[derive(Clone, Debug)]
pub struct Rules {
    pub ids: Vec<String>,
    pub params: Vec<Param>,
    pub points: Vec<f64>,
    pub hot: f64,
    pub cool: f64,
    pub min_half_life_ms: i64,
    pub max_half_life_ms: i64,
    /// A re-sent event id is a duplicate while the lead's clock is at most this far past
    /// the first copy's `occurred_at` (event time; see [`accept`]).
    pub dedupe_window_ms: i64,
    /// Fit of a lead that has no profile yet.
    pub empty_fit: Fit,
}

/// A lead's fit, from the Python fit rules: its score and whether its grade may be hot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub score: f64,
    pub allows_hot: bool,
}

/// A lead's scoring state (profile and Kafka positions are kept by the caller).
#[derive(Clone, Debug)]
pub struct Lead {
    pub clock_ms: i64,
    pub landmark_ms: i64,
    /// (rule index, forward-decayed sum), in the order the rules first fired.
    pub sums: Vec<(u32, f64)>,
    pub hot: bool,
    /// Crossings so far (part of crossing ids).
    pub crossings: u64,
    pub fit: Fit,
    pub events_applied: u64,
    /// The latest `score_reset` (or erasure): events dated at or before it do not count
    /// (`i64::MIN`: never reset).
    pub floor_ms: i64,
}

/// What an incoming event does besides matching rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A behaviour event (or a `score_adjusted`: its points come with it).
    Behaviour,
    /// A `lead_profile` event: the fit is asked for after it.
    Profile,
    /// A `score_reset`: the behaviour score is zero as of its time, and events dated at or
    /// before it never count.
    Reset,
    /// A `lead_erased`: a reset that also forgets the profile (the caller's, asked through
    /// `fit`), the dedupe window and the event count, leaving a tombstone (positions, the
    /// floor, the crossing count); a hot lead cools first, then an erased record follows.
    Erase,
}

impl Kind {
    pub fn from_code(code: u8) -> PyResult<Kind> {
        match code {
            0 => Ok(Kind::Behaviour),
            1 => Ok(Kind::Profile),
            2 => Ok(Kind::Reset),
            3 => Ok(Kind::Erase),
            _ => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown event kind {code} (0 behaviour, 1 profile, 2 reset, 3 erase)"
            ))),
        }
    }
}

/// A crossing before Python dresses it up (id, grade, reason texts).
#[derive(Clone, Debug)]
pub struct RawCrossing {
    pub became_hot: bool,
    pub at_ms: i64,
    pub score: f64,
    /// The lead's crossing count before this one.
    pub sequence: u64,
    /// Index of the triggering event in the caller's list (None: decay did it).
    pub trigger: Option<usize>,
    /// Top rules by magnitude: (rule index, contribution).
    pub reasons: Vec<(u32, f64)>,
    pub fit: Fit,
    /// Not a threshold crossing: the lead was erased (`lead_erased`).
    pub erased: bool,
}

impl Lead {
    pub fn new(at_ms: i64, fit: Fit) -> Lead {
        Lead {
            clock_ms: at_ms,
            landmark_ms: at_ms,
            sums: Vec::new(),
            hot: false,
            crossings: 0,
            fit,
            events_applied: 0,
            floor_ms: i64::MIN,
        }
    }

    pub fn curve(&self, rules: &Rules) -> Curve {
        Curve::from_sums(&self.sums, &rules.params, self.landmark_ms)
    }

    /// Score at `at_ms` (a time before the clock means the clock).
    pub fn score_at(&self, rules: &Rules, at_ms: i64) -> f64 {
        score_from_sums(
            &self.sums,
            &rules.params,
            self.landmark_ms,
            at_ms.max(self.clock_ms),
        )
    }

    /// Per-rule contributions at `at_ms` (clamped to the clock), largest first, ties by id.
    pub fn explain(&self, rules: &Rules, at_ms: i64) -> Vec<(u32, f64)> {
        let at_ms = at_ms.max(self.clock_ms);
        let curve = self.curve(rules);
        let mut parts: Vec<(u32, f64)> = curve
            .positive
            .iter()
            .chain(curve.negative.iter())
            .map(|t| (t.rule, t.value(at_ms, self.landmark_ms)))
            .collect();
        parts.sort_by(|a, b| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| rules.ids[a.0 as usize].cmp(&rules.ids[b.0 as usize]))
        });
        parts
    }

    /// For a hot lead: the millisecond it cools if no event arrives (None: never / not hot).
    pub fn cool_due_ms(&self, rules: &Rules) -> Option<i64> {
        if !self.hot {
            return None;
        }
        let curve = self.curve(rules);
        let start = self.clock_ms + 1;
        curve.first_below(rules.cool, start, curve.horizon_ms(start, rules.cool))
    }

    fn cross(
        &mut self,
        rules: &Rules,
        became_hot: bool,
        at_ms: i64,
        score: f64,
        trigger: Option<usize>,
        out: &mut Vec<RawCrossing>,
    ) {
        let mut parts = self.explain(rules, at_ms);
        // Largest magnitude first (a cooling's negative rule included), ties by rule id.
        parts.sort_by(|a, b| {
            b.1.abs()
                .partial_cmp(&a.1.abs())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| rules.ids[a.0 as usize].cmp(&rules.ids[b.0 as usize]))
        });
        parts.truncate(TOP_REASONS);
        out.push(RawCrossing {
            became_hot,
            at_ms,
            score,
            sequence: self.crossings,
            trigger,
            reasons: parts,
            fit: self.fit,
            erased: false,
        });
        self.hot = became_hot;
        self.crossings += 1;
    }

    /// Forget the lead at `t` (a `lead_erased`; `fit` is that of an empty profile): a hot
    /// lead cools (score 0), then the erased record; what is left is a tombstone.
    fn erase(
        &mut self,
        rules: &Rules,
        t: i64,
        fit: Fit,
        trigger: usize,
        out: &mut Vec<RawCrossing>,
    ) {
        self.sums.clear();
        self.fit = fit;
        self.clock_ms = t;
        if self.hot {
            self.cross(rules, false, t, 0.0, Some(trigger), out);
        }
        out.push(RawCrossing {
            became_hot: false,
            at_ms: t,
            score: 0.0,
            sequence: self.crossings,
            trigger: Some(trigger),
            reasons: Vec::new(),
            fit,
            erased: true,
        });
        self.crossings += 1;
        self.events_applied = 0;
    }

    /// Step 1 alone: the cooling decay caused by `until_ms`, if any. The clock stays.
    pub fn cool_by_decay(&mut self, rules: &Rules, until_ms: i64, out: &mut Vec<RawCrossing>) {
        if !self.hot || until_ms <= self.clock_ms {
            return;
        }
        let lower = lower_bound_from_sums(
            &self.sums,
            &rules.params,
            self.landmark_ms,
            self.clock_ms + 1,
            until_ms,
        );
        if lower >= rules.cool {
            return; // the bound first_below would test first: no crossing possible
        }
        let curve = self.curve(rules);
        if let Some(at) = curve.first_below(rules.cool, self.clock_ms + 1, until_ms) {
            let score = curve.score(at);
            self.cross(rules, false, at, score, None, out);
        }
    }

    /// Apply one (non-duplicate) event: steps 1-3. `fit` is the lead's fit after this
    /// event when the event changed the profile (or erased it); `points` replaces the
    /// matched rules' points (a `score_adjusted`); a reset or an erasure zeroes the
    /// behaviour score first (after step 1) and raises the floor to the event's time.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        rules: &Rules,
        occurred_ms: i64,
        matched: &[u32],
        points: Option<f64>,
        kind: Kind,
        fit: Option<Fit>,
        trigger: usize,
        out: &mut Vec<RawCrossing>,
    ) {
        let t = self.clock_ms.max(occurred_ms);
        // 1. Did decay take a hot lead below `cool` since its last event?
        self.cool_by_decay(rules, t, out);
        if matches!(kind, Kind::Reset | Kind::Erase) {
            self.sums.clear();
            // An erasure forgets every event id, so it must also refuse every event it
            // wiped: those dated up to the lead's clock, not only up to its own time.
            let floor = if kind == Kind::Erase { t } else { occurred_ms };
            self.floor_ms = self.floor_ms.max(floor);
        }
        if kind == Kind::Erase {
            self.erase(rules, t, fit.unwrap_or(rules.empty_fit), trigger, out);
            return;
        }
        // 2. The event's rules, with its own timestamp (late events weigh less).
        if (t - self.landmark_ms) as f64 > REBASE_AFTER_HALF_LIVES * rules.min_half_life_ms as f64 {
            rebase(&mut self.sums, &rules.params, self.landmark_ms, t);
            self.landmark_ms = t;
        }
        for &rule in matched {
            let i = rule as usize;
            let weight =
                pow2((occurred_ms - self.landmark_ms) as f64 / rules.params[i].half_life_ms as f64);
            let add = points.unwrap_or(rules.points[i]) * weight;
            match self.sums.iter_mut().find(|e| e.0 == rule) {
                Some(entry) => entry.1 += add,
                None => self.sums.push((rule, 0.0 + add)),
            }
        }
        if let Some(fit) = fit {
            self.fit = fit;
        }
        self.clock_ms = t;
        self.events_applied += 1;
        // 3. Hot / cool at the event.
        let score = score_from_sums(&self.sums, &rules.params, self.landmark_ms, t);
        if !self.hot && score >= rules.hot {
            if self.fit.allows_hot {
                self.cross(rules, true, t, score, Some(trigger), out);
            }
        } else if self.hot && (score < rules.cool || !self.fit.allows_hot) {
            // A negative event took it below `cool`, or its fit grade fell below min_grade.
            self.cross(rules, false, t, score, Some(trigger), out);
        }
    }
}

// ------------------------------------------------------------------- one event, per lead

/// The 64-bit hash a lead remembers an applied event id by (XXH3, stable across
/// versions and machines: it is stored in Redis).
pub fn id_hash(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

/// Bytes per remembered event id in a stored dedupe window: the id's hash (u64) and its
/// event's `occurred_at` (i64), little-endian.
pub const SEEN_ENTRY_BYTES: usize = 16;

/// Event ids applied to a lead, by [`id_hash`], with the `occurred_at` of their event.
pub type SeenIds = AHashMap<u64, i64>;

/// A stored dedupe window ([`SEEN_ENTRY_BYTES`] per entry) as a map.
pub fn seen_from_bytes(raw: &[u8]) -> PyResult<SeenIds> {
    if raw.len() % SEEN_ENTRY_BYTES != 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "a dedupe window is a multiple of {SEEN_ENTRY_BYTES} bytes, not {}",
            raw.len()
        )));
    }
    let mut seen = SeenIds::with_capacity(raw.len() / SEEN_ENTRY_BYTES);
    for entry in raw.chunks_exact(SEEN_ENTRY_BYTES) {
        let hash = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let at = i64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
        seen.insert(hash, at);
    }
    Ok(seen)
}

/// The entries still inside the window of a lead whose clock is `clock_ms`, as stored
/// (sorted by time, then hash, so equal windows give equal bytes).
pub fn seen_to_bytes(seen: &SeenIds, clock_ms: i64, window_ms: i64) -> Vec<u8> {
    let not_before = clock_ms.saturating_sub(window_ms);
    let mut kept: Vec<(i64, u64)> = seen
        .iter()
        .filter(|(_, &at)| at >= not_before)
        .map(|(&h, &at)| (at, h))
        .collect();
    kept.sort_unstable();
    let mut out = Vec::with_capacity(kept.len() * SEEN_ENTRY_BYTES);
    for (at, h) in kept {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
    }
    out
}

/// Last applied offset per input stream (`Position.stream` in Python): a handful per lead.
pub type Positions = Vec<(String, i64)>;

/// One event of a lead, as the orchestration takes it.
pub struct Incoming<'a> {
    pub event_id: &'a str,
    pub occurred_ms: i64,
    pub matched: &'a [u32],
    /// Where it was read (stream, offset), if anywhere.
    pub position: Option<(&'a str, i64)>,
    /// Profile events ask `fit` below for the new fit; resets zero the score.
    pub kind: Kind,
    /// Points that replace the matched rules' own (a `score_adjusted`'s).
    pub points: Option<f64>,
}

/// THE per-event orchestration, shared by every path (Python's `apply_lead_events` through
/// [`Kernel::apply_lead`], and replay's [`crate::table::LeadTable`]): skip a duplicate (an
/// event id already applied, or with `positions`, an offset at or before the last one
/// applied from its stream), skip an event dated at or before the lead's latest reset
/// (counted with the duplicates), else record its id and position, ask `fit` for the lead's fit
/// after a profile change (only for applied profile events), create the lead at its first
/// applied event, and run the state machine ([`Lead::apply`]). Returns whether it applied.
/// With `dedupe` false nothing is skipped (positions are still recorded).
#[allow(clippy::too_many_arguments)]
pub fn accept(
    slot: &mut Option<Lead>,
    rules: &Rules,
    seen: &mut SeenIds,
    positions: Option<&mut Positions>,
    dedupe: bool,
    event: &Incoming<'_>,
    fit: impl FnOnce() -> PyResult<Fit>,
    trigger: usize,
    out: &mut Vec<RawCrossing>,
) -> PyResult<bool> {
    let id = id_hash(event.event_id);
    if dedupe {
        // The dedupe window: an id counts as applied while the lead's clock is at most
        // `dedupe_window_ms` past that event's time. Clocks only move forward, so an entry
        // that fails this once fails forever: stores may drop it (`seen_to_bytes`) and
        // every store answers alike.
        let not_before = slot.as_ref().map_or(i64::MIN, |l| {
            l.clock_ms.saturating_sub(rules.dedupe_window_ms)
        });
        if seen.get(&id).is_some_and(|&at| at >= not_before) {
            return Ok(false);
        }
    }
    if slot
        .as_ref()
        .is_some_and(|l| event.occurred_ms <= l.floor_ms)
    {
        return Ok(false); // dated at or before a reset: it never counts
    }
    if let (Some(positions), Some((stream, offset))) = (positions, event.position) {
        match positions.iter_mut().find(|p| p.0 == stream) {
            Some(last) if dedupe && offset <= last.1 => return Ok(false),
            Some(last) => last.1 = offset,
            None => positions.push((stream.to_string(), offset)),
        }
    }
    if event.kind == Kind::Erase {
        seen.clear(); // a tombstone remembers only the erasure's own id
    }
    seen.insert(id, event.occurred_ms);
    let fit = if matches!(event.kind, Kind::Profile | Kind::Erase) {
        Some(fit()?)
    } else {
        None
    };
    let lead = slot.get_or_insert_with(|| Lead::new(event.occurred_ms, rules.empty_fit));
    lead.apply(
        rules,
        event.occurred_ms,
        event.matched,
        event.points,
        event.kind,
        fit,
        trigger,
        out,
    );
    Ok(true)
}

/// An event as `Kernel.apply_lead` takes it: (event_id, occurred_ms, matched rule
/// indices, kind (0 behaviour, 1 profile, 2 reset, 3 erase: [`Kind`]), (stream, offset) or None,
/// points replacing the matched rules' or None).
pub type LeadEventRow = (
    String,
    i64,
    Vec<u32>,
    u8,
    Option<(String, i64)>,
    Option<f64>,
);

/// What `Kernel.apply_lead` returns: (new state or None, positions, indices of the applied
/// events, duplicates skipped, crossings (trigger = index into the events), the dedupe
/// window as stored).
pub type LeadApplied = (
    Option<LeadTuple>,
    Positions,
    Vec<usize>,
    usize,
    Vec<CrossingTuple>,
    Py<PyBytes>,
);

// ------------------------------------------------------------------------------ Python

/// Lead state as Python passes it: (clock_ms, landmark_ms, [(rule index, acc)], hot,
/// crossings, fit_score, allows_hot, events_applied, floor_ms or None).
pub type LeadTuple = (
    i64,
    i64,
    Vec<(u32, f64)>,
    bool,
    u64,
    f64,
    bool,
    u64,
    Option<i64>,
);
/// (became_hot, at_ms, score, sequence, trigger index or None, [(rule index, points)],
/// fit_score, allows_hot, erased).
pub type CrossingTuple = (
    bool,
    i64,
    f64,
    u64,
    Option<usize>,
    Vec<(u32, f64)>,
    f64,
    bool,
    bool,
);

pub fn lead_from_tuple(t: LeadTuple) -> Lead {
    Lead {
        clock_ms: t.0,
        landmark_ms: t.1,
        sums: t.2,
        hot: t.3,
        crossings: t.4,
        fit: Fit {
            score: t.5,
            allows_hot: t.6,
        },
        events_applied: t.7,
        floor_ms: t.8.unwrap_or(i64::MIN),
    }
}

pub fn lead_to_tuple(l: &Lead) -> LeadTuple {
    (
        l.clock_ms,
        l.landmark_ms,
        l.sums.clone(),
        l.hot,
        l.crossings,
        l.fit.score,
        l.fit.allows_hot,
        l.events_applied,
        (l.floor_ms != i64::MIN).then_some(l.floor_ms),
    )
}

pub fn crossing_to_tuple(c: RawCrossing) -> CrossingTuple {
    (
        c.became_hot,
        c.at_ms,
        c.score,
        c.sequence,
        c.trigger,
        c.reasons,
        c.fit.score,
        c.fit.allows_hot,
        c.erased,
    )
}

/// A rules file compiled for the state machine (`RuleSet.kernel` in Python).
#[pyclass(name = "Kernel", module = "leadscore_core", frozen)]
pub struct Kernel {
    pub rules: Rules,
}

#[pymethods]
impl Kernel {
    /// `rules`: (id, points, half_life_ms, cap) per behaviour rule, in file order.
    #[new]
    fn py_new(
        rules: Vec<(String, f64, i64, Option<f64>)>,
        hot: f64,
        cool: f64,
        empty_fit: (f64, bool),
        dedupe_window_ms: i64,
    ) -> PyResult<Kernel> {
        if rules.iter().any(|r| r.2 < 1) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "half-lives must be >= 1 ms",
            ));
        }
        if dedupe_window_ms < 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "the dedupe window must be >= 0 ms",
            ));
        }
        let min_half_life_ms = rules.iter().map(|r| r.2).min().unwrap_or(1);
        let max_half_life_ms = rules.iter().map(|r| r.2).max().unwrap_or(1);
        Ok(Kernel {
            rules: Rules {
                ids: rules.iter().map(|r| r.0.clone()).collect(),
                params: rules
                    .iter()
                    .map(|r| Param {
                        half_life_ms: r.2,
                        cap: r.3,
                    })
                    .collect(),
                points: rules.iter().map(|r| r.1).collect(),
                hot,
                cool,
                min_half_life_ms,
                max_half_life_ms,
                dedupe_window_ms,
                empty_fit: Fit {
                    score: empty_fit.0,
                    allows_hot: empty_fit.1,
                },
            },
        })
    }

    /// Apply one lead's events in order through [`accept`]: duplicates skipped (when
    /// `dedupe`: ids in the dedupe window `seen` (stored bytes, see [`seen_from_bytes`])
    /// or earlier in `events`, and offsets at or before `positions`), `on_profile(i)` called
    /// for each applied profile event `i` and returning the lead's (fit score, allows hot)
    /// after it.
    #[pyo3(signature = (lead, positions, seen, events, on_profile, dedupe = true))]
    #[allow(clippy::too_many_arguments)]
    fn apply_lead(
        &self,
        py: Python<'_>,
        lead: Option<LeadTuple>,
        positions: Positions,
        seen: &[u8],
        events: Vec<LeadEventRow>,
        on_profile: Bound<'_, PyAny>,
        dedupe: bool,
    ) -> PyResult<LeadApplied> {
        let rules = &self.rules;
        let mut state = lead.map(lead_from_tuple);
        let mut positions = positions;
        let mut seen = seen_from_bytes(seen)?;
        let mut out = Vec::new();
        let mut applied = Vec::with_capacity(events.len());
        for (i, (event_id, occurred_ms, matched, kind, position, points)) in
            events.iter().enumerate()
        {
            let incoming = Incoming {
                event_id,
                occurred_ms: *occurred_ms,
                matched,
                position: position.as_ref().map(|(s, o)| (s.as_str(), *o)),
                kind: Kind::from_code(*kind)?,
                points: *points,
            };
            let fit = || -> PyResult<Fit> {
                let (score, allows_hot): (f64, bool) = on_profile.call1((i,))?.extract()?;
                Ok(Fit { score, allows_hot })
            };
            let done = accept(
                &mut state,
                rules,
                &mut seen,
                Some(&mut positions),
                dedupe,
                &incoming,
                fit,
                i,
                &mut out,
            )?;
            if done {
                applied.push(i);
            }
        }
        let duplicates = events.len() - applied.len();
        let window = match &state {
            Some(l) => seen_to_bytes(&seen, l.clock_ms, rules.dedupe_window_ms),
            None => Vec::new(),
        };
        Ok((
            state.as_ref().map(lead_to_tuple),
            positions,
            applied,
            duplicates,
            out.into_iter().map(crossing_to_tuple).collect(),
            PyBytes::new(py, &window).unbind(),
        ))
    }

    /// The cooling decay caused by `to_ms`, if any (the sweep, the end of a replay).
    fn advance(&self, lead: LeadTuple, to_ms: i64) -> (LeadTuple, Vec<CrossingTuple>) {
        let mut state = lead_from_tuple(lead);
        let mut out = Vec::new();
        state.cool_by_decay(&self.rules, to_ms, &mut out);
        (
            lead_to_tuple(&state),
            out.into_iter().map(crossing_to_tuple).collect(),
        )
    }

    fn score_at(&self, lead: LeadTuple, at_ms: i64) -> f64 {
        lead_from_tuple(lead).score_at(&self.rules, at_ms)
    }

    fn explain(&self, lead: LeadTuple, at_ms: i64) -> Vec<(u32, f64)> {
        lead_from_tuple(lead).explain(&self.rules, at_ms)
    }

    fn cool_due_ms(&self, lead: LeadTuple) -> Option<i64> {
        lead_from_tuple(lead).cool_due_ms(&self.rules)
    }

    /// The lead's rank bound against `landmark_ms`: its positive, uncapped points at its
    /// clock `c`, `P(c)`, times `2^((c - landmark) / h_max)` (`h_max`: the longest
    /// half-life). Read back at `t`, `bound * 2^((landmark - t) / h_max)` is at least the
    /// lead's score at any `t` (each part decays at least as fast as `h_max`), and equals
    /// `P(c)` at `t = c`: one rank index serves every half-life (`top`'s threshold
    /// algorithm).
    fn rank_bound(&self, lead: LeadTuple, landmark_ms: i64) -> f64 {
        let (clock, lead_landmark) = (lead.0, lead.1);
        let h_max = self.rules.max_half_life_ms;
        let mut positive = 0.0;
        for &(rule, acc) in &lead.2 {
            if acc > 0.0 {
                let h = self.rules.params[rule as usize].half_life_ms;
                positive += decay_to(acc, lead_landmark, clock, h);
            }
        }
        decay_to(positive, clock, landmark_ms, h_max)
    }
}

/// [`id_hash`] for Python (building a dedupe window from ids kept elsewhere).
#[pyfunction(name = "id_hash")]
fn py_id_hash(event_id: &str) -> u64 {
    id_hash(event_id)
}

/// Bytes per entry of a packed dedupe window (after its first 8 bytes, the newest entry's
/// `occurred_at`): the id's hash (u64) and how long before the newest its event occurred
/// (u32 milliseconds), little-endian.
pub const PACKED_SEEN_ENTRY_BYTES: usize = 12;

/// A dedupe window ([`SEEN_ENTRY_BYTES`] per entry) packed for storage: 8 bytes, then
/// [`PACKED_SEEN_ENTRY_BYTES`] per entry, in the same order; `None` when an entry lies more
/// than `u32::MAX` ms (49.7 days) before the newest (a window that long is kept unpacked).
#[pyfunction]
fn pack_dedupe_window<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let seen = raw.len() / SEEN_ENTRY_BYTES;
    if raw.len() % SEEN_ENTRY_BYTES != 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "a dedupe window is a multiple of {SEEN_ENTRY_BYTES} bytes, not {}",
            raw.len()
        )));
    }
    if seen == 0 {
        return Ok(Some(PyBytes::new(py, b"")));
    }
    let at_of = |entry: &[u8]| i64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
    let newest = raw
        .chunks_exact(SEEN_ENTRY_BYTES)
        .map(at_of)
        .max()
        .expect("not empty");
    let mut out = Vec::with_capacity(8 + seen * PACKED_SEEN_ENTRY_BYTES);
    out.extend_from_slice(&newest.to_le_bytes());
    for entry in raw.chunks_exact(SEEN_ENTRY_BYTES) {
        let before = newest.checked_sub(at_of(entry)).map(u32::try_from);
        let Some(Ok(before)) = before else {
            return Ok(None);
        };
        out.extend_from_slice(&entry[..8]);
        out.extend_from_slice(&before.to_le_bytes());
    }
    Ok(Some(PyBytes::new(py, &out)))
}

/// Inverse of [`pack_dedupe_window`]: the window as the core keeps it.
#[pyfunction]
fn unpack_dedupe_window<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if raw.is_empty() {
        return Ok(PyBytes::new(py, b""));
    }
    if raw.len() < 8 || (raw.len() - 8) % PACKED_SEEN_ENTRY_BYTES != 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "a packed dedupe window is 8 + {PACKED_SEEN_ENTRY_BYTES} bytes per entry, not {}",
            raw.len()
        )));
    }
    let newest = i64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let entries = (raw.len() - 8) / PACKED_SEEN_ENTRY_BYTES;
    let mut out = Vec::with_capacity(entries * SEEN_ENTRY_BYTES);
    for entry in raw[8..].chunks_exact(PACKED_SEEN_ENTRY_BYTES) {
        let before = u32::from_le_bytes(entry[8..].try_into().expect("4 bytes"));
        out.extend_from_slice(&entry[..8]);
        let at = newest.checked_sub(i64::from(before)).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err("a packed dedupe window out of range")
        })?;
        out.extend_from_slice(&at.to_le_bytes());
    }
    Ok(PyBytes::new(py, &out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Kernel>()?;
    m.add_function(wrap_pyfunction!(py_id_hash, m)?)?;
    m.add_function(wrap_pyfunction!(pack_dedupe_window, m)?)?;
    m.add_function(wrap_pyfunction!(unpack_dedupe_window, m)?)?;
    m.add("TOP_REASONS", TOP_REASONS)?;
    Ok(())
}
