//! Why a fleet could not start or do what it was asked.

use std::fmt;
use std::time::Duration;

use crate::InvalidLimit;

/// Why a [`Fleet`](super::Fleet) could not connect, or a call on it failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetError {
    /// The fleet's name cannot be used.
    InvalidName {
        /// The name given.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// The limit is 0 or too large.
    InvalidLimit(InvalidLimit),
    /// A setting of the builder is out of range.
    InvalidConfig(String),
    /// The Redis URL cannot be parsed.
    InvalidUrl {
        /// The URL, its password hidden.
        url: String,
        /// What redis-rs said.
        source: redis::RedisError,
    },
    /// Redis refused the credentials.
    Auth {
        /// The URL, its password hidden.
        url: String,
        /// What redis-rs said.
        source: redis::RedisError,
    },
    /// Redis could not be reached or did not answer.
    Unreachable {
        /// The URL, its password hidden (`None` for a connection given).
        url: Option<String>,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store call did not finish within its time limit.
    Timeout(Duration),
    /// The fleet is closed.
    Closed,
}

impl FleetError {
    pub(crate) fn from_redis(url: Option<&str>, source: redis::RedisError) -> Self {
        let url_text = url.map(hide_password);
        let auth = source.kind() == redis::ErrorKind::AuthenticationFailed || {
            let text = source.to_string();
            text.contains("WRONGPASS")
                || text.contains("NOAUTH")
                || text.contains("invalid password")
        };
        match (auth, url_text) {
            (true, url) => Self::Auth {
                url: url.unwrap_or_else(|| "the connection given".into()),
                source,
            },
            (false, url) => Self::Unreachable {
                url,
                source: Box::new(source),
            },
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub(crate) fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name, reason } => {
                write!(f, "invalid fleet name {name:?}: {reason}")
            }
            Self::InvalidLimit(e) => write!(f, "invalid fleet limit: {e}"),
            Self::InvalidConfig(why) => write!(f, "invalid fleet setting: {why}"),
            Self::InvalidUrl { url, source } => {
                write!(f, "invalid Redis URL {url:?}: {source}")
            }
            Self::Auth { url, source } => write!(
                f,
                "Redis at {url} refused the credentials (wrong password or user?): {source}"
            ),
            Self::Unreachable {
                url: Some(url),
                source,
            } => {
                write!(f, "cannot reach Redis at {url}: {source}")
            }
            Self::Unreachable { url: None, source } => write!(f, "cannot reach Redis: {source}"),
            Self::Timeout(after) => write!(f, "Redis did not answer within {after:?}"),
            Self::Closed => write!(f, "the fleet is closed"),
        }
    }
}

impl std::error::Error for FleetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidLimit(e) => Some(e),
            Self::InvalidUrl { source, .. } | Self::Auth { source, .. } => Some(source),
            Self::Unreachable { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(hide_password("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(hide_password("redis://u:s3cret@h"), "redis://u:***@h");
        assert_eq!(hide_password("redis://h:6379"), "redis://h:6379");
    }
}
