//! Retention: identity data (scan_ref, user_ref, the desktop's IP and user agent, the phone's
//! IP, iDenfy's clientId, selfie URLs) is removed from logins past the identity window, raw
//! webhook bodies and finished event pushes' records past theirs. The anonymous outcome rows
//! stay for statistics. Idempotent;
//! never touches a login that is still pending.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Purged {
    pub logins: u64,
    pub attempts: u64,
    pub delivery_bodies: u64,
    /// Records of finished event pushes (their tries included) past the body window.
    pub push_records: u64,
}

pub async fn purge(
    pool: &PgPool,
    identity_older_than: chrono::Duration,
    bodies_older_than: chrono::Duration,
) -> Result<Purged, sqlx::Error> {
    let identity_secs = identity_older_than.num_seconds() as f64;
    let bodies_secs = bodies_older_than.num_seconds() as f64;
    let mut tx = pool.begin().await?;
    let logins = sqlx::query_scalar!(
        r#"
        update logins l
        set scan_ref = null, user_ref = null, client_ip = null, user_agent = null,
            desktop_place = null, purged_at = now()
        where l.purged_at is null
          and l.created_at < now() - make_interval(secs => $1)
          and l.status <> 'pending'
          and not (l.status = 'approved' and coalesce(l.approval_expires_at, l.approved_at) > now())
          and not exists (select 1 from attempts a where a.login_id = l.id and a.status = 'pending')
        returning l.id
        "#,
        identity_secs
    )
    .fetch_all(&mut *tx)
    .await?;
    let attempts = sqlx::query!(
        r#"
        update attempts
        set face_photo_url = null, phone_ip = null, client_id = null
        where login_id = any($1)
          and (face_photo_url is not null or phone_ip is not null or client_id is not null)
        "#,
        &logins
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let delivery_bodies = sqlx::query!(
        r#"
        update deliveries d
        set body = null, body_purged_at = now()
        where d.body is not null
          and (d.received_at < now() - make_interval(secs => $1)
               or exists (select 1 from logins l where l.id = d.login_id and l.purged_at is not null))
        "#,
        bodies_secs
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // a finished push's record, like a raw webhook body, is kept for the body window; the
    // public event itself stays (the feed's history, as the events table's)
    let push_records = sqlx::query!(
        r#"
        delete from event_deliveries d
        where d.state in ('delivered', 'failed', 'skipped')
          and d.finished_at < now() - make_interval(secs => $1)
        "#,
        bodies_secs
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Purged {
        logins: logins.len() as u64,
        attempts,
        delivery_bodies,
        push_records,
    })
}

/// The daily job: purges every `every`, until `stop`.
pub async fn run(
    pool: PgPool,
    every: Duration,
    identity: chrono::Duration,
    bodies: chrono::Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match purge(&pool, identity, bodies).await {
            Ok(p) => {
                // windows of abuse counters that ended long ago go with the daily run
                let windows = crate::store::limits::prune(&pool).await.unwrap_or(0);
                let reservations = crate::store::reservations::prune(&pool).await.unwrap_or(0);
                tracing::info!(
                    logins = p.logins,
                    attempts = p.attempts,
                    delivery_bodies = p.delivery_bodies,
                    rate_limit_windows = windows,
                    code_reservations = reservations,
                    "retention purge"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention purge failed; retrying at the next run")
            }
        }
    }
}
