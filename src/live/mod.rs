//! Live updates: one LISTEN connection per instance wakes the local subscribers of a login,
//! who re-read it from PostgreSQL rather than trust the notification. After a reconnect (what
//! was sent meanwhile is lost) every subscriber is woken to re-read: that is the catch-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod cache;
pub mod notify;

pub const CHANNEL: &str = "facepair_events";

#[derive(Clone, Default)]
pub struct Hub {
    logins: Arc<Mutex<HashMap<Uuid, Followed>>>,
    /// Rows read by this instance, dropped by the same changes that wake subscribers.
    pub cache: Arc<cache::Cache>,
}

/// A login with subscribers here.
struct Followed {
    wake: watch::Sender<u64>,
    /// The newest event number a wake-up is known to have followed the commit of (from the
    /// NOTIFY's payload or this instance's own change); 0 while none is known.
    announced: i32,
}

/// A wake-up channel for one login; dropping the last one frees the entry.
pub struct Subscription {
    login_id: Uuid,
    rx: watch::Receiver<u64>,
    hub: Hub,
}

impl Subscription {
    /// Resolves when the login may have changed since the subscription was made or last woke.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // the hub never drops a sender that has receivers; park rather than spin
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut logins = self.hub.logins.lock().unwrap();
        if let Some(followed) = logins.get(&self.login_id)
            && followed.wake.receiver_count() <= 1
        {
            logins.remove(&self.login_id);
        }
    }
}

impl Hub {
    pub fn subscribe(&self, login_id: Uuid) -> Subscription {
        let mut logins = self.logins.lock().unwrap();
        let followed = logins.entry(login_id).or_insert_with(|| Followed {
            wake: watch::channel(0).0,
            announced: 0,
        });
        Subscription {
            login_id,
            rx: followed.wake.subscribe(),
            hub: self.clone(),
        }
    }

    /// The login changed: its cached row goes and its subscribers re-read it. `seq`, when
    /// known, is the event number the change reached (committed before this call).
    pub fn changed(&self, login_id: Uuid, seq: Option<i32>) {
        self.cache.changed(&login_id);
        if let Some(followed) = self.logins.lock().unwrap().get_mut(&login_id) {
            followed.announced = followed.announced.max(seq.unwrap_or(0));
            followed.wake.send_modify(|n| *n += 1);
        }
    }

    fn wake_all(&self) {
        self.cache.reset(true);
        for followed in self.logins.lock().unwrap().values() {
            followed.wake.send_modify(|n| *n += 1);
        }
    }

    /// The followed logins and the newest event number each one's subscribers are known to have
    /// been woken after (0: none).
    fn announced(&self) -> HashMap<Uuid, i32> {
        let logins = self.logins.lock().unwrap();
        logins.iter().map(|(id, f)| (*id, f.announced)).collect()
    }

    /// Forgets the number announced for a login if it is still `number`.
    fn forget_announced(&self, login_id: &Uuid, number: i32) {
        if let Some(followed) = self.logins.lock().unwrap().get_mut(login_id)
            && followed.announced == number
        {
            followed.announced = 0;
        }
    }

    pub fn subscribers(&self) -> usize {
        self.logins
            .lock()
            .unwrap()
            .values()
            .map(|followed| followed.wake.receiver_count())
            .sum()
    }
}

/// Holds the instance's one LISTEN connection until `stop`, reconnecting with backoff.
pub async fn listen(hub: Hub, connect: sqlx::postgres::PgConnectOptions, stop: CancellationToken) {
    // its own connection, outside the request pool, so a busy pool never silences it
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(connect);
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            // anything sent while we were away is re-read by every subscriber, and the cache
            // (empty from here on) may be used again
            hub.wake_all();
            backoff = Duration::from_millis(100);
            // `None`: the connection dropped; notifications sent until we listen again are lost
            while let Some(n) = listener.try_recv().await? {
                if let Some((id, seq)) = parse_payload(n.payload()) {
                    hub.changed(id, seq);
                }
            }
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = session => {
                hub.cache.reset(false);
                let reason = result.err().map(|e| e.to_string()).unwrap_or_else(|| "connection closed".into());
                tracing::warn!(error = %reason, retry_in_ms = backoff.as_millis() as u64, "LISTEN connection lost");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A NOTIFY's payload: `<login id> <event number>`, or the login id alone (as instances before
/// the event number was sent write it).
fn parse_payload(payload: &str) -> Option<(Uuid, Option<i32>)> {
    match payload.split_once(' ') {
        Some((id, seq)) => Some((id.parse().ok()?, Some(seq.parse().ok()?))),
        None => Some((payload.parse().ok()?, None)),
    }
}

/// Wakes local subscribers of logins that changed unheard (a NOTIFY lost to a crash or a failed
/// batch) and drops their cached rows: one query per period compares the newest event number of
/// every login followed here with the newest a wake-up is known to have followed (announced,
/// or woken by the last pass), and of every login cached here with its cached row's.
pub async fn backstop(hub: Hub, pool: sqlx::PgPool, period: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: HashMap<Uuid, i32> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // what was announced before the query reads the database committed before it
        let announced = hub.announced();
        let mut ids: Vec<Uuid> = announced.keys().copied().collect();
        ids.extend(hub.cache.ids());
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            seen.clear();
            continue;
        }
        match crate::store::events::newest(&pool, &ids).await {
            Ok(newest) => {
                let mut now_seen = HashMap::with_capacity(newest.len());
                for (login_id, seq) in newest {
                    let stale = match announced.get(&login_id) {
                        // followed: a wake-up after its commit, or the last pass's
                        Some(&number) => {
                            // above the database yet announced before the query: never
                            // committed (a forged NOTIFY, transactions a failover lost)
                            let number = if number > seq {
                                hub.forget_announced(&login_id, number);
                                0
                            } else {
                                number
                            };
                            number.max(seen.get(&login_id).copied().unwrap_or(0)) < seq
                        }
                        // only cached: a row other than the database's is dropped
                        None => hub.cache.event_seq(&login_id).is_some_and(|c| c != seq),
                    };
                    if stale {
                        hub.changed(login_id, Some(seq));
                    }
                    now_seen.insert(login_id, seq);
                }
                seen = now_seen;
            }
            Err(e) => tracing::debug!(error = %e, "backstop query failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_a_login_and_perhaps_its_event() {
        let id = Uuid::now_v7();
        assert_eq!(parse_payload(&format!("{id} 7")), Some((id, Some(7))));
        assert_eq!(parse_payload(&id.to_string()), Some((id, None)));
        for bad in ["", "7", &format!("{id} x"), &format!("{id} 7 8"), "x 7"] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
    }
}
