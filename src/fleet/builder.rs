//! A fleet's configuration, and connecting it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use super::error::hide_password;
use super::redis_store::RedisStore;
#[cfg(test)]
use super::store::Store;
use super::{Fleet, FleetError, Mode};
use crate::InvalidLimit;

/// The longest fleet name accepted.
const MAX_NAME: usize = 200;

/// Builds a [`Fleet`]: see [`Fleet::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it connects"]
pub struct FleetBuilder {
    config: Config,
}

/// A fleet's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) limit: usize,
    pub(crate) ttl: Duration,
    pub(crate) mode: Mode,
    pub(crate) call_timeout: Duration,
    pub(crate) batch: usize,
    pub(crate) max_idle: usize,
    pub(crate) idle_return: Duration,
    pub(crate) wait: Duration,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) drain_poll: Duration,
}

impl Config {
    /// How often the lease is renewed.
    pub(crate) fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// The longest pause between two asks of a queued session: 250 ms, or
    /// less with a short TTL, so that a crashed process's permits reach a
    /// waiter within one TTL and one renewal.
    pub(crate) fn retry_max(&self) -> Duration {
        self.retry_max.min(self.renew_every() / 2)
    }

    /// How long after sending a renewal that succeeded its lease is
    /// trusted: the TTL less a margin for clock rate and scheduling.
    pub(crate) fn validity(&self) -> Duration {
        self.ttl
            - (self.ttl / 10)
                .max(Duration::from_millis(50))
                .min(self.ttl / 3)
    }

    fn check(&self) -> Result<(), FleetError> {
        check_name(&self.name)?;
        InvalidLimit::check(self.limit).map_err(FleetError::InvalidLimit)?;
        if self.ttl < Duration::from_millis(30) {
            return Err(FleetError::InvalidConfig(format!(
                "lease ttl {:?} is below the minimum of 30ms",
                self.ttl
            )));
        }
        if self.call_timeout.is_zero() || self.call_timeout * 2 > self.ttl {
            return Err(FleetError::InvalidConfig(format!(
                "call timeout {:?} must be above 0 and at most half the lease ttl {:?}",
                self.call_timeout, self.ttl
            )));
        }
        if self.batch == 0 {
            return Err(FleetError::InvalidConfig(
                "batch 0: a process must be able to ask for at least 1 permit".into(),
            ));
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), FleetError> {
    let reason = if name.is_empty() {
        "a fleet needs a name: every process using the same name shares one limit"
    } else if name.len() > MAX_NAME {
        "longer than 200 bytes"
    } else if name.contains(['{', '}']) {
        "braces are not allowed: the name goes inside the keys' hash tag {tc:<name>}"
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "whitespace and control characters are not allowed"
    } else {
        return Ok(());
    };
    Err(FleetError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

impl FleetBuilder {
    pub(crate) fn new(name: impl Into<String>, limit: usize) -> Self {
        Self {
            config: Config {
                name: name.into(),
                limit,
                ttl: Duration::from_secs(10),
                mode: Mode::LocalShare,
                call_timeout: Duration::from_millis(250),
                batch: 16,
                max_idle: 16,
                idle_return: Duration::from_millis(100),
                wait: Duration::from_secs(1),
                retry_min: Duration::from_millis(10),
                retry_max: Duration::from_millis(250),
                drain_poll: Duration::from_millis(5),
            },
        }
    }

    /// How long a process's lease lasts without a renewal (10 s by
    /// default, at least 30 ms); it is renewed every third of it. A
    /// crashed process's permits come back within one TTL.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// What to admit once the lease expired because Redis does not answer
    /// ([`Mode::LocalShare`] by default).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// How long one Redis call may take before it counts as failed
    /// (250 ms by default; at most half the TTL).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// The most permits a process asks for beyond its waiting requests in
    /// one call (16 by default). Redis caps every grant at a fair block of
    /// the free permits, so a saturated fleet grants one at a time.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn batch(mut self, batch: usize) -> Self {
        self.config.batch = batch;
        self
    }

    /// The most idle permits a process keeps (16 by default): beyond that,
    /// idle permits go back after 100 ms. Idle permits go back at once
    /// when another process waits.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn max_idle(mut self, max_idle: usize) -> Self {
        self.config.max_idle = max_idle;
        self
    }

    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`),
    /// with a connection manager that reconnects by itself and a second
    /// connection for wake-up hints.
    pub async fn connect(self, url: &str) -> Result<Fleet, FleetError> {
        self.config.check()?;
        let client = redis::Client::open(url).map_err(|source| FleetError::InvalidUrl {
            url: hide_password(url),
            source,
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.call_timeout * 4))
            .set_response_timeout(Some(self.config.call_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), manager)
            .await
            .map_err(|e| FleetError::from_redis(Some(url), e))?;
        let store = RedisStore::new(conn, &self.config.name, Some(client));
        Fleet::start(self.config, Arc::new(store), Some(url)).await
    }

    /// Uses a connection you made: a [`ConnectionManager`], a multiplexed
    /// connection, or a Redis Cluster connection (redis-rs's
    /// `cluster-async` feature). Without a client of its own the fleet
    /// hears no wake-up hints and relies on its timed retries alone.
    pub async fn connection<C>(self, conn: C) -> Result<Fleet, FleetError>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.config.check()?;
        let store = RedisStore::new(conn, &self.config.name, None);
        Fleet::start(self.config, Arc::new(store), None).await
    }

    /// Starts on any store (the in-memory one in tests).
    #[cfg(test)]
    pub(crate) async fn store(self, store: Arc<dyn Store>) -> Result<Fleet, FleetError> {
        self.config.check()?;
        Fleet::start(self.config, store, None).await
    }

    #[cfg(test)]
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("payments-api").is_ok());
        for bad in ["", "a{b", "a b", "x}"] {
            let e = check_name(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert!(check_name(&"n".repeat(201)).is_err());
    }

    #[test]
    fn settings_are_checked() {
        let ok = FleetBuilder::new("a", 4).config;
        assert!(ok.check().is_ok());
        let zero = FleetBuilder::new("a", 0).config.check().unwrap_err();
        assert!(zero.to_string().contains("limit 0"), "{zero}");
        let short = FleetBuilder::new("a", 4).ttl(Duration::from_millis(5));
        assert!(short.config.check().is_err());
        let slow = FleetBuilder::new("a", 4).call_timeout(Duration::from_secs(6));
        assert!(slow
            .config
            .check()
            .unwrap_err()
            .to_string()
            .contains("call timeout"));
    }
}
