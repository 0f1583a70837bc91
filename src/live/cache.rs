//! Login rows this instance has read, so an unchanged login costs no round trip. Entries are used
//! only while LISTEN is up and dropped by every change (a row read before a change is never
//! stored after it); rows unread between two sweeps go. Writers lock rows in PostgreSQL instead.

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
    /// Read-locked by every cached read, write-locked by stores, changes and sweeps.
    entries: RwLock<HashMap<Uuid, Entry>>,
    /// Bumped by every change of a login hashing to the slot.
    versions: Box<[AtomicU64]>,
    /// Bumped whenever everything must be considered changed.
    epoch: AtomicU64,
    usable: AtomicBool,
    hasher: RandomState,
}

struct Entry {
    row: Arc<LoginRow>,
    /// Read since the last sweep (storing it counts: the store followed a read).
    read: AtomicBool,
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
        let entries = self.entries.read().unwrap();
        let entry = entries.get(id)?;
        // only the first read after a sweep writes: readers of a hot row do not contend on it
        if !entry.read.load(Ordering::Relaxed) {
            entry.read.store(true, Ordering::Relaxed);
        }
        Some(entry.row.clone())
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
        entries.insert(
            id,
            Entry {
                row,
                read: AtomicBool::new(true),
            },
        );
    }

    /// Drops the rows nobody read since the last sweep; returns how many. They are freed
    /// after the lock is released, so readers wait only for the walk.
    pub fn sweep(&self) -> usize {
        let mut entries = self.entries.write().unwrap();
        let gone: Vec<Entry> = entries
            .extract_if(|_, entry| !entry.read.swap(false, Ordering::Relaxed))
            .map(|(_, entry)| entry)
            .collect();
        if entries.is_empty() {
            // a wave's worth of buckets goes too
            entries.shrink_to_fit();
        }
        drop(entries);
        gone.len()
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

    /// The logins cached now.
    pub fn ids(&self) -> Vec<Uuid> {
        self.entries.read().unwrap().keys().copied().collect()
    }

    /// The newest event number of the cached row, if one is cached.
    pub fn event_seq(&self, id: &Uuid) -> Option<i32> {
        Some(self.entries.read().unwrap().get(id)?.row.event_seq)
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
        Arc::new(LoginRow::sample(
            id,
            crate::domain::AttemptStatus::Pending,
            chrono::Utc::now(),
        ))
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
    fn rows_nobody_read_between_two_sweeps_are_dropped() {
        let cache = Cache::default();
        cache.reset(true);
        let (read, unread) = (Uuid::new_v4(), Uuid::new_v4());
        for id in [read, unread] {
            cache.store(id, cache.version(&id), row(id));
        }
        // a store follows a read: both survive the first sweep
        assert_eq!(cache.sweep(), 0);
        assert!(cache.get(&read).is_some());
        assert_eq!(cache.sweep(), 1);
        assert!(
            cache.get(&read).is_some(),
            "a row read since the last sweep stays"
        );
        assert!(cache.get(&unread).is_none());
        assert_eq!(cache.sweep(), 0);
        assert_eq!(cache.sweep(), 1);
        assert!(cache.is_empty());
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
