//! `bank`: accounts with balances; transfers never overdraw.
//!
//! - `init {}`: the deployer becomes the minter.
//! - `mint {"to": A, "amount": N}`: only the minter; adds N to A.
//! - `transfer {"from": A, "to": B, "amount": N}`: moves N from A to B, or is rejected when
//!   A holds less than N. Two nodes that spend one balance while partitioned both see their
//!   transfer accepted; after the heal every node folds both in canonical order and keeps
//!   exactly those that fit, rejecting the rest with the same reason.
//!
//! State: `minter` (hex node id), `balance/ACCOUNT` (decimal).

#![no_std]

use lcloud_guest as lc;
use serde::Deserialize;

#[derive(Deserialize)]
struct Mint<'a> {
    to: &'a str,
    amount: i64,
}

#[derive(Deserialize)]
struct Transfer<'a> {
    from: &'a str,
    to: &'a str,
    amount: i64,
}

fn balance_key(account: &str) -> lc::String {
    lc::key("balance/", account)
}

#[unsafe(no_mangle)]
pub extern "C" fn init() {
    lc::set("minter", &lc::hex(&lc::author()));
}

#[unsafe(no_mangle)]
pub extern "C" fn mint() {
    let a: Mint = lc::args();
    if lc::get("minter").as_deref() != Some(lc::hex(&lc::author()).as_str()) {
        lc::reject("only the minter may mint");
    }
    if a.amount <= 0 {
        lc::reject("the amount must be positive");
    }
    let k = balance_key(a.to);
    let Some(next) = lc::get_i64(&k).checked_add(a.amount) else {
        lc::reject("the balance would overflow");
    };
    lc::set_i64(&k, next);
}

#[unsafe(no_mangle)]
pub extern "C" fn transfer() {
    let a: Transfer = lc::args();
    if a.amount <= 0 {
        lc::reject("the amount must be positive");
    }
    if a.from == a.to {
        lc::reject("from and to are the same account");
    }
    let (from, to) = (balance_key(a.from), balance_key(a.to));
    let have = lc::get_i64(&from);
    if have < a.amount {
        lc::reject(&lc::format!(
            "insufficient funds: {} holds {have}, the transfer needs {}",
            a.from,
            a.amount
        ));
    }
    let Some(after) = lc::get_i64(&to).checked_add(a.amount) else {
        lc::reject("the balance would overflow");
    };
    lc::set_i64(&from, have - a.amount);
    lc::set_i64(&to, after);
}
