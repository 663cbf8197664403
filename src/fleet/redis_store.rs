//! The fleet's accounting on Redis: one Lua script per call, each the
//! shared prologue followed by its own body (EVALSHA, loaded again on
//! NOSCRIPT), and an optional subscriber for hints.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionLike;
use redis::Script;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::store::{Call, Hint, Op, Reply, Store, StoreFuture};

const PROLOGUE: &str = include_str!("scripts/prologue.lua");

/// The scripts, each prefixed with the prologue.
struct Scripts {
    join: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    reassert: Script,
    leave: Script,
    set_limit: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PROLOGUE}\n{body}"));
        Self {
            join: script(include_str!("scripts/join.lua")),
            acquire: script(include_str!("scripts/acquire.lua")),
            renew: script(include_str!("scripts/renew.lua")),
            release: script(include_str!("scripts/release.lua")),
            reassert: script(include_str!("scripts/reassert.lua")),
            leave: script(include_str!("scripts/leave.lua")),
            set_limit: script(include_str!("scripts/set_limit.lua")),
        }
    }
}

/// The keys of one limit: every one carries the hash tag `{tc:<name>}`,
/// so that on Redis Cluster they live in one slot.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) meta: String,
    pub(crate) exp: String,
    pub(crate) held: String,
    pub(crate) queue: String,
    pub(crate) qexp: String,
    pub(crate) channel: String,
}

impl Keys {
    pub(crate) fn new(name: &str) -> Self {
        let tag = format!("{{tc:{name}}}");
        Self {
            meta: format!("{tag}:meta"),
            exp: format!("{tag}:exp"),
            held: format!("{tag}:held"),
            queue: format!("{tag}:queue"),
            qexp: format!("{tag}:qexp"),
            channel: format!("{tag}:hint"),
        }
    }
}

/// A fleet's accounting on one Redis (or one Cluster slot).
pub(crate) struct RedisStore<C> {
    conn: C,
    keys: Keys,
    scripts: Arc<Scripts>,
    hints: Option<broadcast::Sender<Hint>>,
    subscriber: Option<JoinHandle<()>>,
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store on `conn`; with `client`, hints are also heard on a
    /// connection of their own, subscribed again after every reconnect.
    pub(crate) fn new(conn: C, name: &str, client: Option<redis::Client>) -> Self {
        let keys = Keys::new(name);
        let (hints, subscriber) = match client {
            Some(client) => {
                let (tx, _) = broadcast::channel(64);
                let task = tokio::spawn(subscribe(client, keys.channel.clone(), tx.clone()));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        Self {
            conn,
            keys,
            scripts: Arc::new(Scripts::new()),
            hints,
            subscriber,
        }
    }
}

/// Forwards the hints published on `channel` until nobody listens.
async fn subscribe(client: redis::Client, channel: String, tx: broadcast::Sender<Hint>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                backoff = Duration::from_millis(50);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Some(hint) = Hint::parse(message.get_payload_bytes()) {
                        let _ = tx.send(hint);
                    }
                }
            }
        }
        // The connection dropped: hints are only hints, so nothing is lost
        // but time; reconnect with a backoff.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

impl<C> Drop for RedisStore<C> {
    fn drop(&mut self) {
        if let Some(task) = self.subscriber.take() {
            task.abort();
        }
    }
}

impl<C> Store for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn call(&self, call: Call) -> StoreFuture<'_> {
        let mut conn = self.conn.clone();
        let scripts = Arc::clone(&self.scripts);
        Box::pin(async move {
            let (script, a, b) = match call.op {
                Op::Join => (&scripts.join, 0, 0),
                Op::Acquire { need, extra } => (&scripts.acquire, need, extra),
                Op::Renew => (&scripts.renew, 0, 0),
                Op::Release { n, dequeue } => (&scripts.release, n, u64::from(dequeue)),
                Op::Reassert { n } => (&scripts.reassert, n, 0),
                Op::Leave => (&scripts.leave, 0, 0),
                Op::SetLimit { limit } => (&scripts.set_limit, limit, 0),
            };
            let k = &self.keys;
            let values: Vec<i64> = script
                .key(&k.meta)
                .key(&k.exp)
                .key(&k.held)
                .key(&k.queue)
                .key(&k.qexp)
                .arg(&*call.session)
                .arg(call.ttl_ms)
                .arg(call.wait_ms)
                .arg(call.epoch)
                .arg(call.configured)
                .arg(&k.channel)
                .arg(a)
                .arg(b)
                .invoke_async(&mut conn)
                .await?;
            parse(&values)
                .ok_or_else(|| format!("unexpected reply from the fleet script: {values:?}").into())
        })
    }

    fn hints(&self) -> Option<broadcast::Receiver<Hint>> {
        self.hints.as_ref().map(broadcast::Sender::subscribe)
    }
}

/// Reads a script's reply; `None` if it is not one (no value from the
/// network may panic).
fn parse(values: &[i64]) -> Option<Reply> {
    let [lost, granted, held, limit, total, sessions, queued, is_queued, epoch, learning] =
        <[i64; 10]>::try_from(values).ok()?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Some(Reply {
        lost: lost != 0,
        granted: n(granted),
        held: n(held),
        limit: n(limit),
        total: n(total),
        sessions: n(sessions),
        queued: n(queued),
        is_queued: is_queued != 0,
        epoch: n(epoch),
        learning_ms: n(learning),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("payments-api");
        for key in [&keys.meta, &keys.exp, &keys.held, &keys.queue, &keys.qexp] {
            assert!(key.starts_with("{tc:payments-api}:"), "{key}");
        }
    }

    #[test]
    fn malformed_replies_are_refused() {
        assert_eq!(parse(&[1, 2, 3]), None);
        let reply = parse(&[0, 2, 3, 8, 5, 2, 1, 1, 1000, 0]).unwrap();
        assert_eq!((reply.granted, reply.held, reply.limit), (2, 3, 8));
        assert!(reply.is_queued && !reply.lost);
        assert_eq!(parse(&[0, -1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap().granted, 0);
    }
}
