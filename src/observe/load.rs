//! `tower::load::Load` for the services (the `load` feature).

use tower::load::Load;

use crate::{ConcurrencyLimit, Limiter, PolicyLimit};

/// The demand on a limit: requests holding or waiting for a permit, per
/// permit of the limit.
fn load_of(limiter: &Limiter) -> f64 {
    (limiter.in_flight() + limiter.waiting()) as f64 / limiter.limit() as f64
}

impl<S, C> Load for ConcurrencyLimit<S, C> {
    type Metric = f64;

    /// `(in_flight + waiting) / limit` of its limiter: see
    /// [`observe`](crate::observe#load-for-balancers).
    fn load(&self) -> f64 {
        load_of(self.limiter())
    }
}

impl<S, C> Load for PolicyLimit<S, C> {
    type Metric = f64;

    /// `(in_flight + waiting) / limit` of its limiter: see
    /// [`observe`](crate::observe#load-for-balancers).
    fn load(&self) -> f64 {
        load_of(self.limiter())
    }
}

#[cfg(feature = "http")]
impl<S, C> Load for crate::http_limit::HttpLimit<S, C> {
    type Metric = f64;

    /// `(in_flight + waiting) / limit` of its limiter: see
    /// [`observe`](crate::observe#load-for-balancers).
    fn load(&self) -> f64 {
        load_of(self.limiter())
    }
}
