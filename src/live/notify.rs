//! Batched NOTIFYs on connections held for the purpose (one per HTTP worker, one for background
//! tasks). An awaited change (a platform's request) sends its batch at once; others gather up to
//! [`GATHER`], so every listener wakes once per batch. Failed batches are retried with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CHANNEL;
use crate::metrics::Metrics;

/// How long a change waits for its batch before answering anyway.
const WAIT_FOR_BATCH: Duration = Duration::from_secs(1);

/// How long after a batch went out the changes nobody waits for gather before the next one
/// goes: what other instances' readers may lag behind a webhook under load, this instance's
/// own being woken at once.
pub const GATHER: Duration = Duration::from_millis(5);

pub struct Notifier {
    pending: Mutex<Pending>,
    wake: Notify,
    /// The number of the last batch sent; closed when the sender stops.
    sent: watch::Receiver<u64>,
}

#[derive(Default)]
struct Pending {
    /// In the order they changed, each once, with the newest event number its changes are
    /// known to have committed (none if one of them is not known to have committed).
    ids: Vec<Uuid>,
    queued: HashMap<Uuid, Option<i32>>,
    /// The batch the pending ids will go out in.
    batch: u64,
    /// Someone waits for this batch: it goes out without gathering.
    awaited: bool,
}

impl Pending {
    fn push(&mut self, id: Uuid, seq: Option<i32>) {
        match self.queued.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut queued) => {
                let merged = seq.zip(*queued.get()).map(|(a, b)| a.max(b));
                *queued.get_mut() = merged;
            }
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(seq);
                self.ids.push(id);
            }
        }
    }
}

impl Notifier {
    /// The notifier and the task that sends its batches until `stop`. Changes nobody waits for
    /// gather up to `gather` until `hurry` is cancelled: the instance is stopping, and a worker's
    /// task would take what it gathered along when it ends.
    pub fn start(
        connect: PgConnectOptions,
        gather: Duration,
        hurry: CancellationToken,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Arc<Self>, impl Future<Output = ()>) {
        let (sent_tx, sent) = watch::channel(0);
        let notifier = Arc::new(Self {
            pending: Mutex::new(Pending {
                batch: 1,
                ..Pending::default()
            }),
            wake: Notify::new(),
            sent,
        });
        let task = sender(
            notifier.clone(),
            Sender {
                connect,
                gather,
                hurry,
                metrics,
            },
            sent_tx,
            stop,
        );
        (notifier, task)
    }

    /// Resolves once a batch holding `login_id` (whose committed events reached `seq`, if
    /// known) was sent, at once rather than after the gathering; false if it could not be sent
    /// within a second.
    pub async fn notify(&self, login_id: Uuid, seq: Option<i32>) -> bool {
        let batch = self.add(login_id, seq, true);
        let mut sent = self.sent.clone();
        matches!(
            tokio::time::timeout(WAIT_FOR_BATCH, sent.wait_for(|&n| n >= batch)).await,
            Ok(Ok(_))
        )
    }

    /// Puts `login_id` in the next batch without waiting for it; returns the batch's number.
    pub fn enqueue(&self, login_id: Uuid, seq: Option<i32>) -> u64 {
        self.add(login_id, seq, false)
    }

    fn add(&self, login_id: Uuid, seq: Option<i32>, awaited: bool) -> u64 {
        let batch = {
            let mut pending = self.pending.lock().unwrap();
            pending.push(login_id, seq);
            pending.awaited |= awaited;
            pending.batch
        };
        self.wake.notify_one();
        batch
    }

    /// Puts the logins of a batch that could not be sent back into the next one, up to
    /// [`REQUEUE_LIMIT`]; past it, the listeners' backstop finds them.
    fn requeue(&self, changes: &[(Uuid, Option<i32>)]) {
        let mut pending = self.pending.lock().unwrap();
        for &(id, seq) in changes {
            if pending.ids.len() >= REQUEUE_LIMIT {
                break;
            }
            pending.push(id, seq);
        }
    }

    fn awaited(&self) -> bool {
        self.pending.lock().unwrap().awaited
    }

    fn take(&self) -> (Vec<(Uuid, Option<i32>)>, u64) {
        let mut pending = self.pending.lock().unwrap();
        let batch = pending.batch;
        pending.batch += 1;
        pending.awaited = false;
        let ids = std::mem::take(&mut pending.ids);
        let changes = ids
            .into_iter()
            .map(|id| (id, pending.queued[&id]))
            .collect();
        pending.queued.clear();
        (changes, batch)
    }
}

struct Sender {
    connect: PgConnectOptions,
    gather: Duration,
    hurry: CancellationToken,
    metrics: Arc<Metrics>,
}

async fn sender(
    notifier: Arc<Notifier>,
    how: Sender,
    sent: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    // when the last batch went out
    let mut last: Option<Instant> = None;
    // after a batch could not be sent: when to try its logins again, and the wait after that
    let mut retry: Option<Instant> = None;
    let mut backoff = RETRY_FIRST;
    loop {
        let mut stopping = tokio::select! {
            _ = notifier.wake.notified() => false,
            _ = sleep_until_some(retry) => false,
            _ = stop.cancelled() => true,
        };
        // let the requests whose answers arrived in the same turn of the runtime commit and
        // join this batch: it goes out after the runtime next polls its sockets
        tokio::task::yield_now().await;
        if let Some(until) = last.map(|at| at + how.gather)
            && !stopping
            && Instant::now() < until
        {
            stopping = gather(&notifier, until, &how.hurry, &stop).await;
        }
        let (changes, batch) = notifier.take();
        let mut went_out = true;
        if !changes.is_empty() {
            last = Some(Instant::now());
            // a connection that failed is replaced at once, and the batch tried again on it
            let mut result = send(&mut conn, &how.connect, &changes).await;
            if result.is_err() {
                conn = None;
                result = send(&mut conn, &how.connect, &changes).await;
            }
            match result {
                Ok(()) => {
                    how.metrics.notify_batches.inc();
                    how.metrics.notify_logins.inc_by(changes.len() as u64);
                    retry = None;
                    backoff = RETRY_FIRST;
                }
                Err(e) => {
                    conn = None;
                    how.metrics.notify_failures.inc();
                    tracing::warn!(error = %e, logins = changes.len(), retry_in_ms = backoff.as_millis() as u64, "NOTIFY failed; the batch goes again with the next one");
                    notifier.requeue(&changes);
                    went_out = false;
                    retry = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        // a batch that failed is not reported sent: its waiters answer after their wait
        if went_out {
            sent.send_replace(batch);
        }
        if stopping {
            return;
        }
    }
}

/// The most logins kept for the next batch while NOTIFYs fail.
const REQUEUE_LIMIT: usize = 50_000;

/// The first wait before a failed batch is tried again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until `until`, while no one waits for the pending batch and the instance is not
/// stopping; true if stopped meanwhile.
async fn gather(
    notifier: &Notifier,
    until: Instant,
    hurry: &CancellationToken,
    stop: &CancellationToken,
) -> bool {
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    while !notifier.awaited() {
        tokio::select! {
            _ = &mut deadline => return false,
            _ = notifier.wake.notified() => {}
            _ = hurry.cancelled() => return false,
            _ = stop.cancelled() => return true,
        }
    }
    false
}

/// How long one batch may take to go out, connecting included: past it the connection is
/// taken for dead (a failover can leave a socket that never answers) and replaced.
const SEND_LIMIT: Duration = Duration::from_secs(2);

async fn send(
    conn: &mut Option<PgConnection>,
    connect: &PgConnectOptions,
    changes: &[(Uuid, Option<i32>)],
) -> Result<(), sqlx::Error> {
    let sent = tokio::time::timeout(SEND_LIMIT, send_now(conn, connect, changes)).await;
    sent.unwrap_or_else(|_| {
        Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the NOTIFY took longer than 2 s",
        )))
    })
}

async fn send_now(
    conn: &mut Option<PgConnection>,
    connect: &PgConnectOptions,
    changes: &[(Uuid, Option<i32>)],
) -> Result<(), sqlx::Error> {
    if conn.is_none() {
        // a NOTIFY stores nothing, and a crash loses it whether it was flushed or not: its
        // commit need not wait for the disk. The changes it announces committed durably
        // before it was sent.
        let mut fresh = PgConnection::connect_with(connect).await?;
        // set after connecting: PgBouncer refuses it as a startup parameter
        sqlx::query("set synchronous_commit = off")
            .execute(&mut fresh)
            .await?;
        *conn = Some(fresh);
    }
    let conn = conn.as_mut().expect("connected above");
    // event numbers start at 1: 0 stands for a number not known
    let (ids, seqs): (Vec<Uuid>, Vec<i32>) = changes
        .iter()
        .map(|&(id, seq)| (id, seq.unwrap_or(0)))
        .unzip();
    // the payload `<login id> <event number>`, or the id alone where the number is not known
    sqlx::query!(
        "select pg_notify($1, id::text || case when seq > 0 then ' ' || seq else '' end) from unnest($2::uuid[], $3::int4[]) as t(id, seq)",
        CHANNEL,
        &ids,
        &seqs
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_queued_twice_goes_once_with_its_newest_event() {
        let mut pending = Pending::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let c = Uuid::now_v7();
        pending.push(a, Some(3));
        pending.push(b, Some(1));
        pending.push(a, Some(2));
        pending.push(a, Some(5));
        // a change not known to have committed makes the login's number unknown
        pending.push(c, Some(4));
        pending.push(c, None);
        pending.push(c, Some(6));
        assert_eq!(pending.ids, [a, b, c]);
        assert_eq!(
            (pending.queued[&a], pending.queued[&b], pending.queued[&c]),
            (Some(5), Some(1), None)
        );
    }
}
