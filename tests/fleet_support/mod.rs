//! The live-Redis harness of the fleet tests: a private `redis-server`, a
//! faulty TCP proxy, a loopback upstream that counts true concurrency, and
//! worker processes (the test binary run again) that call it through one
//! fleet-wide limit.
#![allow(dead_code)]

pub mod proxy;
pub mod redis;
pub mod upstream;
pub mod worker;
