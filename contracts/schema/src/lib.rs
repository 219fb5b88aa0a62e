//! `schema`: guards a document path; every entry written under it keeps a rule set given at
//! deploy, decided in canonical order on every node.
//!
//! - deploy (`init`) with `{"path": "/people", "rules": RULES}`: guards `path`. The document
//!   under it is from then on exactly what this contract writes there; a direct `set` under it
//!   is refused by every honest node and masked by the fold.
//! - `put {"key": K, "value": V}`: writes V at `path/K` if V keeps the rules, else the call is
//!   rejected naming the first rule broken (`/age: 200 is more than the maximum 150`).
//! - `remove {"key": K}`: removes `path/K`.
//!
//! RULES is a subset of JSON Schema: `type` (`object`, `array`, `string`, `integer`, `number`,
//! `boolean`, `null`), `properties`, `required`, `additionalProperties` (`false` refuses other
//! keys), `items`, `minItems`, `maxItems`, `minLength`, `maxLength` (in characters),
//! `minimum`, `maximum` (integers, inclusive) and `enum`. An unknown keyword refuses the deploy.
//!
//! State: `path` and `rules` (the deploy's), and `key/K` for every entry written.

#![no_std]

use lc::{String, Vec, format};
use lcloud_guest as lc;
use lite_json::{JsonValue, NumberValue, Serialize};

/// The keywords of a rule.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "enum",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "integer", "number", "boolean", "null",
];

fn text(chars: &[char]) -> String {
    chars.iter().collect()
}

fn parse(json: &str, what: &str) -> JsonValue {
    lite_json::parse_json(json).unwrap_or_else(|_| lc::reject(&format!("{what} is not JSON")))
}

fn field<'a>(obj: &'a JsonValue, name: &str) -> Option<&'a JsonValue> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.iter().copied().eq(name.chars()))
        .map(|(_, v)| v)
}

fn str_field(obj: &JsonValue, name: &str) -> String {
    match field(obj, name).and_then(JsonValue::as_string) {
        Some(s) => text(s),
        None => lc::reject(&format!("the arguments need a string {name:?}")),
    }
}

/// A number's integer part, rounded down, and whether it has a fraction; `None` with an
/// exponent (bounds do not handle those).
fn floor(n: &NumberValue) -> Option<(i128, bool)> {
    if n.exponent != 0 {
        return None;
    }
    let int = i128::from(n.integer);
    let frac = n.fraction > 0;
    Some(match (n.negative, frac) {
        (false, _) => (int, frac),
        (true, false) => (-int, false),
        (true, true) => (-int - 1, true),
    })
}

fn bound(rule: &JsonValue, name: &str, at: &str) -> Option<i128> {
    let v = field(rule, name)?;
    match v.as_number().and_then(floor) {
        Some((n, false)) => Some(n),
        _ => lc::reject(&format!("rules at {at:?}: {name} must be an integer")),
    }
}

fn kind(v: &JsonValue) -> &'static str {
    match v {
        JsonValue::Object(_) => "object",
        JsonValue::Array(_) => "array",
        JsonValue::String(_) => "string",
        JsonValue::Number(n) if n.fraction == 0 && n.exponent == 0 => "integer",
        JsonValue::Number(_) => "number",
        JsonValue::Boolean(_) => "boolean",
        JsonValue::Null => "null",
    }
}

/// `an object`, `a string`.
fn article(kind: &str) -> String {
    match kind.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// Checks that `rule` (at `at` in the rule set) uses only known keywords, recursively.
fn check_rule(rule: &JsonValue, at: &str) {
    let Some(obj) = rule.as_object() else {
        lc::reject(&format!("rules at {at:?}: a rule is an object"));
    };
    for (k, v) in obj {
        let k = text(k);
        if !KEYWORDS.contains(&k.as_str()) {
            lc::reject(&format!("rules at {at:?}: unknown keyword {k:?}"));
        }
        match k.as_str() {
            "type" => {
                let t = v.as_string().map(text).unwrap_or_default();
                if !TYPES.contains(&t.as_str()) {
                    lc::reject(&format!("rules at {at:?}: unknown type {t:?}"));
                }
            }
            "properties" => match v.as_object() {
                Some(props) => {
                    for (name, r) in props {
                        check_rule(r, &format!("{at}/properties/{}", text(name)));
                    }
                }
                None => lc::reject(&format!("rules at {at:?}: properties is an object")),
            },
            "items" => check_rule(v, &format!("{at}/items")),
            "required" | "enum" if !v.is_array() => {
                lc::reject(&format!("rules at {at:?}: {k} is an array"))
            }
            "additionalProperties" if !v.is_bool() => {
                lc::reject(&format!("rules at {at:?}: additionalProperties is true or false"))
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minimum" | "maximum" => {
                bound(rule, &k, at);
            }
            _ => {}
        }
    }
}

/// The first rule `v` (at `at` in the entry) breaks, in words.
fn violation(v: &JsonValue, rule: &JsonValue, at: &str) -> Option<String> {
    let here = if at.is_empty() { "/" } else { at };
    if let Some(t) = field(rule, "type").and_then(JsonValue::as_string) {
        let want = text(t);
        let have = kind(v);
        let fits = want == have || (want == "number" && have == "integer");
        if !fits {
            return Some(format!("{here}: {}, not {}", article(have), article(&want)));
        }
    }
    if let Some(options) = field(rule, "enum").and_then(JsonValue::as_array) {
        let mine = v.serialize();
        if !options.iter().any(|o| o.serialize() == mine) {
            return Some(format!("{here}: not one of the values the rules allow"));
        }
    }
    match v {
        JsonValue::Object(entries) => {
            let props = field(rule, "properties").and_then(JsonValue::as_object);
            for name in field(rule, "required")
                .and_then(JsonValue::as_array)
                .unwrap_or(&[])
            {
                let name = name.as_string().map(text).unwrap_or_default();
                if field(v, &name).is_none() {
                    return Some(format!("{here}: {name:?} is required"));
                }
            }
            let closed = matches!(
                field(rule, "additionalProperties"),
                Some(JsonValue::Boolean(false))
            );
            for (k, child) in entries {
                let name = text(k);
                let sub = props.and_then(|p| {
                    p.iter()
                        .find(|(pk, _)| *pk == *k)
                        .map(|(_, r)| r)
                });
                match sub {
                    Some(r) => {
                        if let Some(bad) = violation(child, r, &format!("{at}/{name}")) {
                            return Some(bad);
                        }
                    }
                    None if closed => {
                        return Some(format!("{here}: {name:?} is not a property the rules allow"));
                    }
                    None => {}
                }
            }
        }
        JsonValue::Array(items) => {
            let n = items.len() as i128;
            if bound(rule, "minItems", at).is_some_and(|m| n < m) {
                return Some(format!("{here}: {n} items, fewer than the rules allow"));
            }
            if bound(rule, "maxItems", at).is_some_and(|m| n > m) {
                return Some(format!("{here}: {n} items, more than the rules allow"));
            }
            if let Some(r) = field(rule, "items") {
                for (i, item) in items.iter().enumerate() {
                    if let Some(bad) = violation(item, r, &format!("{at}/{i}")) {
                        return Some(bad);
                    }
                }
            }
        }
        JsonValue::String(s) => {
            let n = s.len() as i128;
            if bound(rule, "minLength", at).is_some_and(|m| n < m) {
                return Some(format!("{here}: {n} characters, fewer than the minimum length"));
            }
            if bound(rule, "maxLength", at).is_some_and(|m| n > m) {
                return Some(format!("{here}: {n} characters, more than the maximum length"));
            }
        }
        JsonValue::Number(num) => {
            let (min, max) = (bound(rule, "minimum", at), bound(rule, "maximum", at));
            if min.is_some() || max.is_some() {
                let shown = String::from_utf8(num.serialize()).unwrap_or_default();
                let Some((floor, frac)) = floor(num) else {
                    return Some(format!("{here}: {shown} has an exponent; the bounds need plain digits"));
                };
                if let Some(m) = min.filter(|m| floor < *m) {
                    return Some(format!("{here}: {shown} is less than the minimum {m}"));
                }
                let ceil = floor + i128::from(frac);
                if let Some(m) = max.filter(|m| ceil > *m) {
                    return Some(format!("{here}: {shown} is more than the maximum {m}"));
                }
            }
        }
        JsonValue::Boolean(_) | JsonValue::Null => {}
    }
    None
}

/// An entry's key: one path segment, not escaped.
fn entry_key(args: &JsonValue) -> String {
    let key = str_field(args, "key");
    if key.is_empty() || key.len() > 128 || key.contains(['/', '~']) {
        lc::reject("a key is 1 to 128 bytes, without '/' or '~'");
    }
    key
}

fn args() -> JsonValue {
    let json = lc::args_json();
    parse(core::str::from_utf8(&json).unwrap_or(""), "the arguments")
}

#[unsafe(no_mangle)]
pub extern "C" fn init() {
    let a = args();
    let path = str_field(&a, "path");
    let Some(rules) = field(&a, "rules") else {
        lc::reject("the deploy's arguments need \"rules\"");
    };
    check_rule(rules, "");
    lc::guard(&path);
    lc::set("path", &path);
    lc::set(
        "rules",
        core::str::from_utf8(&rules.serialize()).unwrap_or("{}"),
    );
}

#[unsafe(no_mangle)]
pub extern "C" fn put() {
    let a = args();
    let key = entry_key(&a);
    let Some(value) = field(&a, "value") else {
        lc::reject("put needs a \"value\"");
    };
    let rules = parse(&lc::get("rules").unwrap_or_default(), "the stored rules");
    if let Some(bad) = violation(value, &rules, "") {
        lc::reject(&format!("{key} breaks the rules: {bad}"));
    }
    let path = lc::get("path").unwrap_or_default();
    let json: Vec<u8> = value.serialize();
    lc::doc_set(
        &lc::key(&lc::key(&path, "/"), &key),
        core::str::from_utf8(&json).unwrap_or("null"),
    );
    lc::set(&lc::key("key/", &key), "1");
}

#[unsafe(no_mangle)]
pub extern "C" fn remove() {
    let a = args();
    let key = entry_key(&a);
    let stored = lc::key("key/", &key);
    if lc::get(&stored).is_none() {
        lc::reject(&format!("no entry {key}"));
    }
    let path = lc::get("path").unwrap_or_default();
    lc::doc_del(&lc::key(&lc::key(&path, "/"), &key));
    lc::del(&stored);
}
