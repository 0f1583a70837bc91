//! The NOTIFYs that wake every instance's listeners, sent in batches on a connection held for
//! the purpose: one per HTTP worker, on the worker's thread, and one for background tasks.
//!
//! A platform's request that made a change waits until a batch that includes it was sent, so
//! its answer follows its NOTIFY; a webhook's answer does not wait (`Announcement::queue`).
//! Under load the batches grow by themselves: while one is being sent, the next collects
//! every change that arrives meanwhile, and each listener is woken once per batch instead of
//! once per change. A batch that cannot be sent is logged and dropped; listeners then catch
//! up from the events table (the backstop).

use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CHANNEL;

/// How long a change waits for its batch before answering anyway.
const WAIT_FOR_BATCH: Duration = Duration::from_secs(1);

pub struct Notifier {
    pending: Mutex<Pending>,
    wake: Notify,
    /// The number of the last batch sent; closed when the sender stops.
    sent: watch::Receiver<u64>,
}

#[derive(Default)]
struct Pending {
    ids: Vec<Uuid>,
    /// The batch the pending ids will go out in.
    batch: u64,
}

impl Notifier {
    /// The notifier and the task that sends its batches until `stop`.
    pub fn start(
        connect: PgConnectOptions,
        stop: CancellationToken,
    ) -> (std::sync::Arc<Self>, impl Future<Output = ()>) {
        let (sent_tx, sent) = watch::channel(0);
        let notifier = std::sync::Arc::new(Self {
            pending: Mutex::new(Pending {
                ids: Vec::new(),
                batch: 1,
            }),
            wake: Notify::new(),
            sent,
        });
        let task = sender(notifier.clone(), connect, sent_tx, stop);
        (notifier, task)
    }

    /// Resolves once a NOTIFY for `login_id` was sent (or could not be).
    pub async fn notify(&self, login_id: Uuid) {
        let batch = self.enqueue(login_id);
        let mut sent = self.sent.clone();
        let _ = tokio::time::timeout(WAIT_FOR_BATCH, sent.wait_for(|&n| n >= batch)).await;
    }

    /// Puts `login_id` in the next batch without waiting for it; returns the batch's number.
    pub fn enqueue(&self, login_id: Uuid) -> u64 {
        let batch = {
            let mut pending = self.pending.lock().unwrap();
            if !pending.ids.contains(&login_id) {
                pending.ids.push(login_id);
            }
            pending.batch
        };
        self.wake.notify_one();
        batch
    }

    fn take(&self) -> (Vec<Uuid>, u64) {
        let mut pending = self.pending.lock().unwrap();
        let batch = pending.batch;
        pending.batch += 1;
        (std::mem::take(&mut pending.ids), batch)
    }
}

async fn sender(
    notifier: std::sync::Arc<Notifier>,
    connect: PgConnectOptions,
    sent: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    loop {
        let stopping = tokio::select! {
            _ = notifier.wake.notified() => false,
            _ = stop.cancelled() => true,
        };
        // let the requests whose answers arrived in the same turn of the runtime commit and
        // join this batch: it goes out after the runtime next polls its sockets
        tokio::task::yield_now().await;
        let (ids, batch) = notifier.take();
        if !ids.is_empty()
            && let Err(e) = send(&mut conn, &connect, &ids).await
        {
            conn = None;
            tracing::warn!(error = %e, logins = ids.len(), "NOTIFY failed; listeners catch up from the events table");
        }
        sent.send_replace(batch);
        if stopping {
            return;
        }
    }
}

async fn send(
    conn: &mut Option<PgConnection>,
    connect: &PgConnectOptions,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if conn.is_none() {
        // a NOTIFY stores nothing, and a crash loses it whether it was flushed or not: its
        // commit need not wait for the disk. The changes it announces committed durably
        // before it was sent.
        let connect = connect.clone().options([("synchronous_commit", "off")]);
        *conn = Some(PgConnection::connect_with(&connect).await?);
    }
    let conn = conn.as_mut().expect("connected above");
    sqlx::query!(
        "select pg_notify($1, id::text) from unnest($2::uuid[]) as id",
        CHANNEL,
        ids
    )
    .execute(conn)
    .await?;
    Ok(())
}
