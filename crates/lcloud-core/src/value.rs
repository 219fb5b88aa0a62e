//! The document value model: JSON's data model with integers kept exact and map keys sorted,
//! encoded canonically as DAG-CBOR.
//!
//! The core does not hash or fold `serde_json::Value` directly: its map type changes with a
//! cargo feature (`preserve_order`) that any crate in a build can switch on, and a change of
//! iteration order would change state roots. `Value` always keeps maps in a `BTreeMap`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON-like value. Integers are exact 64-bit; floats must be finite.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// `null`
    #[default]
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer in the `i64` range.
    Int(i64),
    /// A finite floating-point number.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// An ordered list.
    List(Vec<Value>),
    /// A map with string keys, kept sorted.
    Map(BTreeMap<String, Value>),
}

/// Why a JSON value cannot become a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A number outside `i64` that is not a finite float either.
    #[error("number {0} is outside the 64-bit integer range and not a finite float")]
    NumberOutOfRange(String),
}

impl Value {
    /// An empty map.
    pub fn map() -> Value {
        Value::Map(BTreeMap::new())
    }

    /// Converts from `serde_json`, keeping integers exact.
    pub fn from_json(v: &serde_json::Value) -> Result<Value, ValueError> {
        Ok(match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if n.is_u64() {
                    return Err(ValueError::NumberOutOfRange(n.to_string()));
                } else {
                    match n.as_f64() {
                        Some(f) if f.is_finite() => Value::Float(f),
                        _ => return Err(ValueError::NumberOutOfRange(n.to_string())),
                    }
                }
            }
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => {
                Value::List(a.iter().map(Value::from_json).collect::<Result<_, _>>()?)
            }
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), Value::from_json(v)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
        })
    }

    /// Converts to `serde_json` for display and APIs.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The canonical DAG-CBOR bytes of this value.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical DAG-CBOR of this value to `out`: exactly what serde's encoder
    /// gives (`codec::to_canonical`, tested against it), written directly. Experiences are
    /// encoded for every hash, signature, message and record, and serde's generic encoder
    /// cost a sender half its CPU in a sync.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use crate::codec::{write_head, write_text};
        match self {
            Value::Null => out.push(0xf6),
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Int(i) if *i >= 0 => write_head(out, 0, *i as u64),
            // CBOR's negative integers carry -1 - i, which is !i in two's complement.
            Value::Int(i) => write_head(out, 1, !*i as u64),
            // DAG-CBOR floats are always 64-bit (and finite: refused at entry), and -0.0 is
            // written as 0.0 (serde_ipld_dagcbor's rule: the two are equal).
            Value::Float(f) => {
                let f = if *f == 0.0 { 0.0f64 } else { *f };
                out.push(0xfb);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Value::Str(t) => write_text(out, t),
            Value::List(l) => {
                write_head(out, 4, l.len() as u64);
                for v in l {
                    v.encode_into(out);
                }
            }
            Value::Map(m) => {
                write_head(out, 5, m.len() as u64);
                // DAG-CBOR orders keys by length, then bytes; the map holds them by bytes.
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
                for (k, v) in entries {
                    write_text(out, k);
                    v.encode_into(out);
                }
            }
        }
    }

    /// A short type name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(t) => s.serialize_str(t),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-model value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {u} is outside the i64 range")))
    }
    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Value, E> {
        i64::try_from(i)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {i} is outside the i64 range")))
    }
    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {u} is outside the i64 range")))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(E::custom("floats must be finite"))
        }
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("byte strings are not document values"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            if out.insert(k, v).is_some() {
                return Err(de::Error::custom("duplicate map key"));
            }
        }
        Ok(Value::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_integers_exact() {
        let j: serde_json::Value =
            serde_json::from_str(r#"{"b":[1,2.5,"x",null,true],"a":9007199254740993}"#).unwrap();
        let v = Value::from_json(&j).unwrap();
        assert_eq!(v.to_json(), j);
        let back: Value = crate::codec::from_canonical(&v.to_cbor()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn huge_integers_are_refused() {
        let j: serde_json::Value = serde_json::from_str("18446744073709551615").unwrap();
        assert!(matches!(
            Value::from_json(&j),
            Err(ValueError::NumberOutOfRange(_))
        ));
    }
}
