//! Turning what a person types (aliases, id prefixes, clocks, cuts, JSON) into core values,
//! with errors that say what was wrong: the CLI resolves what it is given against a local
//! store, a node what its API is given against its own.

use std::collections::BTreeMap;

use lcloud_core::{Cut, Id, NodeId, Path, Replica, Value, VectorClock};

/// What could not be resolved, and why, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unresolved(pub String);

/// A resolution, or why it failed.
pub type Result<T> = std::result::Result<T, Unresolved>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(Unresolved(format!($($t)*))) };
}

/// Names for nodes: local aliases plus every author and member the replica knows.
pub struct Names {
    /// This store's local names for nodes.
    pub aliases: BTreeMap<NodeId, String>,
    known: Vec<NodeId>,
}

impl Names {
    /// Names from aliases and everything `replica` knows.
    pub fn new(aliases: BTreeMap<NodeId, String>, replica: &Replica) -> Names {
        let mut known: Vec<NodeId> = replica.lattice().authors().to_vec();
        if let Some(m) = &replica.lattice().rules().members {
            known.extend(m.iter().copied());
        }
        known.extend(aliases.keys().copied());
        known.sort();
        known.dedup();
        Names { aliases, known }
    }

    /// Names from aliases and the store's list of authors (no replica loaded).
    pub fn from_store(aliases: BTreeMap<NodeId, String>, authors: Vec<NodeId>) -> Names {
        let mut known: Vec<NodeId> = aliases.keys().copied().chain(authors).collect();
        known.sort();
        known.dedup();
        Names { aliases, known }
    }

    /// An alias, or a hex prefix (at least 4 digits) of exactly one known node.
    pub fn node(&self, name: &str) -> Result<NodeId> {
        if let Some((id, _)) = self.aliases.iter().find(|(_, a)| a.as_str() == name) {
            return Ok(*id);
        }
        if let Some(id) = NodeId::from_hex(name) {
            return Ok(id);
        }
        let lower = name.to_ascii_lowercase();
        if lower.len() < 4 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "unknown node {name:?}: not an alias, and not a hex id prefix of 4 or more digits"
            );
        }
        let hits: Vec<&NodeId> = self
            .known
            .iter()
            .filter(|n| n.to_hex().starts_with(&lower))
            .collect();
        match hits.as_slice() {
            [one] => Ok(**one),
            [] => bail!("unknown node {name:?}: no known node id starts with it"),
            _ => bail!(
                "node prefix {name:?} is ambiguous: {} nodes match",
                hits.len()
            ),
        }
    }

    /// The alias of a node, or its short id.
    pub fn show(&self, node: &NodeId) -> String {
        self.aliases
            .get(node)
            .cloned()
            .unwrap_or_else(|| node.short())
    }

    /// A clock written with aliases where known.
    pub fn show_clock(&self, clock: &VectorClock) -> String {
        clock
            .0
            .iter()
            .map(|(n, s)| format!("{}:{s}", self.show(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A clock written `NODE:SEQ,…`, each node an alias or an id prefix.
    pub fn clock(&self, text: &str) -> Result<VectorClock> {
        let mut failure = None;
        let clock = VectorClock::parse(text, |name| match self.node(name) {
            Ok(n) => Some(n),
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        });
        match (clock, failure) {
            (Ok(c), _) => Ok(c),
            (Err(_), Some(e)) => bail!("bad clock {text:?}: {e}"),
            (Err(e), None) => bail!("bad clock {text:?}: {e}"),
        }
    }
}

/// An experience id from a hex prefix (at least 4 digits) of exactly one known experience.
pub fn experience(replica: &Replica, prefix: &str) -> Result<Id> {
    let lower = prefix.trim().to_ascii_lowercase();
    if lower.len() < 4 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("bad experience id {prefix:?}: give 4 or more hex digits");
    }
    let hits: Vec<Id> = replica
        .lattice()
        .iter()
        .map(|e| e.id())
        .filter(|id| id.to_hex().starts_with(&lower))
        .take(2)
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => bail!("unknown experience {prefix:?}"),
        _ => bail!("experience prefix {prefix:?} is ambiguous"),
    }
}

/// `now`, a clock, or `@ID,ID` heads.
pub fn cut(names: &Names, replica: &Replica, text: &str) -> Result<Option<Cut>> {
    let text = text.trim();
    if text == "now" {
        return Ok(None);
    }
    if let Some(ids) = text.strip_prefix('@') {
        return heads(replica, ids).map(Some);
    }
    Ok(Some(Cut::Clock(names.clock(text)?)))
}

/// `ID,ID,…` (id prefixes) as the cut those experiences head.
pub fn heads(replica: &Replica, ids: &str) -> Result<Cut> {
    let ids: Vec<Id> = ids
        .split(',')
        .map(|p| experience(replica, p))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("no heads given");
    }
    Ok(Cut::Heads(ids))
}

/// `NODE@SEQ`: the id of NODE's experience at SEQ.
pub fn seen_by(names: &Names, replica: &Replica, text: &str) -> Result<Id> {
    let (node, seq) = text
        .rsplit_once('@')
        .ok_or_else(|| Unresolved(format!("bad --seen-by {text:?}: expected NODE@SEQ")))?;
    let node = names.node(node)?;
    let seq: u64 = seq.parse().map_err(|_| {
        Unresolved(format!(
            "bad --seen-by {text:?}: SEQ must be a whole number"
        ))
    })?;
    let at: Vec<Id> = replica
        .lattice()
        .chain(&node)
        .into_iter()
        .filter(|e| e.seq() == seq)
        .map(|e| e.id())
        .collect();
    match at.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "{} has no experience with seq {seq} here",
            names.show(&node)
        ),
        _ => bail!(
            "{} forked at seq {seq}: name the experience with --heads instead",
            names.show(&node)
        ),
    }
}

/// A JSON Pointer as a document path.
pub fn path(pointer: &str) -> Result<Path> {
    Path::parse(pointer).map_err(|e| {
        Unresolved(format!(
            "bad path {pointer:?} (paths are JSON Pointers like /users/alice): {e}"
        ))
    })
}

/// JSON text as a document value.
pub fn json(text: &str) -> Result<Value> {
    let j: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Unresolved(format!(
            "malformed JSON {text:?} (strings need quotes: '\"text\"'): {e}"
        ))
    })?;
    Value::from_json(&j).map_err(|e| Unresolved(format!("unsupported JSON {text:?}: {e}")))
}
