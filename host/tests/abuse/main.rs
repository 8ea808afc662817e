//! The network edge under attack (docs/reliability.md, "Abuse"): a real
//! `portcullis serve` process, real sockets on 127.0.0.1, real TLS and
//! HTTP/2. Each test reproduces one attack of issue 11's red-team table (or
//! of issue 20's second pass) and asserts what an operator relies on:
//!
//! - the server's RSS stays under [`RSS_BUDGET_MIB`] during the attack;
//! - a normal request on a fresh connection is answered correctly within
//!   1 s, several times during the attack ([`Target::check_serves`]);
//! - the attacker's connections are closed within the configured timeouts;
//! - RSS returns near its baseline afterwards ([`Target::settles`]).
//!
//! `fetches` does the same for hostile registries (issue 20), served by a
//! stand-in (`hostile_registry`) that drips bytes or never stops sending.
//!
//! The attacks are scaled to finish in seconds each on CI's two cores;
//! `bench/abuse.py` runs them at the red team's full scale.

#[path = "../common/mod.rs"]
mod common;
#[path = "../../../tests/src/pki.rs"]
#[allow(dead_code)] // the suite uses a part of it
mod pki;

mod clients;
mod fetches;
mod harness;
mod hostile_registry;
mod http1;
mod http2;
mod hygiene;
mod lockout;
mod queueing;
mod scheduling;
mod slow_readers;
