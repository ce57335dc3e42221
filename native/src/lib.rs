//! Native core of leadscore, imported from Python as `leadscore_core`.
//!
//! * `decay`: forward-decay sums, scores and the exact first-crossing search;
//! * `engine`: the one per-event orchestration (`accept`) and the hot/cool state machine
//!   (the live worker reaches it through `scoring.state_machine`, replay through `table`);
//! * `event`: the JSONL/Kafka fast path that accepts the common, clearly valid events
//!   without building pydantic models (anything else is left to `schemas.validation`);
//! * `duplicates`: finds keys repeated within a JSON object (`parse_event` rejects them);
//! * `table`: replay's bulk path: lead states in a hash map, rule matches cached per
//!   distinct combination of the fields rules test.
//!
//! Nothing here reads a clock or does I/O.

use pyo3::prelude::*;

mod decay;
mod duplicates;
mod engine;
mod event;
mod table;

#[pymodule]
fn leadscore_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    decay::register(m)?;
    duplicates::register(m)?;
    engine::register(m)?;
    event::register(m)?;
    table::register(m)?;
    Ok(())
}
