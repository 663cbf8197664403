//! Helpers shared by the loopback test files. Each test crate uses some of
//! them, so the rest would warn as unused there.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// How long a loopback test waits for something before it fails: a guard
/// against hangs only, never a measure of speed.
pub const GUARD: Duration = Duration::from_secs(30);

/// Awaits `future`, panicking with `what` if it takes longer than [`GUARD`].
pub async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("failure guard: gave up waiting for {what}"))
}

/// Waits until `condition` holds, for counters that have no notification
/// (such as the limiter's `waiting()`); re-checks every millisecond.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    guard(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}
