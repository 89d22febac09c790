//! Ports for the daemons the tests start (`http.listen`).
//!
//! A daemon is a separate process: a test must name its port before starting it, so the
//! port is found free here, released, and bound again by the daemon. A port found by
//! binding port 0 comes from the kernel's ephemeral range, where every other socket bound
//! to port 0 in the meantime (a parallel test's receiver, a client's outgoing connection)
//! may get it first. The ports here come from below that range (20,000 up, clear of the
//! test broker's 19092–19096), where only an explicit bind can land, and each is handed out
//! once per test process: two tests of one binary never get the same port, and no port-0
//! socket ever takes one. A port something else holds is skipped.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The first port handed out from.
const FIRST: u32 = 20_000;

/// A port nobody listens on now and no other socket of this machine can be given by the
/// kernel; each call returns a different one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The ports below the ephemeral range; with no room there (a machine whose range
    // starts low), the kernel's choice after all.
    let end = ephemeral_start().min(u32::from(u16::MAX));
    if end <= FIRST + 1_000 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return l.local_addr().expect("local addr").port();
    }
    let span = end - FIRST;
    // Test binaries run one after another; a start of their own (their process ids
    // spread over the range) keeps one from trying the ports the one before used.
    let start = std::process::id().wrapping_mul(997) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % span).expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {end}");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read: Linux's
/// default).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
