//! Per-request rules of the HTTP layer: bypass, partition and key.

use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Request, Uri};

use super::keyed::KeyTable;
use crate::Partition;

/// What the HTTP layer's rules see of a request: its head, whatever the
/// body type.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI (path and query; on a client, the full URI).
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions, for example axum's `ConnectInfo` or a matched route.
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)?.to_str().ok()
    }
}

pub(super) type Rule<T> = Arc<dyn Fn(&RequestHead<'_>) -> T + Send + Sync>;

/// The rules a layer applies to each request before admission.
#[derive(Clone, Default)]
pub(super) struct Rules {
    pub(super) bypass: Option<Rule<bool>>,
    pub(super) partition: Option<Rule<Option<Partition>>>,
    pub(super) key: Option<(Arc<KeyTable>, Rule<Option<u64>>)>,
}

impl Rules {
    /// Whether no rule is set, so a request's head need not be looked at.
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(super) fn is_empty(&self) -> bool {
        self.bypass.is_none() && self.partition.is_none() && self.key.is_none()
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("bypass", &self.bypass.is_some())
            .field("partition", &self.partition.is_some())
            .field("key", &self.key.as_ref().map(|(table, _)| table))
            .finish()
    }
}
