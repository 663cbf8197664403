use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::keyed::KeyPermit;
use super::layer::Config;
use super::rules::RequestHead;
use super::{HttpClassifier, ResponseBody, ResponseFuture};
use crate::adaptive::Classify;
use crate::admit_call::AdmitCall;
use crate::{Acquire, Limiter};

/// An HTTP service behind a shared concurrency limit: see the
/// [module docs](crate::http_limit). Built by [`HttpLimitLayer`](super::HttpLimitLayer).
#[derive(Debug, Clone)]
pub struct HttpLimit<S, C = HttpClassifier> {
    inner: S,
    config: Arc<Config>,
    classifier: C,
}

impl<S, C> HttpLimit<S, C> {
    pub(super) fn new(inner: S, config: Arc<Config>, classifier: C) -> Self {
        Self {
            inner,
            config,
            classifier,
        }
    }

    /// The limiter this service draws from.
    pub fn limiter(&self) -> &Limiter {
        &self.config.limiter
    }

    /// How many keys have requests in flight now, under the layer's
    /// [`limit_per_key`](super::HttpLimitLayer::limit_per_key); `None`
    /// without one.
    pub fn tracked_keys(&self) -> Option<usize> {
        self.config.tracked_keys()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for HttpLimit<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: Classify<Result<Response<ResBody>, S::Error>> + Clone,
    ResBody: Body,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (admit, key) = self.admission(&RequestHead::of(&request));
        self.start(admit, key, request)
    }
}

impl<S, C: Clone> HttpLimit<S, C> {
    /// Applies the layer's rules to a request: skip the limit (bypass), be
    /// refused by its key, or admit in its partition, counted in its key.
    pub(super) fn admission(&self, head: &RequestHead<'_>) -> (Option<Acquire>, Option<KeyPermit>) {
        let rules = &self.config.rules;
        if rules.bypass.as_ref().is_some_and(|bypass| bypass(head)) {
            self.config.limiter.count_bypass();
            return (None, None);
        }
        let key = rules
            .key
            .as_ref()
            .and_then(|(table, rule)| rule(head).map(|hash| table.enter(hash)));
        match key {
            Some(Err(refused)) => (Some(Acquire::rejected(&self.config.limiter, refused)), None),
            key => {
                let partition = rules.partition.as_ref().and_then(|rule| rule(head));
                let admit = self
                    .config
                    .limiter
                    .acquire_in(&self.config.policy, partition);
                (Some(admit), key.and_then(Result::ok))
            }
        }
    }

    /// Admission with no rule to apply.
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(super) fn admit_plain(&self) -> Acquire {
        self.config.limiter.acquire_in(&self.config.policy, None)
    }

    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(super) fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Starts admitting `request`, then calling the inner service.
    pub(super) fn start<Req>(
        &mut self,
        admit: Option<Acquire>,
        key: Option<KeyPermit>,
        request: Req,
    ) -> ResponseFuture<S, Req, C>
    where
        S: Service<Req> + Clone,
    {
        let timed = self.config.rejection.needs_timing();
        let call = AdmitCall::start(admit, &mut self.inner, request, timed);
        ResponseFuture::new(call, key, Arc::clone(&self.config), self.classifier.clone())
    }
}
