//! Adaptive limits: algorithms that find the right concurrency from
//! measured latency and overload.
//!
//! A fixed limit is a guess: too low wastes capacity, too high lets queues
//! build until latency explodes, and the right number moves as backends
//! slow down or scale. An adaptive [`Limiter`](crate::Limiter) feeds every
//! finished request to a [`LimitAlgorithm`] as a [`Sample`] and moves its
//! limit to what the algorithm answers.
//!
//! SAMPLE_DOCS_PLACEHOLDER

mod aimd;
mod classify;
mod fixed;
mod gradient2;
mod vegas;
mod windowed;

use std::time::Duration;

use tokio::time::Instant;

pub use self::aimd::Aimd;
pub use self::classify::{Classify, DefaultClassifier};
pub use self::fixed::Fixed;
pub use self::gradient2::Gradient2;
pub use self::vegas::Vegas;
pub use self::windowed::{Aggregate, Windowed};

/// Learns a concurrency limit from samples.
///
/// The limiter calls [`update`](Self::update) once for every request that
/// finished with a [`Outcome::Success`] or [`Outcome::Overload`], under a
/// lock (keep it cheap), and moves its limit to the answer, clamped to at
/// least 1.
pub trait LimitAlgorithm: Send + 'static {
    /// The limit to start with.
    fn initial_limit(&self) -> usize;

    /// Learns from one finished request and answers the new limit.
    fn update(&mut self, sample: &Sample) -> usize;
}

impl<A: LimitAlgorithm + ?Sized> LimitAlgorithm for Box<A> {
    fn initial_limit(&self) -> usize {
        (**self).initial_limit()
    }

    fn update(&mut self, sample: &Sample) -> usize {
        (**self).update(sample)
    }
}

/// One finished request, as an algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Round-trip time: from admission to the response (for HTTP, the
    /// response head; see [`http`](crate::http)).
    pub rtt: Duration,
    /// Requests in flight when this one was admitted, itself included.
    pub in_flight: usize,
    /// Whether the request signalled overload (a timeout, a refusal, an
    /// upstream 503 or 429) rather than success.
    pub overload: bool,
    /// When the request finished.
    pub now: Instant,
}

/// What a finished request says about the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded: its round-trip time is a sample.
    Success,
    /// It signalled overload: a timeout, a refusal, an upstream 503 or 429.
    Overload,
    /// It says nothing about the limit (cancelled, a client error): the
    /// permit is released without a sample.
    Ignore,
}
