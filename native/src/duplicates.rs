//! Duplicate keys in a JSON object. JSON parsers (pydantic's included) silently keep the
//! last value of a repeated key, so `{"type": "email_open", ..., "type": "page_view"}`
//! would validate as a page view. `schemas.validation.parse_event` rejects such messages,
//! naming the key, with this check. It runs on every valid message, so the happy path
//! allocates nothing but the short list of an object's keys.

use std::borrow::Cow;
use std::fmt;

use pyo3::prelude::*;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Walks any JSON value; yields the path (relative to it) of the first repeated key.
struct Seed;

/// An object key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

fn join(key: &str, inner: String) -> String {
    if inner.starts_with('[') {
        format!("{key}{inner}")
    } else {
        format!("{key}.{inner}")
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut index = 0;
        while let Some(inner) = seq.next_element_seed(Seed)? {
            if let Some(inner) = inner {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Some(join(&format!("[{index}]"), inner)));
            }
            index += 1;
        }
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut found = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if found.is_some() {
                map.next_value::<IgnoredAny>()?;
            } else if keys.contains(&key) {
                map.next_value::<IgnoredAny>()?;
                found = Some(key.into_owned());
            } else {
                if let Some(inner) = map.next_value_seed(Seed)? {
                    found = Some(join(&key, inner));
                }
                keys.push(key);
            }
        }
        Ok(found)
    }
}

/// The dotted path (`type`, `properties.plan`) of the first key repeated within one JSON
/// object of `data`; None when there is none, or when `data` is not JSON that serde_json
/// reads (the caller's parser reports that).
pub fn first_duplicate_key(data: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    Seed.deserialize(&mut deserializer).ok().flatten()
}

#[pyfunction]
#[pyo3(name = "duplicate_key")]
fn py_duplicate_key(data: &[u8]) -> Option<String> {
    first_duplicate_key(data)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_duplicate_key, m)?)?;
    Ok(())
}
