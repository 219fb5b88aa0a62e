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

/// The hot path: its three arguments are read one by one (`lc::arg_*`, looked up by the host)
/// rather than decoded from JSON in the contract, which costs about half the fuel.
#[unsafe(no_mangle)]
pub extern "C" fn transfer() {
    let (from, to, amount) = (lc::arg_str("from"), lc::arg_str("to"), lc::arg_i64("amount"));
    if amount <= 0 {
        lc::reject("the amount must be positive");
    }
    if from == to {
        lc::reject("from and to are the same account");
    }
    let (from_key, to_key) = (balance_key(&from), balance_key(&to));
    let have = lc::get_i64(&from_key);
    if have < amount {
        lc::reject(&lc::format!(
            "insufficient funds: {from} holds {have}, the transfer needs {amount}"
        ));
    }
    let Some(after) = lc::get_i64(&to_key).checked_add(amount) else {
        lc::reject("the balance would overflow");
    };
    lc::set_i64(&from_key, have - amount);
    lc::set_i64(&to_key, after);
}
