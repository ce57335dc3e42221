//! The JSONL/Kafka fast path: accept the common, clearly valid events without pydantic.
//!
//! [`parse_fast`] reads one message value and returns a [`FastEvent`] only when it is
//! *certain* that `schemas.validation.parse_event` would accept the same bytes and produce
//! exactly the same values (same Python types too: `int` vs `float` vs `bool` vs `str`).
//! For everything else it returns `None`, meaning "not sure": the caller then runs the
//! Python validation, which decides and writes the error text. Declining a valid event only
//! costs speed; accepting an event Python rejects, or reading a value differently, is a bug.
//!
//! Accepted (checked against pydantic 2 / Python 3.11, see `tests/unit/test_native_parse.py`):
//!
//! * a JSON object (RFC 8259, parsed by `serde_json`; surrounding JSON whitespace is fine),
//!   with no duplicate keys at the top level or inside `properties`, and only the keys the
//!   event type's model has (`extra="forbid"`);
//! * `event_id` (1..=128 characters), `lead_id` (1..=256), `type` (one of [`EVENT_TYPES`]),
//!   type-specific fields as JSON strings (or `null` where the model allows `None`) within
//!   their length limits (`ShortText` <= 2048, `Url` 1..=4096 characters, counted in code
//!   points like pydantic), `Webinar.status` `"registered"`/`"attended"`;
//! * `occurred_at` as `YYYY-MM-DD`, then `T`, `t` or a space, `HH:MM`, optionally `:SS` and
//!   a fraction of 1..=9 digits (Python keeps 6 and truncates the rest), then `Z` or an
//!   offset `+HH:MM` / `+HHMM` (hours 00..=23, minutes 00..=59), with a real calendar date,
//!   hours <= 23, minutes and seconds <= 59, within [2000-01-01, 2100-01-01) UTC;
//! * `properties`: an object whose values are `null`, booleans, strings, integers that fit
//!   an `i64`, finite floats, or lists of those.
//!
//! Declined (`None`), although Python accepts some of them:
//!
//! * `occurred_at` with a lowercase `z` (valid RFC 3339, which `schemas.events` accepts),
//!   offset minutes of 60 or more (rejected), a fraction longer than 9 digits, or any other
//!   form;
//! * integers outside `i64`; floats of magnitude 2^63 or more (`serde_json` reports integer
//!   literals beyond 64 bits as rounded floats, where Python keeps an exact `int`); negative
//!   zero (`-0` is the int `0` in Python but `-0.0` in `serde_json`, so `-0`, `-0.0` and
//!   `-1e-400` are all declined);
//! * duplicate keys, unknown keys, nested lists or objects in `properties`, lone surrogates,
//!   invalid escapes, invalid UTF-8, empty or oversized messages, a missing or mismatching
//!   key when one is required;
//! * `lead_profile` events whose email domain (the text after the last `@`) is not ASCII
//!   (Python's Unicode `strip`/`lower` are not reproduced here).
//!
//! Floats: `serde_json` must be built with the `float_roundtrip` feature, so that decimal
//! text is rounded correctly (like Python and pydantic's parser); without it some long
//! literals come out one ulp off.

use std::borrow::Cow;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::IntoPyObjectExt;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The event types this fast path accepts ([`FastEvent::type_index`] indexes it); the reader
/// maps them to the caller's types by name. Mirrors `schemas.events` on purpose
/// (`tests/unit/test_native_parse.py` holds the two equal).
pub const EVENT_TYPES: [&str; 8] = [
    "page_view",
    "email_open",
    "email_click",
    "download",
    "form_submit",
    "webinar",
    "unsubscribe",
    "lead_profile",
];

/// A property value (or a field's text), as pydantic gives it to Python.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// `None`.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int` (the fast path only accepts integers that fit an `i64`).
    Int(i64),
    /// `float` (always finite).
    Float(f64),
    /// `str`.
    Str(String),
}

/// What [`FastEvent::get`] returns: a scalar, or a list of scalars (a list property).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A single value.
    Scalar(Scalar),
    /// A list property (`properties.tags = ["a", 1]`).
    List(Vec<Scalar>),
}

impl Value {
    fn str(text: &str) -> Self {
        Value::Scalar(Scalar::Str(text.to_owned()))
    }
}

// --- the models ----------------------------------------------------------------------------

/// The type-specific fields of all event models (all of them `str` or `str | None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Url,
    Title,
    Referrer,
    SessionId,
    CampaignId,
    EmailId,
    AssetId,
    AssetType,
    FormId,
    WebinarId,
    Status,
    ListId,
    Reason,
    Email,
    Company,
    CompanySize,
    Industry,
    Country,
    JobTitle,
    Seniority,
}

impl Field {
    /// The field called `name` in some event model, if any.
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "url" => Field::Url,
            "title" => Field::Title,
            "referrer" => Field::Referrer,
            "session_id" => Field::SessionId,
            "campaign_id" => Field::CampaignId,
            "email_id" => Field::EmailId,
            "asset_id" => Field::AssetId,
            "asset_type" => Field::AssetType,
            "form_id" => Field::FormId,
            "webinar_id" => Field::WebinarId,
            "status" => Field::Status,
            "list_id" => Field::ListId,
            "reason" => Field::Reason,
            "email" => Field::Email,
            "company" => Field::Company,
            "company_size" => Field::CompanySize,
            "industry" => Field::Industry,
            "country" => Field::Country,
            "job_title" => Field::JobTitle,
            "seniority" => Field::Seniority,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Url => "url",
            Field::Title => "title",
            Field::Referrer => "referrer",
            Field::SessionId => "session_id",
            Field::CampaignId => "campaign_id",
            Field::EmailId => "email_id",
            Field::AssetId => "asset_id",
            Field::AssetType => "asset_type",
            Field::FormId => "form_id",
            Field::WebinarId => "webinar_id",
            Field::Status => "status",
            Field::ListId => "list_id",
            Field::Reason => "reason",
            Field::Email => "email",
            Field::Company => "company",
            Field::CompanySize => "company_size",
            Field::Industry => "industry",
            Field::Country => "country",
            Field::JobTitle => "job_title",
            Field::Seniority => "seniority",
        }
    }

    /// This field's bit in [`Partial::seen`] (bits 0..20; the envelope uses 20..25).
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// How a field's text is checked: the field's annotated type in `schemas.events`.
#[derive(Clone, Copy, Debug)]
enum Text {
    /// `ShortText`: at most 2048 characters (may be empty).
    Short,
    /// `Url`: 1..=4096 characters.
    Url,
    /// `Literal["registered", "attended"]`.
    WebinarStatus,
}

/// One type-specific field of a model.
#[derive(Clone, Copy, Debug)]
struct FieldRule {
    field: Field,
    text: Text,
    /// Required (no default); otherwise `X | None = None`.
    required: bool,
}

const fn req(field: Field, text: Text) -> FieldRule {
    FieldRule {
        field,
        text,
        required: true,
    }
}

const fn opt(field: Field, text: Text) -> FieldRule {
    FieldRule {
        field,
        text,
        required: false,
    }
}

/// The type-specific fields of each model, indexed like [`EVENT_TYPES`].
static MODEL_FIELDS: [&[FieldRule]; 8] = [
    // PageView
    &[
        req(Field::Url, Text::Url),
        opt(Field::Title, Text::Short),
        opt(Field::Referrer, Text::Url),
        opt(Field::SessionId, Text::Short),
    ],
    // EmailOpen
    &[
        opt(Field::CampaignId, Text::Short),
        opt(Field::EmailId, Text::Short),
    ],
    // EmailClick
    &[
        req(Field::Url, Text::Url),
        req(Field::CampaignId, Text::Short),
        opt(Field::EmailId, Text::Short),
    ],
    // Download
    &[
        req(Field::AssetId, Text::Short),
        opt(Field::AssetType, Text::Short),
        opt(Field::Url, Text::Url),
    ],
    // FormSubmit
    &[req(Field::FormId, Text::Short), opt(Field::Url, Text::Url)],
    // Webinar
    &[
        req(Field::WebinarId, Text::Short),
        req(Field::Status, Text::WebinarStatus),
    ],
    // Unsubscribe
    &[
        opt(Field::ListId, Text::Short),
        opt(Field::Reason, Text::Short),
    ],
    // LeadProfile
    &[
        opt(Field::Email, Text::Short),
        opt(Field::Company, Text::Short),
        opt(Field::CompanySize, Text::Short),
        opt(Field::Industry, Text::Short),
        opt(Field::Country, Text::Short),
        opt(Field::JobTitle, Text::Short),
        opt(Field::Seniority, Text::Short),
    ],
];

/// Index of `lead_profile` in [`EVENT_TYPES`].
const LEAD_PROFILE: u8 = 7;

const EVENT_ID_MAX: usize = 128;
const LEAD_ID_MAX: usize = 256;
const SHORT_TEXT_MAX: usize = 2048;
const URL_MAX: usize = 4096;

/// `text` has at most `max` characters (Unicode code points, as Python's `len`).
fn chars_at_most(text: &str, max: usize) -> bool {
    // A character is 1..=4 bytes, so the byte length bounds the count from above.
    text.len() <= max || text.chars().count() <= max
}

impl Text {
    fn accepts(self, text: &str) -> bool {
        match self {
            Text::Short => chars_at_most(text, SHORT_TEXT_MAX),
            Text::Url => !text.is_empty() && chars_at_most(text, URL_MAX),
            Text::WebinarStatus => matches!(text, "registered" | "attended"),
        }
    }
}

// --- the event -----------------------------------------------------------------------------

/// A valid event read by [`parse_fast`], with exactly the values pydantic would give.
#[derive(Clone, Debug, PartialEq)]
pub struct FastEvent {
    /// `event.event_id`.
    pub event_id: String,
    /// `event.lead_id`.
    pub lead_id: String,
    /// Index of `event.type` in [`EVENT_TYPES`].
    pub type_index: u8,
    /// `event.occurred_at_ms`: milliseconds since the Unix epoch, sub-ms digits truncated.
    pub occurred_ms: i64,
    /// Type-specific fields that are present and not null (always `Scalar::Str`).
    fields: Vec<(Field, Value)>,
    /// `event.properties`, in input order (names are unique).
    properties: Vec<(String, Value)>,
    /// `LeadProfile.email_domain` (always `None` for other types).
    email_domain: Option<Value>,
}

impl FastEvent {
    /// `event.type`.
    pub fn type_name(&self) -> &'static str {
        EVENT_TYPES[usize::from(self.type_index)]
    }

    /// What `event.field_value(name)` gives in Python, for the names a rule can test:
    ///
    /// * `properties.NAME`: the property (`None` if missing or null);
    /// * a type-specific field of this event's model (`url`, `campaign_id`, `status`...):
    ///   its text, `None` if null or absent; a field of another model is `None` too;
    /// * `event_id`, `lead_id`, `type`, `occurred_at_ms` (an `Int`);
    /// * `email_domain` (derived like `LeadProfile.email_domain`; `None` for other types).
    ///
    /// Any other name gives `None`, including `occurred_at` and `properties` (a datetime
    /// and a dict in Python, which rules never test: see `schemas.events.event_fields`).
    ///
    /// Returns a copy; [`FastEvent::get_cow`] borrows where it can.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.get_cow(name).map(Cow::into_owned)
    }

    /// [`FastEvent::get`] without copying stored values (only `event_id`, `lead_id`, `type`
    /// and `occurred_at_ms` are built on demand).
    pub fn get_cow(&self, name: &str) -> Option<Cow<'_, Value>> {
        if let Some(property) = name.strip_prefix("properties.") {
            return self
                .property(property)
                .filter(|value| !matches!(value, Value::Scalar(Scalar::Null)))
                .map(Cow::Borrowed);
        }
        match name {
            "event_id" => Some(Cow::Owned(Value::str(&self.event_id))),
            "lead_id" => Some(Cow::Owned(Value::str(&self.lead_id))),
            "type" => Some(Cow::Owned(Value::str(self.type_name()))),
            "occurred_at_ms" => Some(Cow::Owned(Value::Scalar(Scalar::Int(self.occurred_ms)))),
            "email_domain" => self.email_domain.as_ref().map(Cow::Borrowed),
            _ => {
                let field = Field::from_name(name)?;
                self.fields
                    .iter()
                    .find(|(f, _)| *f == field)
                    .map(|(_, value)| Cow::Borrowed(value))
            }
        }
    }

    /// `event.properties.get(name)` (a null property is `Some(Scalar::Null)` here).
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// `event.properties` as (name, value) pairs, in input order.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.properties
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// Names a rule may test for this event's type, as `schemas.events.event_fields` minus
    /// `occurred_at`: `event_id`, `lead_id`, the model's own fields and, for
    /// `lead_profile`, `email_domain`.
    pub fn field_names(&self) -> impl Iterator<Item = &'static str> {
        let own = MODEL_FIELDS[usize::from(self.type_index)]
            .iter()
            .map(|r| r.field.name());
        let derived = (self.type_index == LEAD_PROFILE).then_some("email_domain");
        ["event_id", "lead_id"]
            .into_iter()
            .chain(own)
            .chain(derived)
    }
}

// --- parsing -------------------------------------------------------------------------------

/// Some(event) only when `schemas.validation.parse_event(data, key, require_key=require_key,
/// max_bytes=max_bytes)` would return a valid event with exactly these values; `None` means
/// "not sure: ask Python" (see the module documentation for what is declined).
pub fn parse_fast(
    data: &[u8],
    key: Option<&[u8]>,
    require_key: bool,
    max_bytes: usize,
) -> Option<FastEvent> {
    if data.is_empty() || data.len() > max_bytes {
        return None;
    }
    // `from_slice` checks that every string is UTF-8 (any other non-ASCII byte is a JSON
    // syntax error) and rejects lone surrogates in `\u` escapes when reading into `str`.
    let mut json = serde_json::Deserializer::from_slice(data);
    let partial = serde::Deserializer::deserialize_map(&mut json, EventVisitor).ok()?;
    json.end().ok()?; // only JSON whitespace may follow
    let event = partial.finish()?;
    if require_key && key.is_none_or(|k| k.is_empty() || k != event.lead_id.as_bytes()) {
        return None;
    }
    Some(event)
}

/// `occurred_at` text -> milliseconds since the epoch, for the forms that the project's
/// RFC 3339 regex, Python 3.11's `datetime.fromisoformat`, `AwareDatetime` and the range
/// check all accept with a result we reproduce exactly; `None` for everything else.
fn parse_occurred_at(text: &str) -> Option<i64> {
    /// 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z in microseconds since the epoch.
    const EARLIEST_US: i64 = 946_684_800 * 1_000_000;
    const LATEST_US: i64 = 4_102_444_800 * 1_000_000;

    let b = text.as_bytes();
    // YYYY-MM-DD?HH:MM is fixed; then [:SS[.fraction]] and the offset.
    if b.len() < 17 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = number(&b[0..4])?;
    let month = number(&b[5..7])?;
    let day = number(&b[8..10])?;
    let hour = number(&b[11..13])?;
    let minute = number(&b[14..16])?;
    let mut i = 16;
    let (mut second, mut micros) = (0, 0);
    if b[i] == b':' {
        second = number(b.get(i + 1..i + 3)?)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let digits = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            // Python keeps the first six digits (microseconds) and drops the rest.
            for position in 0..6 {
                let digit = if position < digits {
                    i64::from(b[start + position] - b'0')
                } else {
                    0
                };
                micros = micros * 10 + digit;
            }
            i = start + digits;
        }
    }
    let offset_s = match *b.get(i)? {
        b'Z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let hours = number(b.get(i + 1..i + 3)?)?;
            i += 3;
            if b.get(i) == Some(&b':') {
                i += 1;
            }
            let minutes = number(b.get(i..i + 2)?)?;
            i += 2;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = (hours * 60 + minutes) * 60;
            if sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None, // including a lowercase `z`: left to Python
    };
    if i != b.len() {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    let utc_us = seconds * 1_000_000 + micros;
    if !(EARLIEST_US..LATEST_US).contains(&utc_us) {
        return None;
    }
    Some(utc_us.div_euclid(1_000))
}

/// The value of a run of ASCII digits (`None` if any byte is not one).
fn number(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `LeadProfile.email_domain`: the text after the last `@`, stripped and lower-cased, or
/// `None`. `Err(())` when that cannot be reproduced exactly (a non-ASCII domain: Python's
/// `str.strip` and `str.lower` follow Unicode rules).
fn email_domain(email: &str) -> Result<Option<String>, ()> {
    let Some(at) = email.rfind('@') else {
        return Ok(None);
    };
    let domain = &email[at + 1..];
    if !domain.is_ascii() {
        return Err(());
    }
    // Python's `str.isspace` on ASCII: \t \n \x0b \x0c \r, the separators \x1c..\x1f, space.
    let trimmed = domain.trim_matches(|c: char| matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' '));
    Ok((!trimmed.is_empty()).then(|| trimmed.to_ascii_lowercase()))
}

/// Top-level keys read so far, one bit each ([`Field::bit`] and these).
const EVENT_ID_BIT: u32 = 1 << 20;
const LEAD_ID_BIT: u32 = 1 << 21;
const OCCURRED_AT_BIT: u32 = 1 << 22;
const TYPE_BIT: u32 = 1 << 23;
const PROPERTIES_BIT: u32 = 1 << 24;
const FIELD_BITS: u32 = (1 << 20) - 1;

/// What one pass over the top-level object collected, not yet checked against the model.
#[derive(Default)]
struct Partial {
    seen: u32,
    event_id: Option<String>,
    lead_id: Option<String>,
    occurred_ms: Option<i64>,
    type_index: Option<u8>,
    /// Type-specific fields with a non-null value, in input order.
    fields: Vec<(Field, String)>,
    properties: Vec<(String, Value)>,
}

impl Partial {
    /// The checks that need the whole object: the model of `type`, required fields, limits.
    fn finish(self) -> Option<FastEvent> {
        let type_index = self.type_index?;
        let model = MODEL_FIELDS[usize::from(type_index)];
        let allowed = model.iter().fold(0, |bits, rule| bits | rule.field.bit());
        if self.seen & FIELD_BITS & !allowed != 0 {
            return None; // a field of another model (even null): extra="forbid"
        }
        let event_id = self
            .event_id
            .filter(|t| !t.is_empty() && chars_at_most(t, EVENT_ID_MAX))?;
        let lead_id = self
            .lead_id
            .filter(|t| !t.is_empty() && chars_at_most(t, LEAD_ID_MAX))?;
        let occurred_ms = self.occurred_ms?;
        for rule in model {
            match self.fields.iter().find(|(f, _)| *f == rule.field) {
                Some((_, text)) if !rule.text.accepts(text) => return None,
                None if rule.required => return None, // missing or null
                _ => {}
            }
        }
        let email_domain = match self.fields.iter().find(|(f, _)| *f == Field::Email) {
            Some((_, email)) => email_domain(email)
                .ok()?
                .map(|d| Value::Scalar(Scalar::Str(d))),
            None => None,
        };
        Some(FastEvent {
            event_id,
            lead_id,
            type_index,
            occurred_ms,
            fields: self
                .fields
                .into_iter()
                .map(|(field, text)| (field, Value::Scalar(Scalar::Str(text))))
                .collect(),
            properties: self.properties,
            email_domain,
        })
    }
}

/// The error that stops parsing as soon as the fast path declines (its text is never shown).
fn decline<E: de::Error>() -> E {
    E::custom("declined by the fast path")
}

/// A top-level key.
#[derive(Clone, Copy)]
enum Key {
    EventId,
    LeadId,
    OccurredAt,
    Type,
    Properties,
    Field(Field),
}

impl Key {
    fn bit(self) -> u32 {
        match self {
            Key::EventId => EVENT_ID_BIT,
            Key::LeadId => LEAD_ID_BIT,
            Key::OccurredAt => OCCURRED_AT_BIT,
            Key::Type => TYPE_BIT,
            Key::Properties => PROPERTIES_BIT,
            Key::Field(field) => field.bit(),
        }
    }
}

/// Reads a top-level key without allocating; an unknown key declines (extra="forbid").
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(match name {
            "event_id" => Key::EventId,
            "lead_id" => Key::LeadId,
            "occurred_at" => Key::OccurredAt,
            "type" => Key::Type,
            "properties" => Key::Properties,
            _ => Key::Field(Field::from_name(name).ok_or_else(decline)?),
        })
    }
}

/// The top-level object, in one pass (no `serde_json::Value` tree).
struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Partial;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Partial, A::Error> {
        let mut partial = Partial::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if partial.seen & key.bit() != 0 {
                return Err(decline()); // a duplicate key (pydantic keeps the last one)
            }
            partial.seen |= key.bit();
            match key {
                Key::EventId => partial.event_id = Some(map.next_value()?),
                Key::LeadId => partial.lead_id = Some(map.next_value()?),
                Key::OccurredAt => partial.occurred_ms = Some(map.next_value_seed(TimeSeed)?),
                Key::Type => partial.type_index = Some(map.next_value_seed(TypeSeed)?),
                Key::Properties => partial.properties = map.next_value_seed(PropertiesSeed)?,
                Key::Field(field) => {
                    if let Some(text) = map.next_value::<Option<String>>()? {
                        partial.fields.push((field, text));
                    }
                }
            }
        }
        Ok(partial)
    }
}

/// `occurred_at`: a string in one of the forms of [`parse_occurred_at`].
struct TimeSeed;

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = i64;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for TimeSeed {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<i64, E> {
        parse_occurred_at(text).ok_or_else(decline)
    }
}

/// `type`: one of [`EVENT_TYPES`], as its index.
struct TypeSeed;

impl<'de> DeserializeSeed<'de> for TypeSeed {
    type Value = u8;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<u8, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for TypeSeed {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event type")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<u8, E> {
        (0..)
            .zip(EVENT_TYPES)
            .find(|(_, t)| *t == name)
            .map(|(index, _)| index)
            .ok_or_else(decline)
    }
}

/// `properties`: an object of scalars and lists of scalars, without duplicate names.
struct PropertiesSeed;

impl<'de> DeserializeSeed<'de> for PropertiesSeed {
    type Value = Vec<(String, Value)>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PropertiesSeed {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a properties object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut properties: Vec<(String, Value)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(PropertyValueSeed)?;
            properties.push((name, value));
        }
        if has_duplicate_names(&properties) {
            return Err(decline());
        }
        Ok(properties)
    }
}

/// Whether two properties share a name (pydantic would keep the last one).
fn has_duplicate_names(properties: &[(String, Value)]) -> bool {
    if properties.len() <= 16 {
        return properties
            .iter()
            .enumerate()
            .any(|(i, (name, _))| properties[..i].iter().any(|(other, _)| other == name));
    }
    let mut names: Vec<&str> = properties.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).any(|pair| pair[0] == pair[1])
}

/// A property value: a scalar or a list of scalars.
struct PropertyValueSeed;

impl<'de> DeserializeSeed<'de> for PropertyValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Forwards the scalar visits of a `Visitor` whose `Value` is built from a [`Scalar`].
macro_rules! scalar_visits {
    ($wrap:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($wrap(Scalar::Null))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok($wrap(Scalar::Bool(v)))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($wrap(Scalar::Int(v)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            // Python keeps any integer; we only carry i64.
            Ok($wrap(Scalar::Int(
                i64::try_from(v).map_err(|_| decline::<E>())?,
            )))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($wrap(float_scalar(v)?))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($wrap(Scalar::Str(v.to_owned())))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok($wrap(Scalar::Str(v)))
        }
    };
}

/// A float from `serde_json`, unless it may stand for something else in Python.
///
/// `serde_json` visits `-0` (the int `0` in Python) as `-0.0`, and integer literals beyond
/// 64 bits as (rounded) floats, where Python keeps exact `int`s. So a negative zero and
/// any float of magnitude >= 2^63 are declined (also when they were written as floats).
fn float_scalar<E: de::Error>(v: f64) -> Result<Scalar, E> {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) || v.abs() >= TWO_POW_63 {
        return Err(decline());
    }
    Ok(Scalar::Float(v))
}

impl<'de> Visitor<'de> for PropertyValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property value")
    }

    scalar_visits!(Value::Scalar);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ScalarSeed)? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
}

/// An item of a list property: a scalar (a nested list or object declines).
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for ScalarSeed {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }

    scalar_visits!(std::convert::identity);
}

// --- Python --------------------------------------------------------------------------------

fn scalar_to_py(py: Python<'_>, scalar: &Scalar) -> PyResult<Py<PyAny>> {
    match scalar {
        Scalar::Null => Ok(py.None()),
        Scalar::Bool(b) => b.into_py_any(py),
        Scalar::Int(i) => i.into_py_any(py),
        Scalar::Float(f) => f.into_py_any(py),
        Scalar::Str(s) => s.as_str().into_py_any(py),
    }
}

/// The Python object pydantic gives for a value (`str`, `int`, `float`, `bool`, `None`,
/// `list`).
pub fn value_to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    match value {
        Value::Scalar(scalar) => scalar_to_py(py, scalar),
        Value::List(items) => {
            let items = items
                .iter()
                .map(|item| scalar_to_py(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            items.into_py_any(py)
        }
    }
}

/// `parse_event_fast(data, key=None, require_key=False, max_bytes=65536) -> dict | None`
/// (the default limit is `schemas.validation.MAX_EVENT_BYTES`)
///
/// The fast path's verdict on one message value, for tests and measurements: `None` when
/// it declines (then `schemas.validation.parse_event` decides), otherwise
/// `{"event_id", "lead_id", "type", "occurred_at_ms", "fields"}` where `fields` maps each
/// name a rule can test (`event_id`, `lead_id`, the model's fields, `email_domain` for
/// `lead_profile`, `properties.NAME` for each property) to what `event.field_value(name)`
/// gives, leaving out the names whose value is `None`.
#[pyfunction]
#[pyo3(signature = (data, key=None, require_key=false, max_bytes=65_536))]
fn parse_event_fast<'py>(
    py: Python<'py>,
    data: &[u8],
    key: Option<&[u8]>,
    require_key: bool,
    max_bytes: i64,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    // A negative limit (Python allows one) makes every non-empty message oversized.
    let max_bytes = usize::try_from(max_bytes).unwrap_or(0);
    let Some(event) = parse_fast(data, key, require_key, max_bytes) else {
        return Ok(None);
    };
    let fields = PyDict::new(py);
    let add = |name: &str| -> PyResult<()> {
        if let Some(value) = event.get(name) {
            fields.set_item(name, value_to_py(py, &value)?)?;
        }
        Ok(())
    };
    for name in event.field_names() {
        add(name)?;
    }
    for (name, _) in event.properties() {
        add(&format!("properties.{name}"))?;
    }
    let out = PyDict::new(py);
    out.set_item("event_id", &event.event_id)?;
    out.set_item("lead_id", &event.lead_id)?;
    out.set_item("type", event.type_name())?;
    out.set_item("occurred_at_ms", event.occurred_ms)?;
    out.set_item("fields", fields)?;
    Ok(Some(out))
}

/// Adds `parse_event_fast` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_event_fast, m)?)?;
    Ok(())
}
