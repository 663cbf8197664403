//! At most N requests in flight per key (client IP, API key, tenant).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{InvalidLimit, Reason, Rejected};

/// The shard is picked from the top `SHARD_BITS` bits of a key's hash.
const SHARD_BITS: u32 = 5;
const SHARDS: usize = 1 << SHARD_BITS;

/// A shard's map from key hashes to counts. The keys are hashes already
/// (seeded SipHash), so the map does not hash them again: see [`PassThrough`].
type Shard = HashMap<u64, usize, BuildHasherDefault<PassThrough>>;

/// Hands a key's hash to the shard's map as its own hash, without the
/// shard bits: they are the same for every key of a shard, and the map
/// uses the top 7 bits of a hash as tags and the low bits to pick a
/// bucket, so the shard bits are shifted out and the low bits kept.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        (self.0 << SHARD_BITS) | (self.0 & (SHARDS as u64 - 1))
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); fold anything else.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// How many requests each key may have in flight, and how many keys are
/// tracked at once: the argument of
/// [`HttpLimitLayer::limit_per_key`](super::HttpLimitLayer::limit_per_key).
///
/// ```
/// use tower_concurrency::http_limit::KeyLimit;
///
/// let limit = KeyLimit::new(16).max_keys(100_000);
/// assert_eq!((limit.per_key(), limit.keys()), (16, 100_000));
/// assert_eq!(KeyLimit::new(16).keys(), KeyLimit::DEFAULT_MAX_KEYS);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a key limit does nothing until `limit_per_key` uses it"]
pub struct KeyLimit {
    per_key: usize,
    max_keys: usize,
}

impl KeyLimit {
    /// How many keys are tracked at once unless [`max_keys`](Self::max_keys)
    /// says otherwise.
    pub const DEFAULT_MAX_KEYS: usize = 65_536;

    /// At most `per_key` requests in flight for each key, and at most
    /// [`DEFAULT_MAX_KEYS`](Self::DEFAULT_MAX_KEYS) keys tracked at once.
    ///
    /// # Panics
    ///
    /// If `per_key` is 0 or above [`InvalidLimit::MAX`], naming the value;
    /// [`try_new`](Self::try_new) returns the error instead.
    #[track_caller]
    pub fn new(per_key: usize) -> Self {
        Self::try_new(per_key).unwrap_or_else(|_| {
            panic!(
                "invalid per-key limit {per_key}: a key must be allowed from 1 to {} requests in flight",
                InvalidLimit::MAX
            )
        })
    }

    /// Like [`new`](Self::new), but an invalid `per_key` is returned as an
    /// error.
    ///
    /// ```
    /// use tower_concurrency::http_limit::KeyLimit;
    ///
    /// assert_eq!(KeyLimit::try_new(8).unwrap().per_key(), 8);
    /// assert_eq!(KeyLimit::try_new(0).unwrap_err().value(), 0);
    /// ```
    pub fn try_new(per_key: usize) -> Result<Self, InvalidLimit> {
        Ok(Self {
            per_key: InvalidLimit::check(per_key)?,
            max_keys: Self::DEFAULT_MAX_KEYS,
        })
    }

    /// Tracks at most `max_keys` keys with requests in flight at once; a
    /// request with a new key past that is refused
    /// ([`Reason::TooManyKeys`]). This bounds the table's memory whatever
    /// clients send.
    ///
    /// # Panics
    ///
    /// If `max_keys` is 0, naming the value.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    #[track_caller]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        assert!(
            max_keys > 0,
            "invalid number of tracked keys {max_keys}: at least 1 key must be tracked"
        );
        self.max_keys = max_keys;
        self
    }

    /// Requests in flight allowed per key.
    pub fn per_key(&self) -> usize {
        self.per_key
    }

    /// Keys tracked at most at once.
    pub fn keys(&self) -> usize {
        self.max_keys
    }
}

/// The keys with requests in flight, and how many each.
///
/// Keys are kept as 64-bit hashes under a random per-table seed, so a
/// tracked key costs a few words whatever its size, and an entry exists only
/// while its key has something in flight: a million keys seen once each
/// leave nothing behind, and the room a burst of keys in flight took is
/// given back as they finish. Distinct keys whose hashes collide (about one pair
/// in 2^32 among 65,536 keys in flight at once) share a count.
pub(super) struct KeyTable {
    per_key: usize,
    max_keys: usize,
    hasher: RandomState,
    tracked: AtomicUsize,
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("per_key", &self.per_key)
            .field("max_keys", &self.max_keys)
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl KeyTable {
    pub(super) fn new(limit: KeyLimit) -> Self {
        Self {
            per_key: limit.per_key,
            max_keys: limit.max_keys,
            hasher: RandomState::new(),
            tracked: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub(super) fn hash(&self, key: &impl Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Keys with something in flight now.
    pub(super) fn tracked(&self) -> usize {
        self.tracked.load(SeqCst)
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let shard = &self.shards[(hash >> (u64::BITS - SHARD_BITS)) as usize];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more request of key `hash`, or says why not.
    pub(super) fn enter(self: &Arc<Self>, hash: u64) -> Result<KeyPermit, Rejected> {
        let mut shard = self.shard(hash);
        match shard.get_mut(&hash) {
            Some(count) if *count >= self.per_key => {
                return Err(Rejected::new(
                    Reason::KeyFull,
                    self.per_key,
                    Default::default(),
                ))
            }
            Some(count) => *count += 1,
            None => {
                let room = self
                    .tracked
                    .fetch_update(SeqCst, SeqCst, |t| (t < self.max_keys).then_some(t + 1));
                if room.is_err() {
                    return Err(Rejected::new(
                        Reason::TooManyKeys,
                        self.max_keys,
                        Default::default(),
                    ));
                }
                shard.insert(hash, 1);
            }
        }
        Ok(KeyPermit {
            table: Arc::clone(self),
            hash,
        })
    }

    fn leave(&self, hash: u64) {
        let mut shard = self.shard(hash);
        let emptied = shard.get_mut(&hash).is_some_and(|count| {
            *count -= 1;
            *count == 0
        });
        if emptied {
            shard.remove(&hash);
            self.tracked.fetch_sub(1, SeqCst);
            // Give back what a burst of keys grew, without shrinking and
            // growing again at every key.
            let len = shard.len();
            if shard.capacity() > 64 && len * 4 < shard.capacity() {
                shard.shrink_to(len * 2);
            }
        }
    }
}

/// One request counted against its key; dropping it gives the count back.
#[derive(Debug)]
pub(super) struct KeyPermit {
    table: Arc<KeyTable>,
    hash: u64,
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        self.table.leave(self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_forgets_idle_keys() {
        let table = Arc::new(KeyTable::new(KeyLimit::new(2).max_keys(3)));
        let (a, b) = (table.hash(&"a"), table.hash(&"b"));
        let a1 = table.enter(a).unwrap();
        let a2 = table.enter(a).unwrap();
        assert_eq!(table.enter(a).unwrap_err().reason(), Reason::KeyFull);
        let b1 = table.enter(b).unwrap();
        assert_eq!(table.tracked(), 2);
        drop((a1, a2));
        assert_eq!(table.tracked(), 1, "an idle key takes no memory");
        drop(b1);
        assert_eq!(table.tracked(), 0);
        assert!(table.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn keys_spread_over_shards_by_their_top_bits() {
        let table = Arc::new(KeyTable::new(KeyLimit::new(1).max_keys(10_000)));
        let held: Vec<_> = (0..4096u32)
            .map(|k| table.enter(table.hash(&k)).unwrap())
            .collect();
        let sizes: Vec<usize> = table
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4096);
        // 128 per shard on average: every shard is used, none is crowded.
        assert!(sizes.iter().all(|&n| (64..=192).contains(&n)), "{sizes:?}");
        drop(held);
        assert_eq!(table.tracked(), 0);
    }

    #[test]
    fn pass_through_keeps_the_low_bits_and_drops_the_shard_bits() {
        let mut hasher = PassThrough::default();
        hasher.write_u64(0xF800_0000_0000_0001);
        assert_eq!(
            hasher.finish(),
            0x21,
            "the shard bits are gone, the low bits kept"
        );
        let mut hasher = PassThrough::default();
        hasher.write_u64(0x07FF_FFFF_FFFF_FFE0);
        assert_eq!(hasher.finish(), 0xFFFF_FFFF_FFFF_FC00);
    }

    #[test]
    fn refuses_new_keys_past_the_cap() {
        let table = Arc::new(KeyTable::new(KeyLimit::new(5).max_keys(2)));
        let held: Vec<_> = (0..2)
            .map(|k| table.enter(table.hash(&k)).unwrap())
            .collect();
        let err = table.enter(table.hash(&99)).unwrap_err();
        assert_eq!(err.reason(), Reason::TooManyKeys);
        let again = table.enter(table.hash(&0)).unwrap();
        drop((held, again));
        assert!(table.enter(table.hash(&99)).is_ok());
    }
}
