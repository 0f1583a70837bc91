//! Recording one verified webhook delivery: stored raw with its verdict, and the state change
//! it causes, in one statement. The caller answers 2xx only after it committed.

use chrono::Utc;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::domain::Verdict;
use crate::domain::{AttemptEvent, Source, network};
use crate::error::ApiError;
use crate::idenfy::{WebhookBody, WebhookStatus};
use crate::service::Context;
use crate::service::{self, view};
use crate::store::attempts::{self, IdenfyReport};
use crate::store::deliveries::{self, Claimed, NewDelivery};
use sqlx::PgConnection;

pub struct Received<'a> {
    pub body: &'a [u8],
    pub signing_key_index: usize,
    pub content_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
}

pub struct Recorded {
    pub delivery_id: Uuid,
    pub verdict: Verdict,
}

/// How many times a delivery is judged again because its login changed between the read and
/// the write. Each time needs another change of that login to commit in that instant.
const TRIES: usize = 8;

pub async fn record(state: &Context, received: Received<'_>) -> Result<Recorded, ApiError> {
    let sha: [u8; 32] = Sha256::digest(received.body).into();
    let parsed = WebhookBody::parse(received.body);
    let body = parsed.as_ref().ok();
    let delivery = NewDelivery {
        id: Uuid::now_v7(),
        body: received.body,
        body_sha256: &sha,
        content_type: received.content_type,
        event_type: received.event_type,
        signing_key_index: received.signing_key_index as i32,
        token: body.and_then(|b| b.token.as_deref()),
        idenfy_status: body.map(|b| b.status.as_str()),
        verdict: Verdict::Unparseable,
        attempt_id: None,
        login_id: None,
        detail: None,
    };
    // no transaction: one read, then one statement that stores the delivery with the change
    // it causes, if the login is still as read
    let mut conn = state.pool.acquire().await?;
    let mut tries = 1;
    let stored = loop {
        match store(state, &mut conn, &parsed, delivery).await {
            Err(sqlx::Error::RowNotFound) if tries < TRIES => tries += 1,
            Err(sqlx::Error::RowNotFound) => {
                tracing::warn!(
                    tries,
                    "a webhook's login kept changing while it was judged; answered 503 for iDenfy to retry"
                );
                return Err(ApiError::DatabaseUnavailable(sqlx::Error::RowNotFound));
            }
            done => break done?,
        }
    };
    drop(conn);

    let (delivery_id, verdict, login_id) = (delivery.id, stored.verdict, stored.login_id);
    state.metrics.delivery(verdict, received.signing_key_index);
    tracing::info!(%delivery_id, verdict = verdict.as_str(), login_id = login_id.map(tracing::field::display), "webhook recorded");
    if let Some((moved, announcement)) = stored.moved {
        moved.record(state);
        // iDenfy reads nothing back: its answer need not wait for the NOTIFY, and every
        // webhook answered sooner leaves PostgreSQL fewer commits to flush one at a time
        announcement.queue();
    }
    Ok(Recorded {
        delivery_id,
        verdict,
    })
}

/// A delivery as stored, and the change it made with its announcement, to be queued.
struct Stored<'s> {
    verdict: Verdict,
    login_id: Option<Uuid>,
    moved: Option<(service::Moved, service::Announcement<'s>)>,
}

/// Judges a delivery from one read and stores it, with the change it causes (if any) in the
/// same statement. `RowNotFound` when the login changed after the read: nothing was stored.
async fn store<'s>(
    state: &'s Context,
    conn: &mut PgConnection,
    parsed: &Result<WebhookBody, serde_json::Error>,
    d: NewDelivery<'_>,
) -> Result<Stored<'s>, sqlx::Error> {
    let body = match parsed {
        Ok(body) => body,
        Err(e) => {
            let detail = format!(
                "line {} column {}: {}",
                e.line(),
                e.column(),
                format!("{:?}", e.classify()).to_lowercase()
            );
            return insert(conn, d, Verdict::Unparseable, Some(&detail)).await;
        }
    };
    let claimed = match body.token.as_deref() {
        Some(token) => deliveries::find_by_token(conn, d.body_sha256, token).await?,
        None => None,
    };
    let Some(Claimed {
        row,
        attempt_id,
        seen,
    }) = claimed
    else {
        // a duplicate of an unknown-token body is still a duplicate
        let verdict = match deliveries::seen(conn, d.body_sha256).await? {
            true => Verdict::Duplicate,
            false => Verdict::UnknownToken,
        };
        return insert(conn, d, verdict, None).await;
    };
    let d = NewDelivery {
        login_id: Some(row.id),
        attempt_id: Some(attempt_id),
        ..d
    };
    if seen {
        return insert(conn, d, Verdict::Duplicate, None).await;
    }
    if !body.is_face_matching_authentication() {
        let detail = format!(
            "type {:?}, method {:?}",
            body.kind.as_deref().unwrap_or_default(),
            body.method.as_deref().unwrap_or_default()
        );
        return insert(conn, d, Verdict::UnexpectedType, Some(&detail)).await;
    }
    if body
        .scan_ref
        .as_deref()
        .is_some_and(|s| Some(s) != row.scan_ref.as_deref())
    {
        return insert(conn, d, Verdict::ScanRefMismatch, None).await;
    }
    let outcome = match WebhookStatus::parse(&body.status) {
        WebhookStatus::Outcome(o) => o,
        WebhookStatus::Unknown(_) => return insert(conn, d, Verdict::UnknownStatus, None).await,
    };
    if row.attempt.id != attempt_id {
        // an older attempt: it ended when the next code was issued
        let verdict = settled_verdict(conn, attempt_id).await?;
        return insert(conn, d, verdict, None).await;
    }
    // made before the write: a sender that leaves while the write waits for the login's row
    // leaves a statement that may still commit, and its change is announced all the same
    let announcement = service::Announcement::new(state, row.id, row.event_seq + 1);
    // facepair's clock may already show this code expired: what readers saw stays true
    let now = Utc::now();
    let (verdict, moved) = if view::expired_by_clock(&row, now) {
        let late = NewDelivery {
            verdict: Verdict::Late,
            ..d
        };
        let moved = service::end_current(
            conn,
            &row,
            now,
            AttemptEvent::ClockExpired,
            Source::Clock,
            Some(&late),
        )
        .await;
        (Verdict::Late, moved)
    } else {
        let report = IdenfyReport {
            idenfy_status: Some(body.status.clone()),
            fail_reason: body.fail_reason.clone(),
            risk_tags: body.risk_tags.clone(),
            idenfy_session_id: body.id.clone(),
            client_id: body.client_id.clone(),
            phone_ip: body.ip_address.clone(),
            face_photo_url: body.face_photo.clone(),
            network_match: Some(network::compare(
                row.client_ip.as_deref(),
                body.ip_address.as_deref(),
            )),
        };
        let applied = NewDelivery {
            verdict: Verdict::Applied,
            ..d
        };
        let moved = service::move_attempt(
            conn,
            &row,
            AttemptEvent::Idenfy(outcome),
            Source::Webhook,
            &report,
            Some(&applied),
            state.settings.approval_ttl,
        )
        .await;
        (Verdict::Applied, moved)
    };
    let moved = match moved {
        Err(sqlx::Error::RowNotFound) => {
            // the login changed after the read: nothing was written
            announcement.forget();
            return Err(sqlx::Error::RowNotFound);
        }
        // any other failure may have come after the commit: dropped, it announces the login
        moved => moved?,
    };
    match moved {
        // stored by the change's own statement
        Some(moved) => Ok(Stored {
            verdict,
            login_id: Some(row.id),
            moved: Some((moved, announcement)),
        }),
        None => {
            announcement.forget();
            let verdict = match verdict {
                Verdict::Late => Verdict::Late,
                _ => settled_verdict(conn, attempt_id).await?,
            };
            insert(conn, d, verdict, None).await
        }
    }
}

/// Stores a delivery that changed nothing.
async fn insert<'s>(
    conn: &mut PgConnection,
    d: NewDelivery<'_>,
    verdict: Verdict,
    detail: Option<&str>,
) -> Result<Stored<'s>, sqlx::Error> {
    deliveries::insert(
        conn,
        &NewDelivery {
            verdict,
            detail,
            ..d
        },
    )
    .await?;
    Ok(Stored {
        verdict,
        login_id: d.login_id,
        moved: None,
    })
}

/// For an attempt that had already ended: was it iDenfy that ended it, or facepair?
async fn settled_verdict(
    conn: &mut PgConnection,
    attempt_id: Uuid,
) -> Result<Verdict, sqlx::Error> {
    let source = attempts::outcome_source(conn, attempt_id).await?;
    Ok(match source {
        Some(Source::Webhook | Source::Reconciliation) => Verdict::AttemptTerminal,
        _ => Verdict::Late,
    })
}
