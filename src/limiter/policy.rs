use std::time::Duration;

/// What a request does when every permit is taken.
///
/// - [`Policy::wait`]: queue without bound or deadline (backpressure, what
///   tower's limit does).
/// - [`Policy::reject`]: refuse at once.
/// - [`Policy::fifo`] and [`Policy::lifo`]: queue, but at most `max`
///   requests, each for at most the [`timeout`](Policy::timeout) if one is
///   set; beyond that, refuse.
///
/// Under overload, LIFO serves the freshest request first: the oldest ones
/// are the likeliest to have been given up by their clients already.
///
/// ```
/// use std::time::Duration;
/// use tower_concurrency::Policy;
///
/// let policy = Policy::lifo(100).timeout(Duration::from_millis(250));
/// assert_eq!(policy.max_waiting(), Some(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a policy does nothing until a layer or `Limiter::admit` uses it"]
pub struct Policy {
    max_waiting: Option<usize>,
    timeout: Option<Duration>,
    order: Order,
}

/// The order in which queued requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// First in, first out: the longest waiting is served first.
    #[default]
    Fifo,
    /// Last in, first out: the newest waiting is served first.
    Lifo,
}

impl Policy {
    /// Wait in line for as long as it takes (the default).
    pub const fn wait() -> Self {
        Self {
            max_waiting: None,
            timeout: None,
            order: Order::Fifo,
        }
    }

    /// Refuse at once when every permit is taken.
    pub const fn reject() -> Self {
        Self {
            max_waiting: Some(0),
            timeout: None,
            order: Order::Fifo,
        }
    }

    /// Wait in a queue of at most `max` requests, oldest served first.
    pub const fn fifo(max: usize) -> Self {
        Self {
            max_waiting: Some(max),
            timeout: None,
            order: Order::Fifo,
        }
    }

    /// Wait in a queue of at most `max` requests, newest served first.
    pub const fn lifo(max: usize) -> Self {
        Self {
            max_waiting: Some(max),
            timeout: None,
            order: Order::Lifo,
        }
    }

    /// Gives up waiting after `timeout`.
    #[must_use = "`timeout` returns a new policy; the policy it is called on is unchanged"]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many may wait at once; `None` is no bound, `Some(0)` rejects.
    pub const fn max_waiting(&self) -> Option<usize> {
        self.max_waiting
    }

    /// How long one request may wait, if bounded.
    pub const fn wait_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The order queued requests are served in.
    pub const fn order(&self) -> Order {
        self.order
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::wait()
    }
}
