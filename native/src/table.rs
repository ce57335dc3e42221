//! Replay's bulk path: records parsed by `event::parse_fast`, rule matches cached per
//! distinct "signature" (event type + the values of the fields rules look at), and lead
//! states kept here, in a hash map, between batches. Every event still goes through
//! `engine::Lead::apply`, the code the live worker runs.
//!
//! What stays in Python: the semantics of rule conditions (evaluated once per signature by
//! `scoring.rules`), validation of the records the fast path declines (pydantic decides and
//! words the rejection), and profiles and fit grades (a callback per profile event).

use ahash::AHashMap;
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::engine::{
    accept, crossing_to_tuple, CrossingTuple, Fit, Incoming, Kernel, Kind, Lead, RawCrossing,
    SeenIds,
};
use crate::event::{parse_fast, value_to_py, Scalar, Value, EVENT_TYPES};

/// One valid event of a batch.
struct Row {
    event_id: String,
    lead_id: String,
    occurred_ms: i64,
    /// For profile events: the values of the reader's `profile_fields` (Python objects).
    profile: Option<Py<PyTuple>>,
    matches: Matches,
    /// What it does besides matching rules (control events: only records Python validated).
    kind: Kind,
    /// A `score_adjusted`'s points, replacing the matched rule's.
    points: Option<f64>,
}

enum Matches {
    /// Look the matches up by signature in each table.
    Signature(u32),
    /// Matched rule indices per table, given by Python (records the fast path declined).
    Given(Vec<Vec<u32>>),
}

fn encode_scalar(out: &mut Vec<u8>, s: &Scalar) {
    match s {
        Scalar::Null => out.push(0),
        Scalar::Bool(b) => out.extend_from_slice(&[1, *b as u8]),
        Scalar::Int(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Scalar::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Scalar::Str(text) => {
            out.push(4);
            out.extend_from_slice(&(text.len() as u64).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// Canonical bytes of a field value, for the signature key (absent and null differ; that
/// only costs an extra cache entry).
fn encode_value(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        None => out.push(9),
        Some(Value::Scalar(s)) => encode_scalar(out, s),
        Some(Value::List(items)) => {
            out.push(5);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                encode_scalar(out, s);
            }
        }
    }
}

/// Parses records and assigns signatures. One per replay (shared by the compared rule
/// sets, so signature ids mean the same in every table).
#[pyclass(module = "leadscore_core")]
pub struct Reader {
    /// Per event type (indexed like the fast path's `EVENT_TYPES`): the fields any rule
    /// set's rules for that type look at.
    fields: Vec<Vec<String>>,
    /// The profile event type (its index), and the fields whose values a profile event
    /// hands to Python, in the caller's order (`schemas.events.PROFILE_FIELDS`).
    profile_type: Option<u8>,
    profile_fields: Vec<String>,
    signatures: AHashMap<Vec<u8>, u32>,
    max_bytes: usize,
}

/// A parsed chunk of records, in order. `slow` records are for Python to validate.
#[pyclass(module = "leadscore_core")]
pub struct Batch {
    rows: Vec<Option<Row>>,
    slow: Vec<usize>,
    /// (signature id, event type, values of that type's fields) first seen in this batch.
    new_signatures: Vec<(u32, u8, Vec<Option<Value>>)>,
}

#[pymethods]
impl Reader {
    /// `fields`: event type name -> the fields rules test (types the fast path does not
    /// know are never accepted by it, so their fields are not needed here);
    /// `profile_type` / `profile_fields`: the event type that carries profile attributes and
    /// the attributes to hand over, in order. Both come from `schemas.events`.
    #[new]
    #[pyo3(signature = (fields, profile_type, profile_fields, max_bytes = 65536))]
    fn py_new(
        fields: std::collections::HashMap<String, Vec<String>>,
        profile_type: &str,
        profile_fields: Vec<String>,
        max_bytes: usize,
    ) -> PyResult<Reader> {
        let mut by_index = vec![Vec::new(); EVENT_TYPES.len()];
        for (name, names) in fields {
            if let Some(i) = EVENT_TYPES.iter().position(|t| *t == name) {
                by_index[i] = names;
            }
        }
        let profile_type = EVENT_TYPES
            .iter()
            .position(|t| *t == profile_type)
            .map(|i| i as u8);
        Ok(Reader {
            fields: by_index,
            profile_type,
            profile_fields,
            signatures: AHashMap::new(),
            max_bytes,
        })
    }

    /// Parse records (`values`; with Kafka `keys`, each key must be the event's lead id,
    /// as in the worker). A record the fast path declines is listed in `Batch.slow()`;
    /// blank values too (Python counts them).
    #[pyo3(signature = (values, keys = None))]
    fn parse(
        &mut self,
        py: Python<'_>,
        values: &Bound<'_, PyList>,
        keys: Option<&Bound<'_, PyList>>,
    ) -> PyResult<Batch> {
        let n = values.len();
        let mut batch = Batch {
            rows: Vec::with_capacity(n),
            slow: Vec::new(),
            new_signatures: Vec::new(),
        };
        let mut key_buf: Vec<u8> = Vec::with_capacity(64);
        for i in 0..n {
            let item = values.get_item(i)?;
            let parsed = match item.cast::<PyBytes>() {
                Ok(bytes) => {
                    let key_item = match keys {
                        Some(k) => Some(k.get_item(i)?),
                        None => None,
                    };
                    let key_bytes = match &key_item {
                        Some(k) => k.cast::<PyBytes>().ok().map(|b| b.as_bytes()),
                        None => None,
                    };
                    parse_fast(bytes.as_bytes(), key_bytes, keys.is_some(), self.max_bytes)
                }
                Err(_) => None,
            };
            let Some(event) = parsed else {
                batch.rows.push(None);
                batch.slow.push(i);
                continue;
            };
            let type_index = event.type_index;
            key_buf.clear();
            key_buf.push(type_index);
            let fields = &self.fields[type_index as usize];
            for name in fields {
                encode_value(&mut key_buf, event.get(name).as_ref());
            }
            let next = self.signatures.len() as u32;
            let sig = match self.signatures.get(&key_buf) {
                Some(&s) => s,
                None => {
                    self.signatures.insert(key_buf.clone(), next);
                    let values = fields.iter().map(|f| event.get(f)).collect();
                    batch.new_signatures.push((next, type_index, values));
                    next
                }
            };
            let profile = if Some(type_index) == self.profile_type {
                let objects = self
                    .profile_fields
                    .iter()
                    .map(|f| match event.get(f) {
                        Some(v) => value_to_py(py, &v),
                        None => Ok(py.None()),
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                Some(PyTuple::new(py, objects)?.unbind())
            } else {
                None
            };
            batch.rows.push(Some(Row {
                kind: if profile.is_some() {
                    Kind::Profile
                } else {
                    Kind::Behaviour
                },
                profile,
                event_id: event.event_id,
                lead_id: event.lead_id,
                occurred_ms: event.occurred_ms,
                matches: Matches::Signature(sig),
                points: None,
            }));
        }
        Ok(batch)
    }

    /// How many distinct signatures so far.
    fn signature_count(&self) -> usize {
        self.signatures.len()
    }
}

#[pymethods]
impl Batch {
    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// Indices of the records Python must validate.
    fn slow(&self) -> Vec<usize> {
        self.slow.clone()
    }

    /// New signatures: (id, event type name, tuple of field values).
    fn new_signatures<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(u32, &'static str, Bound<'py, PyTuple>)>> {
        let mut out = Vec::with_capacity(self.new_signatures.len());
        for (sig, type_index, values) in &self.new_signatures {
            let objects = values
                .iter()
                .map(|v| match v {
                    Some(v) => value_to_py(py, v),
                    None => Ok(py.None()),
                })
                .collect::<PyResult<Vec<_>>>()?;
            out.push((
                *sig,
                EVENT_TYPES[*type_index as usize],
                PyTuple::new(py, objects)?,
            ));
        }
        Ok(out)
    }

    /// A slow record that Python accepted: its envelope, its profile values (profile
    /// events), the matched rules per table, and for control events their kind (2 reset,
    /// 3 erase: see `engine::Kind`) and the points they add.
    #[pyo3(signature = (index, event_id, lead_id, occurred_ms, profile, matched, kind = 0, points = None))]
    #[allow(clippy::too_many_arguments)]
    fn set_event(
        &mut self,
        index: usize,
        event_id: String,
        lead_id: String,
        occurred_ms: i64,
        profile: Option<Py<PyTuple>>,
        matched: Vec<Vec<u32>>,
        kind: u8,
        points: Option<f64>,
    ) -> PyResult<()> {
        let kind = if profile.is_some() {
            Kind::Profile
        } else {
            Kind::from_code(kind)?
        };
        let slot = self
            .rows
            .get_mut(index)
            .ok_or_else(|| PyIndexError::new_err(index))?;
        *slot = Some(Row {
            event_id,
            lead_id,
            occurred_ms,
            profile,
            matches: Matches::Given(matched),
            kind,
            points,
        });
        Ok(())
    }

    /// (min, max) `occurred_ms` of the valid events with `occurred_ms <= limit_ms`, and
    /// how many valid events lie after `limit_ms`.
    fn time_range(&self, limit_ms: i64) -> (Option<(i64, i64)>, usize) {
        let mut range: Option<(i64, i64)> = None;
        let mut after = 0;
        for row in self.rows.iter().flatten() {
            let t = row.occurred_ms;
            if t > limit_ms {
                after += 1;
                continue;
            }
            range = Some(match range {
                None => (t, t),
                Some((lo, hi)) => (lo.min(t), hi.max(t)),
            });
        }
        (range, after)
    }

    /// Index of the first valid event at or after `start` with
    /// `after_ms < occurred_ms <= limit_ms` (None: there is none).
    fn first_after(&self, start: usize, after_ms: i64, limit_ms: i64) -> Option<usize> {
        (start..self.rows.len()).find(|&i| {
            self.rows[i]
                .as_ref()
                .is_some_and(|r| r.occurred_ms > after_ms && r.occurred_ms <= limit_ms)
        })
    }

    /// Drop the valid events dated after their limit (`limits[i]`, None: no limit):
    /// the clock-skew policy of a replay from Kafka. Returns (index, occurred_ms) of each.
    fn reject_after(&mut self, limits: Vec<Option<i64>>) -> Vec<(usize, i64)> {
        let mut dropped = Vec::new();
        for (i, limit) in limits.into_iter().enumerate() {
            let Some(limit) = limit else { continue };
            let Some(row) = self.rows.get_mut(i) else {
                break;
            };
            if let Some(r) = row.as_ref() {
                if r.occurred_ms > limit {
                    dropped.push((i, r.occurred_ms));
                    *row = None;
                }
            }
        }
        dropped
    }

    /// The record's event id and lead id (for slow rows after `set_event` too).
    fn envelope(&self, index: usize) -> Option<(String, String)> {
        self.rows
            .get(index)?
            .as_ref()
            .map(|r| (r.event_id.clone(), r.lead_id.clone()))
    }
}

struct Entry {
    /// None until the lead's first event is applied.
    lead: Option<Lead>,
    /// Applied event ids (all of them: the window check in `accept` ignores old ones).
    seen: SeenIds,
}

/// Lead states of one rule set during a replay: the memory store's bulk form.
#[pyclass(module = "leadscore_core")]
pub struct LeadTable {
    kernel: Py<Kernel>,
    leads: AHashMap<String, Entry>,
    /// Signature id -> matched rule indices (None: not resolved yet).
    matches: Vec<Option<Vec<u32>>>,
    /// Called as `on_profile(lead_id, event_id, occurred_ms, values)` for each applied
    /// profile event (`values` in the reader's `profile_fields` order); returns the lead's (fit score,
    /// allows hot) after it.
    on_profile: Py<PyAny>,
    /// Which `Given` list is this table's.
    slot: usize,
}

/// (lead id, trigger event id or None, crossing).
type TableCrossing = (String, Option<String>, CrossingTuple);

fn dress(lead_id: &str, rows: &[Option<Row>], raw: Vec<RawCrossing>, out: &mut Vec<TableCrossing>) {
    for c in raw {
        let trigger = c.trigger.map(|i| {
            rows[i]
                .as_ref()
                .map(|r| r.event_id.clone())
                .unwrap_or_default()
        });
        out.push((lead_id.to_string(), trigger, crossing_to_tuple(c)));
    }
}

#[pymethods]
impl LeadTable {
    #[new]
    fn py_new(kernel: Py<Kernel>, on_profile: Py<PyAny>, slot: usize) -> LeadTable {
        LeadTable {
            kernel,
            leads: AHashMap::new(),
            matches: Vec::new(),
            on_profile,
            slot,
        }
    }

    /// The matched rule indices of a signature.
    fn resolve(&mut self, signature: usize, matched: Vec<u32>) {
        if self.matches.len() <= signature {
            self.matches.resize(signature + 1, None);
        }
        self.matches[signature] = Some(matched);
    }

    /// Apply `batch[start:stop]` in order, skipping events after `limit_ms` and duplicate
    /// event ids per lead. Returns (applied, duplicates, crossings in processing order).
    fn apply(
        &mut self,
        py: Python<'_>,
        batch: &Batch,
        start: usize,
        stop: usize,
        limit_ms: i64,
    ) -> PyResult<(usize, usize, Vec<TableCrossing>)> {
        let kernel = self.kernel.get();
        let rules = &kernel.rules;
        let stop = stop.min(batch.rows.len());
        let mut applied = 0;
        let mut duplicates = 0;
        let mut crossings: Vec<TableCrossing> = Vec::new();
        let mut raw: Vec<RawCrossing> = Vec::new();
        for i in start..stop {
            let Some(row) = &batch.rows[i] else { continue };
            if row.occurred_ms > limit_ms {
                continue;
            }
            let matched: &[u32] = match &row.matches {
                Matches::Signature(sig) => self
                    .matches
                    .get(*sig as usize)
                    .and_then(|m| m.as_deref())
                    .ok_or_else(|| {
                        PyValueError::new_err(format!("signature {sig} not resolved"))
                    })?,
                Matches::Given(per_table) => &per_table[self.slot],
            };
            let entry = match self.leads.get_mut(row.lead_id.as_str()) {
                Some(e) => e,
                None => self
                    .leads
                    .entry(row.lead_id.clone())
                    .or_insert_with(|| Entry {
                        lead: None,
                        seen: SeenIds::default(),
                    }),
            };
            let incoming = Incoming {
                event_id: &row.event_id,
                occurred_ms: row.occurred_ms,
                matched,
                position: None,
                kind: row.kind,
                points: row.points,
            };
            let on_profile = &self.on_profile;
            let fit = || -> PyResult<Fit> {
                // None: an erasure (the profile is forgotten)
                let values = row.profile.as_ref();
                let args = (
                    row.lead_id.as_str(),
                    row.event_id.as_str(),
                    row.occurred_ms,
                    values,
                );
                let (score, allows_hot): (f64, bool) = on_profile.call1(py, args)?.extract(py)?;
                Ok(Fit { score, allows_hot })
            };
            if accept(
                &mut entry.lead,
                rules,
                &mut entry.seen,
                None,
                true,
                &incoming,
                fit,
                i,
                &mut raw,
            )? {
                applied += 1;
            } else {
                duplicates += 1;
                continue;
            }
            if !raw.is_empty() {
                dress(
                    &row.lead_id,
                    &batch.rows,
                    std::mem::take(&mut raw),
                    &mut crossings,
                );
            }
        }
        Ok((applied, duplicates, crossings))
    }

    /// Cool every hot lead whose score decayed below `cool` by `until_ms` (leads in id
    /// order; the caller sorts the crossings by time).
    fn cool_due(&mut self, until_ms: i64) -> Vec<TableCrossing> {
        let kernel = self.kernel.get();
        let mut ids: Vec<&String> = self
            .leads
            .iter()
            .filter(|(_, e)| e.lead.as_ref().is_some_and(|l| l.hot))
            .map(|(k, _)| k)
            .collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        let mut out = Vec::new();
        let mut raw = Vec::new();
        for id in ids {
            let entry = self.leads.get_mut(&id).expect("listed above");
            let lead = entry.lead.as_mut().expect("hot, so applied");
            lead.cool_by_decay(&kernel.rules, until_ms, &mut raw);
            for c in raw.drain(..) {
                out.push((id.clone(), None, crossing_to_tuple(c)));
            }
        }
        out
    }

    fn __len__(&self) -> usize {
        self.leads.len()
    }

    /// A copy of the lead states (without their dedupe windows): the snapshot at a cut-off.
    fn snapshot(&self) -> LeadSnapshot {
        LeadSnapshot {
            kernel: Python::attach(|py| self.kernel.clone_ref(py)),
            leads: self
                .leads
                .iter()
                .filter_map(|(k, e)| e.lead.as_ref().map(|l| (k.clone(), l.clone())))
                .collect(),
        }
    }
}

/// Lead states frozen at a moment (a cut-off, or the end of a replay).
#[pyclass(module = "leadscore_core", frozen)]
pub struct LeadSnapshot {
    kernel: Py<Kernel>,
    leads: AHashMap<String, Lead>,
}

/// Per lead: (lead id, score = sum of the contributions largest first, the first `top`
/// contributions [(rule index, points)], fit score, hot, events applied, clock ms).
type LeadRow = (String, f64, Vec<(u32, f64)>, f64, bool, u64, i64);

fn rows_of<'a>(
    kernel: &Kernel,
    leads: impl Iterator<Item = (&'a String, &'a Lead)>,
    at_ms: i64,
    top: usize,
) -> Vec<LeadRow> {
    leads
        .map(|(id, l)| {
            let mut parts = l.explain(&kernel.rules, at_ms);
            // Summed in this order, like Python's sum() over the explanation.
            let score = parts.iter().fold(0.0, |total, p| total + p.1);
            parts.truncate(top);
            (
                id.clone(),
                score,
                parts,
                l.fit.score,
                l.hot,
                l.events_applied,
                l.clock_ms,
            )
        })
        .collect()
}

#[pymethods]
impl LeadSnapshot {
    fn __len__(&self) -> usize {
        self.leads.len()
    }

    fn scores(&self, at_ms: i64) -> Vec<(String, f64)> {
        let rules = &self.kernel.get().rules;
        self.leads
            .iter()
            .map(|(k, l)| (k.clone(), l.score_at(rules, at_ms)))
            .collect()
    }

    fn rows(&self, at_ms: i64, top: usize) -> Vec<LeadRow> {
        rows_of(self.kernel.get(), self.leads.iter(), at_ms, top)
    }

    fn hot(&self) -> Vec<(String, bool)> {
        self.leads.iter().map(|(k, l)| (k.clone(), l.hot)).collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Reader>()?;
    m.add_class::<Batch>()?;
    m.add_class::<LeadTable>()?;
    m.add_class::<LeadSnapshot>()?;
    Ok(())
}
