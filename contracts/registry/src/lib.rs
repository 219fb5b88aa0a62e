//! `registry`: first-come name registration.
//!
//! - `claim {"name": N}`: N becomes the caller's, unless someone holds it already or the
//!   document lists it under `/registry/reserved` (a set of names) as the caller saw it. Two nodes
//!   that claim one name while partitioned each see their claim accepted; after the heal the
//!   claim first in canonical order holds the name on every node and the other is rejected.
//! - `release {"name": N}`: only its owner; N is free again.
//!
//! State: `owner/NAME` (hex node id).

#![no_std]

use lcloud_guest as lc;
use serde::Deserialize;

#[derive(Deserialize)]
struct Name<'a> {
    name: &'a str,
}

fn owner_key(name: &str) -> lc::String {
    lc::key("owner/", name)
}

#[unsafe(no_mangle)]
pub extern "C" fn claim() {
    let a: Name = lc::args();
    if a.name.is_empty() || a.name.len() > 64 {
        lc::reject("a name is 1 to 64 bytes");
    }
    if lc::doc_as::<lc::Vec<&str>>("/registry/reserved").is_some_and(|r| r.contains(&a.name)) {
        lc::reject(&lc::format!("{} is reserved", a.name));
    }
    let k = owner_key(a.name);
    if let Some(owner) = lc::get(&k) {
        lc::reject(&lc::format!("{} is taken by {}", a.name, &owner[..16]));
    }
    lc::set(&k, &lc::hex(&lc::author()));
}

#[unsafe(no_mangle)]
pub extern "C" fn release() {
    let a: Name = lc::args();
    let k = owner_key(a.name);
    match lc::get(&k) {
        None => lc::reject(&lc::format!("{} is not registered", a.name)),
        Some(owner) if owner != lc::hex(&lc::author()) => {
            lc::reject(&lc::format!("{} belongs to {}", a.name, &owner[..16]))
        }
        Some(_) => lc::del(&k),
    }
}
