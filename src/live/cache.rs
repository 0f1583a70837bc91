//! The login rows this instance has read, so an unchanged login is answered without a database
//! round trip. Correct across instances because every change reaches every instance through
//! the LISTEN hub, which drops the entry:
//!
//! - an entry is used only while this instance's LISTEN connection is up; a reconnect (when
//!   notifications may have been lost) empties the cache;
//! - a read records the login's version first and stores its row only if no change arrived
//!   meanwhile, so a row read before a change is never cached after it;
//! - the clock's overlay (a code past its expiry reads as expired) is applied on every read,
//!   so a cached pending row never outlives its code.
//!
//! A change on another instance is visible here as soon as its NOTIFY arrives, which that
//! instance sends before it answers the request that made the change. Writes never read from
//! the cache: they lock the rows in PostgreSQL.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::store::logins::LoginRow;

const SLOTS: usize = 1024;
/// Past this many entries the cache starts over; a miss only costs a read.
const CAPACITY: usize = 20_000;

pub struct Cache {
    /// Read-locked by every cached read, write-locked by stores and changes.
    entries: RwLock<HashMap<Uuid, Arc<LoginRow>>>,
    /// Bumped by every change of a login hashing to the slot.
    versions: Box<[AtomicU64]>,
    /// Bumped whenever everything must be considered changed.
    epoch: AtomicU64,
    usable: AtomicBool,
    hasher: RandomState,
}

/// What a reader saw before reading, to store its row only if nothing changed meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    epoch: u64,
    slot: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            versions: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            usable: AtomicBool::new(false),
            hasher: RandomState::new(),
        }
    }
}

impl Cache {
    fn slot(&self, id: &Uuid) -> &AtomicU64 {
        &self.versions[(self.hasher.hash_one(id) as usize) % SLOTS]
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<LoginRow>> {
        if !self.usable.load(Ordering::Acquire) {
            return None;
        }
        self.entries.read().unwrap().get(id).cloned()
    }

    pub fn version(&self, id: &Uuid) -> Version {
        Version {
            epoch: self.epoch.load(Ordering::Acquire),
            slot: self.slot(id).load(Ordering::Acquire),
        }
    }

    pub fn store(&self, id: Uuid, seen: Version, row: Arc<LoginRow>) {
        if !self.usable.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.write().unwrap();
        // checked under the lock that `changed` also takes, so no change slips in between
        if self.version(&id) != seen {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(id, row);
    }

    pub fn changed(&self, id: &Uuid) {
        let mut entries = self.entries.write().unwrap();
        self.slot(id).fetch_add(1, Ordering::AcqRel);
        entries.remove(id);
    }

    /// Everything may have changed (the listener reconnected), or the cache must not be used
    /// until it is back (`usable = false`).
    pub fn reset(&self, usable: bool) {
        let mut entries = self.entries.write().unwrap();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.usable.store(usable, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Uuid) -> Arc<LoginRow> {
        Arc::new(LoginRow::sample(id, "pending", chrono::Utc::now()))
    }

    #[test]
    fn unusable_until_the_listener_is_up() {
        let cache = Cache::default();
        let id = Uuid::new_v4();
        cache.store(id, cache.version(&id), row(id));
        assert!(cache.get(&id).is_none());
        cache.reset(true);
        cache.store(id, cache.version(&id), row(id));
        assert!(cache.get(&id).is_some());
        cache.reset(false);
        assert!(cache.get(&id).is_none());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_stored() {
        let cache = Cache::default();
        cache.reset(true);
        let id = Uuid::new_v4();
        let seen = cache.version(&id);
        cache.changed(&id);
        cache.store(id, seen, row(id));
        assert!(cache.get(&id).is_none());
        let seen = cache.version(&id);
        cache.store(id, seen, row(id));
        assert!(cache.get(&id).is_some());
        cache.changed(&id);
        assert!(cache.get(&id).is_none(), "a change drops the entry");
    }

    #[test]
    fn a_reconnect_invalidates_reads_in_flight() {
        let cache = Cache::default();
        cache.reset(true);
        let id = Uuid::new_v4();
        let seen = cache.version(&id);
        cache.reset(true);
        cache.store(id, seen, row(id));
        assert!(cache.get(&id).is_none());
    }
}
