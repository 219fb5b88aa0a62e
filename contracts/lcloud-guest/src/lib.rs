//! Write λCLOUD contracts in Rust.
//!
//! A contract is a `cdylib` built for `wasm32-unknown-unknown` whose exported functions take
//! and return nothing: each reads its arguments with [`args`], reads and writes the contract's
//! own key-value state with [`get`] and [`set`], reads the document as its caller saw it with
//! [`doc`], writes the paths it guards ([`guard`], in `init`) with [`doc_set`] and [`doc_del`],
//! and either returns (the call is accepted and
//! its state changes are kept) or calls [`reject`] (nothing it did is kept, and every node
//! records the same reason). A function named `init` runs once, when the contract is deployed,
//! with the deploy's arguments.
//!
//! This crate is the guest side of host ABI 1 (docs/contracts.md): the imports, a bump
//! allocator (every call runs in a fresh instance, so nothing is ever freed), and a panic
//! handler that traps (a panic rejects the call with `trap: unreachable`).
//!
//! ```ignore
//! #![no_std]
//! use lcloud_guest as lc;
//!
//! #[derive(serde::Deserialize)]
//! struct Bump<'a> { key: &'a str }
//!
//! #[unsafe(no_mangle)]
//! pub extern "C" fn bump() {
//!     let a: Bump = lc::args();
//!     lc::set_i64(a.key, lc::get_i64(a.key) + 1);
//! }
//! ```

#![no_std]

extern crate alloc;

use alloc::vec;
use core::fmt::Write as _;

pub use alloc::format;
pub use alloc::string::String;
pub use alloc::vec::Vec;

mod sys {
    #[link(wasm_import_module = "lcloud")]
    unsafe extern "C" {
        pub fn args_len() -> i32;
        pub fn args_read(ptr: *mut u8);
        pub fn arg(np: *const u8, nl: i32, out: *mut u8, cap: i32) -> i32;
        pub fn state_get(kp: *const u8, kl: i32, out: *mut u8, cap: i32) -> i32;
        pub fn state_set(kp: *const u8, kl: i32, vp: *const u8, vl: i32);
        pub fn state_del(kp: *const u8, kl: i32);
        pub fn author(ptr: *mut u8);
        pub fn seq() -> i64;
        pub fn clock_len() -> i32;
        pub fn clock_read(ptr: *mut u8);
        pub fn reject(ptr: *const u8, len: i32) -> !;
        pub fn doc_get(pp: *const u8, pl: i32, out: *mut u8, cap: i32) -> i32;
        pub fn guard(pp: *const u8, pl: i32);
        pub fn doc_set(pp: *const u8, pl: i32, vp: *const u8, vl: i32);
        pub fn doc_del(pp: *const u8, pl: i32);
    }
}

/// A node's id: its Ed25519 public key.
pub type NodeId = [u8; 32];

/// The call's arguments, as the canonical JSON text the host hands over.
pub fn args_json() -> Vec<u8> {
    // SAFETY: the host writes exactly `args_len()` bytes at the pointer, inside our buffer.
    unsafe {
        let len = sys::args_len() as usize;
        let mut buf = vec![0u8; len];
        sys::args_read(buf.as_mut_ptr());
        buf
    }
}

/// The call's arguments decoded into `T`, or the call is rejected naming what is wrong.
/// `T` may borrow strings from the arguments (they live for the whole call).
pub fn args<T: serde::Deserialize<'static>>() -> T {
    let json: &'static [u8] = args_json().leak();
    match serde_json_core::from_slice::<T>(json) {
        Ok((value, _)) => value,
        Err(e) => reject(&format!("bad arguments: {e}")),
    }
}

/// Text the host hands over through a buffer: `host(out, cap)` answers -1 (nothing) or the
/// length, writing the bytes only when they fit; the buffer grows and it asks again.
fn sized(start: usize, host: impl Fn(*mut u8, i32) -> i32) -> Option<String> {
    let mut buf: Vec<u8> = Vec::with_capacity(start);
    loop {
        let len = host(buf.as_mut_ptr(), buf.capacity() as i32);
        if len < 0 {
            return None;
        }
        let len = len as usize;
        if len <= buf.capacity() {
            // SAFETY: the host wrote exactly `len` bytes at the start of the buffer, and ABI 1
            // hands over UTF-8 text only (keys, values, argument strings and the document's
            // JSON are all checked text on the host's side), so checking again here would only
            // cost fuel (about 20 instructions a byte).
            return Some(unsafe {
                buf.set_len(len);
                String::from_utf8_unchecked(buf)
            });
        }
        buf.reserve_exact(len);
    }
}

/// The top-level argument `name`, without decoding the rest: a string's own text, any other
/// value as JSON text; `None` when the arguments have no such field. Much cheaper in fuel than
/// [`args`] for flat arguments (the host looks the field up).
pub fn arg(name: &str) -> Option<String> {
    // SAFETY: the host writes at most `cap` bytes at `out`, which is our buffer.
    sized(32, |out, cap| unsafe {
        sys::arg(name.as_ptr(), name.len() as i32, out, cap)
    })
}

/// The top-level argument `name` as text, or the call is rejected naming it.
pub fn arg_str(name: &str) -> String {
    arg(name).unwrap_or_else(|| reject(&format!("the arguments need {name:?}")))
}

/// The top-level argument `name` as an integer, or the call is rejected naming it.
pub fn arg_i64(name: &str) -> i64 {
    arg_str(name)
        .parse()
        .unwrap_or_else(|_| reject(&format!("{name:?} must be an integer")))
}

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<String> {
    // SAFETY: the host writes at most `cap` bytes at `out`, which is our buffer.
    sized(64, |out, cap| unsafe {
        sys::state_get(key.as_ptr(), key.len() as i32, out, cap)
    })
}

/// The document at `path` (a JSON Pointer, `/users/ada`) as the calling experience's author
/// saw it, as JSON text; `None` when nothing is there. (Contracts that call this get the
/// document of the call's causal past from the host.)
pub fn doc(path: &str) -> Option<String> {
    // SAFETY: the host writes at most `cap` bytes at `out`, which is our buffer.
    sized(256, |out, cap| unsafe {
        sys::doc_get(path.as_ptr(), path.len() as i32, out, cap)
    })
}

/// The document at `path` decoded into `T`; `None` when nothing is there or it is not a `T`.
pub fn doc_as<T: serde::Deserialize<'static>>(path: &str) -> Option<T> {
    let json: &'static [u8] = doc(path)?.into_bytes().leak();
    serde_json_core::from_slice::<T>(json).ok().map(|(v, _)| v)
}

/// Guards `path` (a JSON Pointer): from this deploy on, the document under it is what this
/// contract writes there, and nothing else. Only `init` may call it; a path another contract
/// guards (or one above or below it) makes the deploy fail.
pub fn guard(path: &str) {
    // SAFETY: the host only reads the slice.
    unsafe { sys::guard(path.as_ptr(), path.len() as i32) }
}

/// Sets the document at `path`, under a path this contract guards, to `json` (JSON text), on
/// behalf of the call: applied only if the call is accepted.
pub fn doc_set(path: &str, json: &str) {
    // SAFETY: the host only reads the two slices.
    unsafe {
        sys::doc_set(
            path.as_ptr(),
            path.len() as i32,
            json.as_ptr(),
            json.len() as i32,
        )
    }
}

/// Removes the document at `path`, under a path this contract guards.
pub fn doc_del(path: &str) {
    // SAFETY: the host only reads the slice.
    unsafe { sys::doc_del(path.as_ptr(), path.len() as i32) }
}

/// Stores `value` under `key`.
pub fn set(key: &str, value: &str) {
    // SAFETY: the host only reads the two slices.
    unsafe {
        sys::state_set(
            key.as_ptr(),
            key.len() as i32,
            value.as_ptr(),
            value.len() as i32,
        )
    }
}

/// Removes `key`.
pub fn del(key: &str) {
    // SAFETY: the host only reads the slice.
    unsafe { sys::state_del(key.as_ptr(), key.len() as i32) }
}

/// The integer stored under `key` (0 when there is none); rejects the call if it is not one.
pub fn get_i64(key: &str) -> i64 {
    match get(key) {
        None => 0,
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| reject(&format!("{key} holds {v:?}, not an integer"))),
    }
}

/// Stores an integer under `key`, as decimal text.
pub fn set_i64(key: &str, value: i64) {
    set(key, itoa::Buffer::new().format(value));
}

/// `prefix` followed by `name`: a key (cheaper than `format!`).
pub fn key(prefix: &str, name: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + name.len());
    k.push_str(prefix);
    k.push_str(name);
    k
}

/// The author of the experience that carries this call.
pub fn author() -> NodeId {
    let mut id = [0u8; 32];
    // SAFETY: the host writes 32 bytes into `id`.
    unsafe { sys::author(id.as_mut_ptr()) };
    id
}

/// The seq of that experience in its author's chain.
pub fn seq() -> u64 {
    // SAFETY: no memory is touched.
    unsafe { sys::seq() as u64 }
}

/// That experience's vector clock: every author it has seen, with the highest seq, by id.
pub fn clock() -> Vec<(NodeId, u64)> {
    // SAFETY: the host writes exactly `clock_len()` bytes into the buffer.
    let raw = unsafe {
        let len = sys::clock_len() as usize;
        let mut buf = vec![0u8; len];
        sys::clock_read(buf.as_mut_ptr());
        buf
    };
    raw.chunks_exact(40)
        .map(|e| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&e[32..]);
            (id, u64::from_le_bytes(seq))
        })
        .collect()
}

/// Rejects the call: nothing it changed is kept, and every node records `reason`.
pub fn reject(reason: &str) -> ! {
    // SAFETY: the host reads the slice and never returns.
    unsafe { sys::reject(reason.as_ptr(), reason.len() as i32) }
}

/// `id` as 64 lowercase hex digits (how the CLI and the API show node ids).
pub fn hex(id: &NodeId) -> String {
    let mut s = String::with_capacity(64);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(target_arch = "wasm32")]
mod runtime {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    /// A bump allocator: an instance lives for one call, so nothing needs freeing.
    struct Bump {
        next: UnsafeCell<usize>,
    }

    // SAFETY: a contract runs on one thread.
    unsafe impl Sync for Bump {}

    const PAGE: usize = 65536;

    unsafe extern "C" {
        static __heap_base: u8;
    }

    // SAFETY: `alloc` hands out disjoint, aligned ranges of memory it has grown into.
    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let next = unsafe { &mut *self.next.get() };
            if *next == 0 {
                *next = &raw const __heap_base as usize;
            }
            let start = (*next + layout.align() - 1) & !(layout.align() - 1);
            let Some(end) = start.checked_add(layout.size()) else {
                return core::ptr::null_mut();
            };
            let have = core::arch::wasm32::memory_size(0) * PAGE;
            if end > have {
                let pages = (end - have).div_ceil(PAGE);
                if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                    return core::ptr::null_mut();
                }
            }
            *next = end;
            start as *mut u8
        }
        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }

    #[global_allocator]
    static ALLOC: Bump = Bump {
        next: UnsafeCell::new(0),
    };

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        core::arch::wasm32::unreachable()
    }
}
