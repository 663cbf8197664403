use std::fmt;

/// A concurrency limit that cannot be used: zero, or more than the tokio
/// semaphore underneath can count.
///
/// Returned by the fallible constructors ([`Limiter::try_new`],
/// [`ConcurrencyLimitLayer::try_new`], [`ConcurrencyLimit::try_new`]) and by
/// [`Limiter::try_set_limit`]; the panicking constructors print the same
/// message.
///
/// [`Limiter::try_new`]: crate::Limiter::try_new
/// [`Limiter::try_set_limit`]: crate::Limiter::try_set_limit
/// [`ConcurrencyLimitLayer::try_new`]: crate::ConcurrencyLimitLayer::try_new
/// [`ConcurrencyLimit::try_new`]: crate::ConcurrencyLimit::try_new
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidLimit {
    value: usize,
}

impl InvalidLimit {
    /// The largest limit accepted: tokio's `Semaphore::MAX_PERMITS`.
    pub const MAX: usize = tokio::sync::Semaphore::MAX_PERMITS;

    /// Checks `value` and hands it back when it is a usable limit.
    pub(crate) fn check(value: usize) -> Result<usize, Self> {
        if (1..=Self::MAX).contains(&value) {
            Ok(value)
        } else {
            Err(Self { value })
        }
    }

    /// The value that was refused.
    pub fn value(&self) -> usize {
        self.value
    }
}

impl fmt::Display for InvalidLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value == 0 {
            write!(
                f,
                "invalid concurrency limit 0: a limit must allow at least 1 request in flight"
            )
        } else {
            write!(
                f,
                "invalid concurrency limit {}: the largest limit is {} (tokio's Semaphore::MAX_PERMITS)",
                self.value,
                Self::MAX
            )
        }
    }
}

impl std::error::Error for InvalidLimit {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_value() {
        let zero = InvalidLimit::check(0).unwrap_err();
        assert_eq!(zero.value(), 0);
        assert!(zero.to_string().contains("limit 0"));
        let huge = InvalidLimit::check(usize::MAX).unwrap_err();
        assert!(huge.to_string().contains(&usize::MAX.to_string()));
        assert!(huge.to_string().contains(&InvalidLimit::MAX.to_string()));
        assert_eq!(InvalidLimit::check(1), Ok(1));
        assert_eq!(
            InvalidLimit::check(InvalidLimit::MAX),
            Ok(InvalidLimit::MAX)
        );
    }
}
