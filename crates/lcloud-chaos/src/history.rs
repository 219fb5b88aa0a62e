//! Client histories, recorded as Jepsen does: every operation is an `invoke`, then an `ok`
//! (acknowledged: durable on the node asked), a `fail` (definitely not applied) or an `info`
//! (indeterminate: a timeout or a dropped connection; never counted as acknowledged). One JSON
//! object per line, so a history can be fed to Jepsen's own tools elsewhere.

use serde_json::{Value as J, json};

/// The outcome kinds of Jepsen's histories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The client asked.
    Invoke,
    /// Acknowledged.
    Ok,
    /// Definitely not applied.
    Fail,
    /// Unknown.
    Info,
}

/// What the client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F {
    /// Add an element to the set `/s`.
    Add,
    /// Add 1 to the counter `/c`.
    Incr,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Invoke, ok, fail or info.
    pub kind: Kind,
    /// The client (one per node here).
    pub process: u32,
    /// The operation.
    pub f: F,
    /// The element added, or the amount incremented.
    pub value: i64,
    /// Simulated (or real) time in nanoseconds since the start.
    pub time: u64,
}

impl Event {
    /// The Jepsen JSON form.
    pub fn to_json(&self) -> J {
        json!({
            "type": match self.kind {
                Kind::Invoke => "invoke",
                Kind::Ok => "ok",
                Kind::Fail => "fail",
                Kind::Info => "info",
            },
            "process": self.process,
            "f": match self.f { F::Add => "add", F::Incr => "incr" },
            "value": self.value,
            "time": self.time,
        })
    }
}

/// A whole history as JSON lines.
pub fn to_json_lines(history: &[Event]) -> String {
    let mut out = String::new();
    for e in history {
        out.push_str(&e.to_json().to_string());
        out.push('\n');
    }
    out
}
