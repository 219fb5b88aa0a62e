//! Host ABI 1: what a contract may ask of its node, all of it deterministic: its arguments,
//! its own key-value state, its caller, and the document as its caller saw it. docs/contracts.md
//! writes it down byte by byte; this file is the implementation.
//!
//! Every function is imported from the module `"lcloud"`. Pointers and lengths are `i32`
//! offsets into the contract's exported `"memory"`. Keys and values are UTF-8 text. Each host
//! call costs [`HOST_CALL_COST`] fuel plus 1 per 8 bytes it moves, charged before it acts.

use wasmi::{Caller, Extern, Linker, Val};

use lcloud_core::Kv;

use crate::meter::FUEL_GLOBAL;

/// The module name contracts import from.
pub const MODULE: &str = "lcloud";
/// Fuel for any host call, before the bytes it moves.
pub const HOST_CALL_COST: i64 = 50;
/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 256;
/// Longest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;
/// Longest rejection reason kept, in bytes (longer ones are cut at a character boundary).
pub const REASON_BYTES_MAX: usize = 512;

/// A WebAssembly value type of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `i32`
    I32,
    /// `i64`
    I64,
}

/// The ABI's functions: name, parameters, results.
const FUNCTIONS: &[(&str, &[Ty], &[Ty])] = &[
    ("args_len", &[], &[Ty::I32]),
    ("args_read", &[Ty::I32], &[]),
    ("arg", &[Ty::I32, Ty::I32, Ty::I32, Ty::I32], &[Ty::I32]),
    (
        "state_get",
        &[Ty::I32, Ty::I32, Ty::I32, Ty::I32],
        &[Ty::I32],
    ),
    ("state_set", &[Ty::I32, Ty::I32, Ty::I32, Ty::I32], &[]),
    ("state_del", &[Ty::I32, Ty::I32], &[]),
    ("author", &[Ty::I32], &[]),
    ("seq", &[], &[Ty::I64]),
    ("clock_len", &[], &[Ty::I32]),
    ("clock_read", &[Ty::I32], &[]),
    ("reject", &[Ty::I32, Ty::I32], &[]),
    ("doc_get", &[Ty::I32, Ty::I32, Ty::I32, Ty::I32], &[Ty::I32]),
    ("guard", &[Ty::I32, Ty::I32], &[]),
    ("doc_set", &[Ty::I32, Ty::I32, Ty::I32, Ty::I32], &[]),
    ("doc_del", &[Ty::I32, Ty::I32], &[]),
];

/// Longest path a contract may name, in bytes.
pub const PATH_BYTES_MAX: usize = 1024;
/// Most document writes one call may make.
pub const WRITES_MAX: usize = 1024;

/// Most bytes of document a contract may read at once (the JSON text of one path's value).
pub const DOC_BYTES_MAX: usize = 1 << 20;

/// The signature of ABI function `name`, if there is one.
pub fn signature(name: &str) -> Option<(&'static [Ty], &'static [Ty])> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, p, r)| (*p, *r))
}

/// `(param i32 i32) (result i32)`, as WebAssembly text writes it.
pub fn describe(params: &[Ty], results: &[Ty]) -> String {
    let list = |tys: &[Ty]| {
        tys.iter()
            .map(|t| match t {
                Ty::I32 => "i32",
                Ty::I64 => "i64",
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("(param {}) (result {})", list(params), list(results))
}

/// What one call may see and change.
pub(crate) struct Host {
    /// The call's arguments.
    pub args: lcloud_core::Value,
    /// Their canonical JSON text, made when the contract first asks for it.
    pub args_json: Option<Vec<u8>>,
    /// The contract's state, changed in place (thrown away if the call fails).
    pub state: Kv,
    /// The experience's author.
    pub author: [u8; 32],
    /// The experience's seq.
    pub seq: u64,
    /// The experience's vector clock: 40 bytes per author (id, then seq as `u64` little-endian),
    /// sorted by author id.
    pub clock: Vec<u8>,
    /// The document as the calling experience's author saw it (only for contracts that import
    /// `doc_get`).
    pub doc: Option<lcloud_core::Doc>,
    /// The guarded paths and their contents before this op (what `doc_get` shows there).
    pub guarded: lcloud_core::Guarded,
    /// Whether this is the deploy's `init` (the only time `guard` may be called).
    pub in_init: bool,
    /// The paths declared with `guard`.
    pub guards: Vec<lcloud_core::Path>,
    /// The document writes made so far.
    pub writes: Vec<lcloud_core::DocWrite>,
    /// Bytes of JSON written so far.
    pub written: usize,
    /// Memory limits.
    pub limits: wasmi::StoreLimits,
}

/// Why a host call stopped the contract. The message is part of the rejection every node
/// records, so it names only what the contract did.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    /// The contract called `reject`.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The fuel ran out inside a host call.
    #[error("out of fuel")]
    OutOfFuel,
    /// The contract broke the ABI.
    #[error("{0}")]
    Abi(String),
}

impl wasmi::errors::HostError for Stop {}

fn stop(s: Stop) -> wasmi::Error {
    wasmi::Error::host(s)
}

/// Charges the host call's fuel from the contract's own counter.
fn charge(caller: &mut Caller<'_, Host>, bytes: usize) -> Result<(), wasmi::Error> {
    let Some(Extern::Global(fuel)) = caller.get_export(FUEL_GLOBAL) else {
        return Err(stop(Stop::Abi("no fuel counter".into())));
    };
    let Val::I64(left) = fuel.get(&*caller) else {
        return Err(stop(Stop::Abi("no fuel counter".into())));
    };
    let left = left - HOST_CALL_COST - (bytes as i64 >> 3);
    fuel.set(&mut *caller, Val::I64(left.max(-1)))
        .map_err(|_| stop(Stop::Abi("no fuel counter".into())))?;
    if left < 0 {
        return Err(stop(Stop::OutOfFuel));
    }
    Ok(())
}

fn memory(caller: &Caller<'_, Host>) -> Result<wasmi::Memory, wasmi::Error> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(stop(Stop::Abi("the contract exports no memory".into()))),
    }
}

/// `len` bytes at `ptr` of the contract's memory, checked.
fn read(
    caller: &Caller<'_, Host>,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<Vec<u8>, wasmi::Error> {
    let mem = memory(caller)?;
    let data = mem.data(caller);
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    data.get(p..p.saturating_add(l))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            stop(Stop::Abi(format!(
                "{what} at {p}+{l} is outside the memory"
            )))
        })
}

fn write(
    caller: &mut Caller<'_, Host>,
    ptr: i32,
    bytes: &[u8],
    what: &str,
) -> Result<(), wasmi::Error> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let p = ptr as u32 as usize;
    data.get_mut(p..p.saturating_add(bytes.len()))
        .ok_or_else(|| {
            stop(Stop::Abi(format!(
                "{what} at {p}+{} is outside the memory",
                bytes.len()
            )))
        })?
        .copy_from_slice(bytes);
    Ok(())
}

fn text(bytes: Vec<u8>, what: &str, max: usize) -> Result<String, wasmi::Error> {
    if bytes.len() > max {
        return Err(stop(Stop::Abi(format!(
            "{what} is {} bytes, at most {max}",
            bytes.len()
        ))));
    }
    String::from_utf8(bytes).map_err(|_| stop(Stop::Abi(format!("{what} is not UTF-8"))))
}

/// Hands `bytes` to the contract through its buffer at `out` (`cap` bytes): charges for them,
/// writes them only if they fit, and answers their length (the contract asks again with a
/// larger buffer if they did not fit).
fn answer(
    c: &mut Caller<'_, Host>,
    out: i32,
    cap: i32,
    bytes: &[u8],
    what: &str,
) -> Result<i32, wasmi::Error> {
    charge(c, bytes.len())?;
    if bytes.len() <= cap as u32 as usize {
        write(c, out, bytes, what)?;
    }
    Ok(bytes.len() as i32)
}

/// The arguments' canonical JSON text (keys sorted, no spaces), made on first use.
fn args_json(host: &mut Host) -> Result<&mut Vec<u8>, wasmi::Error> {
    if host.args_json.is_none() {
        // The same text as `args.to_json().to_string()` (sorted keys, finite floats by ryu),
        // written directly.
        let json = serde_json::to_vec(&host.args)
            .map_err(|e| stop(Stop::Abi(format!("the arguments: {e}"))))?;
        host.args_json = Some(json);
    }
    Ok(host.args_json.get_or_insert_default())
}

/// The path at `ptr`, checked, with the call's fuel charged for it and `more` bytes.
fn path_arg(
    c: &mut Caller<'_, Host>,
    ptr: i32,
    len: i32,
    more: usize,
) -> Result<lcloud_core::Path, wasmi::Error> {
    let path = read(c, ptr, len, "the path")?;
    charge(c, path.len() + more)?;
    let path = text(path, "the path", PATH_BYTES_MAX)?;
    lcloud_core::Path::parse(&path).map_err(|e| {
        stop(Stop::Abi(format!(
            "the path {path:?} is not a JSON Pointer ({e})"
        )))
    })
}

/// Records a document write, within the call's limits.
fn push_write(c: &mut Caller<'_, Host>, w: lcloud_core::DocWrite) -> Result<(), wasmi::Error> {
    let host = c.data_mut();
    if host.writes.len() >= WRITES_MAX {
        return Err(stop(Stop::Abi(format!(
            "more than {WRITES_MAX} document writes in one call"
        ))));
    }
    host.writes.push(w);
    Ok(())
}

/// The host functions, for every instance.
pub(crate) fn link(linker: &mut Linker<Host>) -> Result<(), wasmi::Error> {
    linker.func_wrap(MODULE, "args_len", |mut c: Caller<'_, Host>| {
        charge(&mut c, 0)?;
        Ok(args_json(c.data_mut())?.len() as i32)
    })?;
    linker.func_wrap(MODULE, "args_read", |mut c: Caller<'_, Host>, ptr: i32| {
        let args = std::mem::take(args_json(c.data_mut())?);
        charge(&mut c, args.len())?;
        let done = write(&mut c, ptr, &args, "the arguments");
        c.data_mut().args_json = Some(args);
        done
    })?;
    linker.func_wrap(
        MODULE,
        "arg",
        |mut c: Caller<'_, Host>, np: i32, nl: i32, out: i32, cap: i32| {
            let name = read(&c, np, nl, "the argument's name")?;
            charge(&mut c, name.len())?;
            let name = text(name, "the argument's name", KEY_BYTES_MAX)?;
            let field = match &c.data().args {
                lcloud_core::Value::Map(m) => m.get(&name),
                _ => None,
            };
            let bytes = match field {
                None => return Ok(-1),
                Some(lcloud_core::Value::Str(s)) => s.clone().into_bytes(),
                Some(other) => serde_json::to_vec(other)
                    .map_err(|e| stop(Stop::Abi(format!("the argument {name:?}: {e}"))))?,
            };
            answer(&mut c, out, cap, &bytes, "the argument buffer")
        },
    )?;
    linker.func_wrap(
        MODULE,
        "state_get",
        |mut c: Caller<'_, Host>, kp: i32, kl: i32, out: i32, cap: i32| {
            let key = read(&c, kp, kl, "the key")?;
            charge(&mut c, key.len())?;
            let key = text(key, "the key", KEY_BYTES_MAX)?;
            let value = match c.data().state.get(&key) {
                Some(v) => v.clone().into_bytes(),
                None => return Ok(-1),
            };
            answer(&mut c, out, cap, &value, "the value buffer")
        },
    )?;
    linker.func_wrap(
        MODULE,
        "state_set",
        |mut c: Caller<'_, Host>, kp: i32, kl: i32, vp: i32, vl: i32| {
            let key = read(&c, kp, kl, "the key")?;
            let value = read(&c, vp, vl, "the value")?;
            charge(&mut c, key.len() + value.len())?;
            let key = text(key, "the key", KEY_BYTES_MAX)?;
            let value = text(value, "the value", VALUE_BYTES_MAX)?;
            c.data_mut().state.insert(key, value);
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "state_del",
        |mut c: Caller<'_, Host>, kp: i32, kl: i32| {
            let key = read(&c, kp, kl, "the key")?;
            charge(&mut c, key.len())?;
            let key = text(key, "the key", KEY_BYTES_MAX)?;
            c.data_mut().state.remove(&key);
            Ok(())
        },
    )?;
    linker.func_wrap(MODULE, "author", |mut c: Caller<'_, Host>, ptr: i32| {
        charge(&mut c, 32)?;
        let author = c.data().author;
        write(&mut c, ptr, &author, "the author buffer")
    })?;
    linker.func_wrap(MODULE, "seq", |mut c: Caller<'_, Host>| {
        charge(&mut c, 0)?;
        Ok(c.data().seq as i64)
    })?;
    linker.func_wrap(MODULE, "clock_len", |mut c: Caller<'_, Host>| {
        charge(&mut c, 0)?;
        Ok(c.data().clock.len() as i32)
    })?;
    linker.func_wrap(MODULE, "clock_read", |mut c: Caller<'_, Host>, ptr: i32| {
        let clock = std::mem::take(&mut c.data_mut().clock);
        charge(&mut c, clock.len())?;
        let done = write(&mut c, ptr, &clock, "the clock buffer");
        c.data_mut().clock = clock;
        done
    })?;
    linker.func_wrap(
        MODULE,
        "doc_get",
        |mut c: Caller<'_, Host>, pp: i32, pl: i32, out: i32, cap: i32| {
            let path = path_arg(&mut c, pp, pl, 0)?;
            let host = c.data();
            let shown = host.doc.as_ref().and_then(|d| host.guarded.visible(d, &path));
            let value = match shown {
                Some(v) => serde_json::to_vec(&v)
                    .map_err(|e| stop(Stop::Abi(format!("the document at {path}: {e}"))))?,
                None => return Ok(-1),
            };
            if value.len() > DOC_BYTES_MAX {
                return Err(stop(Stop::Abi(format!(
                    "the document at {path} is {} bytes, more than a contract may read ({DOC_BYTES_MAX})",
                    value.len()
                ))));
            }
            answer(&mut c, out, cap, &value, "the document buffer")
        },
    )?;
    linker.func_wrap(
        MODULE,
        "guard",
        |mut c: Caller<'_, Host>, pp: i32, pl: i32| {
            let path = path_arg(&mut c, pp, pl, 0)?;
            if !c.data().in_init {
                return Err(stop(Stop::Abi(format!(
                    "guard {path}: a contract declares its guarded paths in init only"
                ))));
            }
            c.data_mut().guards.push(path);
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "doc_set",
        |mut c: Caller<'_, Host>, pp: i32, pl: i32, vp: i32, vl: i32| {
            let json = read(&c, vp, vl, "the value")?;
            let path = path_arg(&mut c, pp, pl, json.len())?;
            let written = c.data().written + json.len();
            if written > DOC_BYTES_MAX {
                return Err(stop(Stop::Abi(format!(
                    "more than {DOC_BYTES_MAX} bytes of document written in one call"
                ))));
            }
            c.data_mut().written = written;
            let value = serde_json::from_slice::<serde_json::Value>(&json).map_err(|e| {
                stop(Stop::Abi(format!(
                    "doc_set {path}: the value is not JSON ({e})"
                )))
            })?;
            let value = lcloud_core::Value::from_json(&value)
                .map_err(|e| stop(Stop::Abi(format!("doc_set {path}: {e}"))))?;
            // What the document could not read back is refused here, not stored.
            let op = [lcloud_core::Op::Set { path, value }];
            lcloud_core::check_nesting(&op)
                .map_err(|e| stop(Stop::Abi(format!("doc_set: {e}"))))?;
            let [lcloud_core::Op::Set { path, value }] = op else {
                unreachable!("built just above")
            };
            push_write(&mut c, lcloud_core::DocWrite::Set { path, value })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "doc_del",
        |mut c: Caller<'_, Host>, pp: i32, pl: i32| {
            let path = path_arg(&mut c, pp, pl, 0)?;
            push_write(&mut c, lcloud_core::DocWrite::Del { path })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "reject",
        |mut c: Caller<'_, Host>, ptr: i32, len: i32| -> Result<(), wasmi::Error> {
            let reason = read(&c, ptr, len.clamp(0, REASON_BYTES_MAX as i32), "the reason")?;
            charge(&mut c, reason.len())?;
            let mut reason = String::from_utf8_lossy(&reason).into_owned();
            // A cut inside a character became U+FFFD: drop it.
            if reason.ends_with('\u{FFFD}') && len as usize > REASON_BYTES_MAX {
                reason.pop();
            }
            Err(stop(Stop::Rejected(reason)))
        },
    )?;
    Ok(())
}
