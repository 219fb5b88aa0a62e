//! What `lcloud state`, `root`, `diff`, `log` and `conflicts` answer, as JSON. The CLI computes
//! it on a local store, a node for its API (`/api/state`, `/api/root`, `/api/diff`,
//! `/api/log`, `/api/conflicts`), so a command prints the same either way, and a client of a
//! node no longer downloads the history to ask it.

use lcloud_core::{Cut, Id, NodeId, Path, Replica, State, Value, VectorClock, View, ViewError};
use serde_json::{Value as J, json};

use crate::resolve::{self, Names, Unresolved};

/// Why a question about the history has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// What was asked does not parse or names nothing known (HTTP 400).
    #[error("{0}")]
    Bad(String),
    /// The cut asks for experiences this replica does not hold, or the path holds nothing
    /// (HTTP 404).
    #[error("{0}")]
    NotHeld(String),
    /// The cut lies below what a compacted replica keeps (HTTP 410).
    #[error("{0}")]
    Compacted(String),
    /// The store failed (HTTP 500).
    #[error("{0}")]
    Failed(String),
}

impl From<Unresolved> for Refused {
    fn from(e: Unresolved) -> Refused {
        Refused::Bad(e.0)
    }
}

impl From<ViewError> for Refused {
    fn from(e: ViewError) -> Refused {
        match e {
            ViewError::Compacted { .. } => Refused::Compacted(e.to_string()),
            _ => Refused::NotHeld(e.to_string()),
        }
    }
}

/// A cut as a person types it: `--at CLOCK`, `--heads IDS`, `--without NODE`,
/// `--seen-by NODE@SEQ` (nodes by alias or id prefix, experiences by id prefix). None of them
/// is the state now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutText {
    /// A vector clock.
    pub at: Option<String>,
    /// Comma-separated experience id prefixes.
    pub heads: Option<String>,
    /// A node whose ops are left out.
    pub without: Option<String>,
    /// What NODE had seen when it wrote its experience SEQ.
    pub seen_by: Option<String>,
}

impl CutText {
    /// Whether it names the state now.
    pub fn is_now(&self) -> bool {
        self.at.is_none()
            && self.heads.is_none()
            && self.without.is_none()
            && self.seen_by.is_none()
    }

    /// The clock of a cut given by `--at` alone: what a store's time-travel index answers
    /// without the history. `None` for any other cut.
    pub fn clock_only(&self, names: &Names) -> Result<Option<VectorClock>, Refused> {
        match self {
            CutText {
                at: Some(at),
                heads: None,
                without: None,
                seen_by: None,
            } => Ok(Some(names.clock(at)?)),
            _ => Ok(None),
        }
    }

    /// The view it names in `replica`.
    pub fn view(&self, names: &Names, replica: &Replica) -> Result<View, Refused> {
        let given = [&self.at, &self.heads, &self.seen_by]
            .iter()
            .filter(|c| c.is_some())
            .count();
        if given > 1 {
            return Err(Refused::Bad(
                "give at most one of at, heads and seen_by".into(),
            ));
        }
        let without = self.without.as_deref().map(|n| names.node(n)).transpose()?;
        let cut = if let Some(at) = &self.at {
            Some(Cut::Clock(names.clock(at)?))
        } else if let Some(h) = &self.heads {
            Some(resolve::heads(replica, h)?)
        } else if let Some(s) = &self.seen_by {
            let id = resolve::seen_by(names, replica, s)?;
            let exp = replica.lattice().experience(&id).expect("resolved above");
            Some(Cut::Heads(exp.parents().copied().collect()))
        } else {
            None
        };
        Ok(View { cut, without })
    }
}

/// The value at `path` of `state` (the whole document without one), as JSON; refused when the
/// path holds nothing.
pub fn value(state: &State, path: Option<&Path>) -> Result<J, Refused> {
    match path {
        None => Ok(state.document().to_json()),
        Some(p) => state
            .get(p)
            .map(|v| v.to_json())
            .ok_or_else(|| Refused::NotHeld(format!("nothing at {p}"))),
    }
}

/// `{"changes": [{"path", "before", "after"}…]}`: what changed from cut `from` to cut `to`
/// (`now`, a clock, or `@ID,ID…`), path by path.
pub fn diff(names: &Names, replica: &Replica, from: &str, to: &str) -> Result<J, Refused> {
    let a = View {
        cut: resolve::cut(names, replica, from)?,
        without: None,
    };
    let b = View {
        cut: resolve::cut(names, replica, to)?,
        without: None,
    };
    let changes = replica.diff(&a, &b)?;
    let show = |v: &Option<Value>| v.as_ref().map_or(J::Null, Value::to_json);
    let rows: Vec<J> = changes
        .iter()
        .map(|c| {
            let mut row = json!({"path": c.path.to_string(), "before": show(&c.before), "after": show(&c.after)});
            if let Some(splices) = &c.splices {
                row["splices"] = splices
                    .iter()
                    .map(|s| json!({"index": s.index, "delete": s.delete, "insert": s.insert.to_json()}))
                    .collect();
            }
            row
        })
        .collect();
    Ok(json!({"changes": rows}))
}

/// `{"path", "values": [{"experience", "author", "value"}…]}`: the concurrent values of the
/// register at `path`, the one shown last.
pub fn conflicts(replica: &Replica, path: &Path, view: &View) -> Result<J, Refused> {
    let values = if view.cut.is_none() && view.without.is_none() {
        replica.state().doc.conflicts(path)
    } else {
        replica.view(view)?.doc.conflicts(path)
    };
    if values.is_empty() {
        return Err(Refused::NotHeld(format!("no register value at {path}")));
    }
    let rows: Vec<J> = values
        .iter()
        .map(|(dot, v)| {
            let author = replica.lattice().experience(&dot.exp).map(|e| e.author());
            json!({
                "experience": dot.exp.to_hex(),
                "author": author.map(|a| a.to_hex()),
                "value": v.to_json(),
            })
        })
        .collect();
    Ok(json!({"path": path.to_string(), "values": rows}))
}

/// The most rows of one page of the log.
pub const LOG_PAGE_MAX: usize = 10_000;

/// A position in the canonical order, as `DEPTH.IDHEX`: where a page of the log ends, and the
/// next begins. It stays valid as experiences arrive (it names a key, not a row number).
pub fn cursor(depth: u64, id: &Id) -> String {
    format!("{depth}.{}", id.to_hex())
}

fn parse_cursor(text: &str) -> Result<(u64, Id), Refused> {
    let bad = || {
        Refused::Bad(format!(
            "bad cursor {text:?}: expected DEPTH.ID (64 hex digits), as a page's next"
        ))
    };
    let (depth, id) = text.split_once('.').ok_or_else(bad)?;
    let depth = depth.parse().map_err(|_| bad())?;
    let id = Id::from_hex(id).ok_or_else(bad)?;
    Ok((depth, id))
}

/// One page of the log, newest first (canonical order reversed): `{"log": [row…], "next":
/// cursor or null}`, rows before `before` (a cursor from an earlier page), at most `limit`
/// (all when `None`), only `only`'s chain when given. Each row: `id`, `author`, `seq`,
/// `depth`, `deps`, `ops` (names), `fork` (its author forked at or below its seq),
/// `rejected` (`[{"op", "reason", "text"}]`: calls and deploys the fold refused).
pub fn log(
    replica: &Replica,
    only: Option<NodeId>,
    before: Option<&str>,
    limit: Option<usize>,
) -> Result<J, Refused> {
    let before = before.map(parse_cursor).transpose()?;
    if limit == Some(0) || limit.is_some_and(|l| l > LOG_PAGE_MAX) {
        return Err(Refused::Bad(format!("limit must be 1 to {LOG_PAGE_MAX}")));
    }
    let lattice = replica.lattice();
    let mut keys: Vec<(u64, Id, u32)> = (0..lattice.len() as u32)
        .filter(|i| only.is_none_or(|n| lattice.get(*i).author() == n))
        .map(|i| {
            let (depth, id) = lattice.order_key(i);
            (depth, id, i)
        })
        .filter(|(d, id, _)| before.is_none_or(|b| (*d, *id) < b))
        .collect();
    let total = keys.len();
    let take = limit.unwrap_or(total).min(total);
    // Only the newest `take` need sorting.
    if take < keys.len() {
        let cut = keys.len() - take;
        keys.select_nth_unstable(cut);
        keys.drain(..cut);
    }
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let forked = lattice.forked_authors();
    let rows: Vec<J> = keys
        .iter()
        .map(|(depth, _, i)| {
            let e = lattice.get(*i);
            let rejected: Vec<J> = (0..e.ops().len() as u32)
                .filter(|o| e.ops()[*o as usize].is_ordered())
                .filter_map(|o| replica.rejection(&e.id(), o).map(|r| (o, r.reason)))
                .map(|(op, reason)| {
                    json!({"op": op, "text": crate::contracts::rejection_text(&reason), "reason": reason})
                })
                .collect();
            json!({
                "id": e.id().to_hex(),
                "author": e.author().to_hex(),
                "seq": e.seq(),
                "depth": depth,
                "deps": e.header().deps.iter().map(Id::to_hex).collect::<Vec<_>>(),
                "ops": e.ops().iter().map(|o| o.name()).collect::<Vec<_>>(),
                "fork": forked.get(&e.author()).is_some_and(|s| e.seq() >= *s),
                "rejected": rejected,
            })
        })
        .collect();
    // Rows are left when this page stops short of them: the next page starts after its last.
    let next = match keys.last() {
        Some((d, id, _)) if take < total => J::String(cursor(*d, id)),
        _ => J::Null,
    };
    Ok(json!({"log": rows, "next": next}))
}
