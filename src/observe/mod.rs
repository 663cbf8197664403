//! Watching a limit from outside: `tracing` events, metrics, and load for
//! balancers.
//!
//! Three cargo features, all off by default. With none of them on, the
//! limiter has no observation code at all: the hooks it calls are empty and
//! inlined away, and no clock is read for them.
//!
//! | feature | adds |
//! | --- | --- |
//! | `tracing` | [events](#tracing-events) through the `tracing` crate |
//! | `metrics` | [metrics](#metrics) through the `metrics` facade (0.24) |
//! | `load` | [`tower::load::Load`](#load-for-balancers) for the services |
//!
//! Every limiter reports under a name, the `limiter` field of its events
//! and label of its metrics: `"default"` unless it was given one with
//! [`Limiter::named`](crate::Limiter::named) when it was built. Give each
//! limiter of a process its own name:
//!
//! ```
//! use tower_concurrency::http_limit::HttpLimitLayer;
//! use tower_concurrency::Limiter;
//!
//! let api = HttpLimitLayer::from_limiter(Limiter::new(64).named("api"));
//! let db = Limiter::new(16).named("db");
//! # let _ = (api, db);
//! ```
//!
//! # `tracing` events
//!
//! All events have the target `tower_concurrency` (so
//! `RUST_LOG=tower_concurrency=debug` shows them) and the limiter's name in
//! the field `limiter`. Requests that find a free permit, the fast path,
//! log nothing above `TRACE`.
//!
//! | message | level | when | fields |
//! | --- | --- | --- | --- |
//! | `permit acquired after waiting` | `DEBUG` | a request got its permit after queueing for it (in [`ConcurrencyLimit`](crate::ConcurrencyLimit)'s `poll_ready` or [`Limiter::acquire`](crate::Limiter::acquire)) | `waited` (a duration), `in_flight`, `waiting`, `limit` |
//! | `request rejected` | `DEBUG` | a request was refused (see [`Rejected`](crate::Rejected)) | `reason`, `scope`, `limit` (the one that refused: the concurrency limit, the per-key limit or the number of keys), `waited`, `in_flight`, `waiting` |
//! | `concurrency limit changed` | `INFO` | [`set_limit`](crate::Limiter::set_limit), [`try_set_limit`](crate::Limiter::try_set_limit) or [`unpin`](crate::Limiter::unpin) moved the limit: an operator's action, logged at every call | `old`, `new`, `cause` (`set_limit`, `unpin`), `in_flight` |
//! | `concurrency limit changed` | `DEBUG` | an adaptive limiter's algorithm moved the limit (answers that leave it where it is log nothing) | `old`, `new`, `cause` (`algorithm`), `in_flight` |
//! | `permit acquired without waiting` | `TRACE` | a request took a free permit | `in_flight`, `limit` |
//! | `request bypassed the limit` | `TRACE` | a request skipped the limit through a [bypass rule](crate::http_limit::HttpLimitLayer::bypass) | |
//!
//! `reason` is one of `full`, `queue_full`, `timed_out`, `held`,
//! `key_full` and `too_many_keys` (the [`Reason`](crate::Reason)s), and
//! `scope` is `key` when the request's own key was full
//! ([`Rejected::is_per_key`](crate::Rejected::is_per_key)), else `service`.
//! Field values are computed only for events a subscriber wants.
//!
//! # Metrics
//!
//! With the `metrics` feature each limiter reports through the
//! [`metrics`](https://docs.rs/metrics/0.24) facade to whatever recorder
//! the application installs (for Prometheus, `metrics-exporter-prometheus`;
//! see `examples/metrics.rs`). Names follow the Prometheus conventions:
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `tower_concurrency_limit` | gauge | `limiter` | the limit in force ([`Limiter::limit`](crate::Limiter::limit)) |
//! | `tower_concurrency_in_flight` | gauge | `limiter` | permits held now: requests in flight ([`Limiter::in_flight`](crate::Limiter::in_flight)) |
//! | `tower_concurrency_waiting` | gauge | `limiter` | requests waiting for a permit now ([`Limiter::waiting`](crate::Limiter::waiting)) |
//! | `tower_concurrency_partition_in_flight` | gauge | `limiter`, `partition` | permits a [partition](crate::Limiter::partitioned) holds now |
//! | `tower_concurrency_partition_guaranteed` | gauge | `limiter`, `partition` | permits guaranteed to a partition at the current limit |
//! | `tower_concurrency_admitted_total` | counter | `limiter` | requests admitted (given a permit), at once or after waiting |
//! | `tower_concurrency_rejected_total` | counter | `limiter`, `reason` | requests refused, by `reason` as in the events above |
//! | `tower_concurrency_bypassed_total` | counter | `limiter` | requests that skipped the limit through a bypass rule ([`Limiter::bypassed`](crate::Limiter::bypassed)) |
//! | `tower_concurrency_wait_seconds` | histogram | `limiter` | how long requests admitted after waiting waited for their permit, in seconds |
//!
//! Every request the HTTP layer or [`PolicyLimit`](crate::PolicyLimit)
//! sees ends up in exactly one of the three counters (admitted, rejected,
//! bypassed), unless it is dropped while it waits. The histogram holds
//! only the waits that ended in a permit: its `_count` over
//! `admitted_total` is the share of requests that had to wait, and a wait
//! that timed out is counted in `rejected_total{reason="timed_out"}`
//! instead. All six `reason` series are registered at zero up front.
//!
//! ## When metrics are registered, and what they cost
//!
//! A limiter registers its handles once, with the recorder installed at
//! that moment: when it is [named](crate::Limiter::named), or else at its
//! first event under the name `"default"`. **Install the recorder first**:
//! a limiter registered while none is installed reports nowhere for its
//! whole life. Two limiters under one name share their series.
//!
//! Each event then updates a handle directly, with no lookup by name and no
//! allocation: a request that finds a free permit costs one counter and one
//! gauge increment, and a gauge decrement when its permit comes back; a
//! request that waits adds a queue gauge up and down and one histogram
//! sample. The gauges are not sampled: they move at the events that move
//! them (a permit made or dropped, a caller entering or leaving the queue,
//! the limit moving), so they hold exact values at any moment, which may
//! differ from [`Limiter::in_flight`](crate::Limiter::in_flight) by a slot
//! the semaphore handed to a waiter that has not run yet. The limit gauge
//! and the partitions' guarantees are set whenever the limit moves,
//! adaptive limits included.
//!
//! # Load for balancers
//!
//! With the `load` feature, [`ConcurrencyLimit`](crate::ConcurrencyLimit),
//! [`PolicyLimit`](crate::PolicyLimit) and
//! [`HttpLimit`](crate::http_limit::HttpLimit) implement `tower::load::Load`, so
//! tower's power-of-two-choices balancer (`tower::balance::p2c`) can send
//! each request to the least loaded of two limited backends. The metric is
//! an `f64`, the demand on the limiter per permit:
//!
//! ```text
//! (in_flight + waiting) / limit
//! ```
//!
//! 0 when idle, 1 when every permit is taken and nobody waits, above 1 when
//! requests queue. Counting the queue keeps two saturated backends apart
//! (the one with the shorter queue wins), and dividing by the limit
//! compares backends of different sizes. Services sharing one limiter
//! report the same load.
//!
//! ```
//! # #[cfg(feature = "load")] {
//! use tower::load::Load;
//! use tower::service_fn;
//! use tower_concurrency::ConcurrencyLimit;
//!
//! let echo = service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
//! let small = ConcurrencyLimit::new(echo, 2);
//! let big = ConcurrencyLimit::new(echo, 10);
//! let _busy = small.limiter().try_acquire().unwrap();
//! let _also = big.limiter().try_acquire().unwrap();
//! assert_eq!(small.load(), 0.5);
//! assert!(big.load() < small.load());
//! # }
//! ```

#[cfg(feature = "load")]
mod load;
