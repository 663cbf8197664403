use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::keyed::KeyTable;
use super::rules::{RequestHead, Rules};
use super::{HttpClassifier, HttpLimit, Rejection, Release};
use crate::{InvalidLimit, Limiter, Partition, Policy};

/// Applies one shared limit to HTTP services: permits held until the
/// response body ends, overload answered with a response. See the
/// [module docs](crate::http).
///
/// `C` classifies responses for an adaptive limiter; the default,
/// [`HttpClassifier`], goes by status code.
#[derive(Debug, Clone)]
pub struct HttpLimitLayer<C = HttpClassifier> {
    config: Arc<Config>,
    classifier: C,
}

/// What every service of one layer shares, behind one `Arc`: `layer()`
/// (called per route, and per connection by axum) and each request clone
/// the `Arc`, never the configuration.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) limiter: Limiter,
    pub(super) policy: Policy,
    pub(super) release: Release,
    pub(super) rejection: Rejection,
    pub(super) honor_retry_after: Option<Duration>,
    pub(super) rules: Rules,
}

impl HttpLimitLayer {
    /// A limit of `max` in flight: waits when full (see
    /// [`policy`](Self::policy)), releases when the body ends.
    ///
    /// # Panics
    ///
    /// If `max` is 0 or above [`InvalidLimit::MAX`], naming the value;
    /// [`try_new`](Self::try_new) returns the error instead.
    #[track_caller]
    pub fn new(max: usize) -> Self {
        Self::from_limiter(Limiter::new(max))
    }

    /// A limit of `max`, or why `max` cannot be one.
    pub fn try_new(max: usize) -> Result<Self, InvalidLimit> {
        Limiter::try_new(max).map(Self::from_limiter)
    }

    /// A layer on an existing, possibly shared, limiter.
    pub fn from_limiter(limiter: Limiter) -> Self {
        Self {
            config: Arc::new(Config {
                limiter,
                policy: Policy::wait(),
                release: Release::BodyEnd,
                rejection: Rejection::default(),
                honor_retry_after: None,
                rules: Rules::default(),
            }),
            classifier: HttpClassifier,
        }
    }
}

impl<C> HttpLimitLayer<C> {
    /// Decides what each response tells an adaptive limiter (see
    /// [`Classify`](crate::adaptive::Classify)); the default is
    /// [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> HttpLimitLayer<C2> {
        HttpLimitLayer {
            config: self.config,
            classifier,
        }
    }

    /// For clients: when the upstream answers `503` or `429` with a
    /// `Retry-After` (seconds or a date), admit no new request for that long,
    /// but at most `max` (see [`Limiter::hold_until`]). Requests in flight
    /// go on; queued ones wait out the hold within their policy's timeout,
    /// and a policy that does not queue refuses them with
    /// [`Reason::Held`](crate::Reason::Held). Off by default: on a server,
    /// one handler's `503` would hold the whole app.
    pub fn honor_retry_after(mut self, max: Duration) -> Self {
        Arc::make_mut(&mut self.config).honor_retry_after = Some(max);
        self
    }

    /// What a request does when every permit is taken: wait (the default),
    /// be refused at once, or queue a bounded time. A refused request is
    /// answered with the [`rejection`](Self::rejection) response.
    pub fn policy(mut self, policy: Policy) -> Self {
        Arc::make_mut(&mut self.config).policy = policy;
        self
    }

    /// When the permit is given back: at the end of the body (the default)
    /// or when the response head is ready.
    pub fn release(mut self, release: Release) -> Self {
        Arc::make_mut(&mut self.config).release = release;
        self
    }

    /// The response a refused request gets (default: 503, `Retry-After: 1`).
    pub fn rejection(mut self, rejection: Rejection) -> Self {
        Arc::make_mut(&mut self.config).rejection = rejection;
        self
    }

    /// Lets requests for which `rule` is true skip the limit entirely, such
    /// as health checks and readiness probes: they take no permit, are never
    /// refused, and are counted in [`Limiter::bypassed`].
    ///
    /// ```
    /// use tower_concurrency::http::HttpLimitLayer;
    ///
    /// let layer = HttpLimitLayer::new(64).bypass(|head| head.uri.path() == "/health");
    /// # let _ = layer;
    /// ```
    pub fn bypass(
        mut self,
        rule: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.config).rules.bypass = Some(Arc::new(rule));
        self
    }

    /// Places each request in a partition of a
    /// [partitioned](Limiter::partitioned) limiter; `None` means it matched
    /// no partition and only gets spare capacity.
    ///
    /// ```
    /// use tower_concurrency::http::HttpLimitLayer;
    /// use tower_concurrency::Limiter;
    ///
    /// let (limiter, [live, batch]) = Limiter::new(100).partitioned([("live", 0.9), ("batch", 0.1)])?;
    /// let layer = HttpLimitLayer::from_limiter(limiter).partition_by(move |head| {
    ///     match head.header("x-priority") {
    ///         Some("batch") => Some(batch),
    ///         _ => Some(live),
    ///     }
    /// });
    /// # let _ = layer;
    /// # Ok::<(), tower_concurrency::InvalidShares>(())
    /// ```
    pub fn partition_by(
        mut self,
        rule: impl Fn(&RequestHead<'_>) -> Option<Partition> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.config).rules.partition = Some(Arc::new(rule));
        self
    }

    /// At most `per_key` requests in flight for each key that `key` finds in
    /// a request (a client IP, an API key, a tenant), on top of the overall
    /// limit; requests without a key are limited only overall.
    ///
    /// A request over its key's limit is refused at once with
    /// [`Reason::KeyFull`](crate::Reason::KeyFull), answered with `429` by
    /// default (see [`Rejection::per_key_status`]); the answer names only
    /// that the caller's own key was full. A key takes memory only while it
    /// has requests in flight, and at most `max_keys` keys are tracked at
    /// once: past that, a request with a new key is refused with
    /// [`Reason::TooManyKeys`](crate::Reason::TooManyKeys) (fail closed),
    /// while keys already tracked go on.
    ///
    /// # Panics
    ///
    /// If `per_key` or `max_keys` is 0, naming the value.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use tower_concurrency::http::HttpLimitLayer;
    ///
    /// // per client IP, from axum's ConnectInfo (serve with
    /// // `into_make_service_with_connect_info::<SocketAddr>()`)
    /// let by_ip = HttpLimitLayer::new(256).limit_per_key(8, 100_000, |head| {
    ///     head.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
    /// });
    /// // per tenant, from a header set by a gateway you trust
    /// let by_tenant = HttpLimitLayer::new(256)
    ///     .limit_per_key(16, 10_000, |head| head.header("x-tenant").map(str::to_owned));
    /// # let _ = (by_ip, by_tenant);
    /// ```
    #[track_caller]
    pub fn limit_per_key<K, F>(mut self, per_key: usize, max_keys: usize, key: F) -> Self
    where
        K: std::hash::Hash,
        F: Fn(&RequestHead<'_>) -> Option<K> + Send + Sync + 'static,
    {
        assert!(
            per_key > 0,
            "invalid per-key limit {per_key}: a key must be allowed at least 1 request in flight"
        );
        assert!(
            max_keys > 0,
            "invalid number of tracked keys {max_keys}: at least 1 key must be tracked"
        );
        let table = Arc::new(KeyTable::new(per_key, max_keys));
        let hashing = Arc::clone(&table);
        let rule = move |head: &RequestHead<'_>| key(head).map(|k| hashing.hash(&k));
        Arc::make_mut(&mut self.config).rules.key = Some((table, Arc::new(rule)));
        self
    }

    /// The limiter every service from this layer shares.
    pub fn limiter(&self) -> &Limiter {
        &self.config.limiter
    }
}

impl<S, C: Clone> Layer<S> for HttpLimitLayer<C> {
    type Service = HttpLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let config = Arc::clone(&self.config);
        HttpLimit::new(inner, config, self.classifier.clone())
    }
}
