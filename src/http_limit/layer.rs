use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::keyed::{KeyLimit, KeyTable};
use super::rules::{RequestHead, Rules};
use super::{HttpClassifier, HttpLimit, Rejection, Release};
use crate::{InvalidLimit, Limiter, Partition, Policy};

/// Applies one shared limit to HTTP services: permits held until the
/// response body ends, overload answered with a response. See the
/// [module docs](crate::http_limit).
///
/// `C` classifies responses for an adaptive limiter; the default,
/// [`HttpClassifier`], goes by status code.
#[derive(Debug, Clone)]
#[must_use = "a layer does nothing until it wraps a service"]
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
    pub(super) admission_record: bool,
    pub(super) rules: Rules,
    /// Classify as [`HttpClassifier`] does, whatever `C` is: set by
    /// [`ConcurrencyLimitLayer::http`](crate::ConcurrencyLimitLayer::http)
    /// when it had no classifier of its own.
    pub(super) classify_by_status: bool,
}

impl Config {
    pub(super) fn tracked_keys(&self) -> Option<usize> {
        self.rules.key.as_ref().map(|(table, _)| table.tracked())
    }
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
                admission_record: false,
                rules: Rules::default(),
                classify_by_status: false,
            }),
            classifier: HttpClassifier,
        }
    }
}

impl<C> HttpLimitLayer<C> {
    /// Decides what each response tells an adaptive limiter (see
    /// [`Classify`](crate::adaptive::Classify)); the default is
    /// [`HttpClassifier`]. A gRPC response whose status comes in its
    /// trailers and that the classifier counts as a success at its head is
    /// decided by the `grpc-status` of its trailers, as [`HttpClassifier`]
    /// describes.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn classifier<C2>(self, classifier: C2) -> HttpLimitLayer<C2> {
        self.classifier_from_core(classifier, true)
    }

    /// Takes `classifier`; unless `custom`, the layer classifies as
    /// [`HttpClassifier`] does.
    pub(crate) fn classifier_from_core<C2>(
        mut self,
        classifier: C2,
        custom: bool,
    ) -> HttpLimitLayer<C2> {
        if self.config.classify_by_status == custom {
            Arc::make_mut(&mut self.config).classify_by_status = !custom;
        }
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
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn honor_retry_after(mut self, max: Duration) -> Self {
        Arc::make_mut(&mut self.config).honor_retry_after = Some(max);
        self
    }

    /// Puts an [`Admission`](super::Admission) in each admitted request's
    /// extensions (how long it waited, in flight and the limit at its
    /// admission, its partition), for handlers to read. Off by default: it
    /// costs every request up to three allocations (the record, and when
    /// the request has no extensions yet, their map).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn admission_record(mut self, record: bool) -> Self {
        Arc::make_mut(&mut self.config).admission_record = record;
        self
    }

    /// What a request does when every permit is taken: wait (the default),
    /// be refused at once, or queue a bounded time. A refused request is
    /// answered with the [`rejection`](Self::rejection) response.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn policy(mut self, policy: Policy) -> Self {
        Arc::make_mut(&mut self.config).policy = policy;
        self
    }

    /// When the permit is given back: at the end of the body (the default)
    /// or when the response head is ready.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn release(mut self, release: Release) -> Self {
        Arc::make_mut(&mut self.config).release = release;
        self
    }

    /// The response a refused request gets (default: 503, `Retry-After: 1`).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn rejection(mut self, rejection: Rejection) -> Self {
        Arc::make_mut(&mut self.config).rejection = rejection;
        self
    }

    /// Lets requests for which `rule` is true skip the limit entirely, such
    /// as health checks and readiness probes: they take no permit, are never
    /// refused, and are counted in [`Limiter::bypassed`].
    ///
    /// ```
    /// use tower_concurrency::http_limit::HttpLimitLayer;
    ///
    /// let layer = HttpLimitLayer::new(64).bypass(|head| head.uri.path() == "/health");
    /// # let _ = layer;
    /// ```
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
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
    /// use tower_concurrency::http_limit::HttpLimitLayer;
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
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn partition_by(
        mut self,
        rule: impl Fn(&RequestHead<'_>) -> Option<Partition> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.config).rules.partition = Some(Arc::new(rule));
        self
    }

    /// At most [`KeyLimit`] requests in flight for each key that `key` finds
    /// in a request (a client IP, an API key, a tenant), on top of the
    /// overall limit; requests without a key are limited only overall.
    ///
    /// A request over its key's limit is refused at once with
    /// [`Reason::KeyFull`](crate::Reason::KeyFull), answered with `429` by
    /// default (see [`Rejection::per_key_status`]); the answer names only
    /// that the caller's own key was full. A key takes memory only while it
    /// has requests in flight, and at most [`KeyLimit::max_keys`] keys are
    /// tracked at once: past that, a request with a new key is refused with
    /// [`Reason::TooManyKeys`](crate::Reason::TooManyKeys) (fail closed),
    /// answered with the overall [`Rejection::status`] (`503` by default),
    /// while keys already tracked go on. [`tracked_keys`](Self::tracked_keys)
    /// says how many keys have requests in flight.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use tower_concurrency::http_limit::{HttpLimitLayer, KeyLimit};
    ///
    /// // per client IP, from axum's ConnectInfo (serve with
    /// // `into_make_service_with_connect_info::<SocketAddr>()`)
    /// let by_ip = HttpLimitLayer::new(256).limit_per_key(KeyLimit::new(8).max_keys(100_000), |head| {
    ///     head.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
    /// });
    /// // per tenant, from a header set by a gateway you trust
    /// let by_tenant = HttpLimitLayer::new(256)
    ///     .limit_per_key(KeyLimit::new(16), |head| head.header("x-tenant").map(str::to_owned));
    /// assert_eq!(by_tenant.tracked_keys(), Some(0));
    /// # let _ = by_ip;
    /// ```
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn limit_per_key<K, F>(mut self, limit: KeyLimit, key: F) -> Self
    where
        K: std::hash::Hash,
        F: Fn(&RequestHead<'_>) -> Option<K> + Send + Sync + 'static,
    {
        let table = Arc::new(KeyTable::new(limit));
        let hashing = Arc::clone(&table);
        let rule = move |head: &RequestHead<'_>| key(head).map(|k| hashing.hash(&k));
        Arc::make_mut(&mut self.config).rules.key = Some((table, Arc::new(rule)));
        self
    }

    /// How many keys have requests in flight now, under
    /// [`limit_per_key`](Self::limit_per_key); `None` without one.
    pub fn tracked_keys(&self) -> Option<usize> {
        self.config.tracked_keys()
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
