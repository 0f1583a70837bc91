//! Recording one verified webhook delivery: stored raw with its verdict, and the state change
//! it causes, in one transaction. The caller answers 2xx only after this commits.

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
use crate::store::{self, logins};

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

pub async fn record(state: &Context, received: Received<'_>) -> Result<Recorded, ApiError> {
    let sha: [u8; 32] = Sha256::digest(received.body).into();
    let parsed = WebhookBody::parse(received.body);
    let body = parsed.as_ref().ok();
    let mut delivery = NewDelivery {
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

    let mut tx = store::begin_locked(&state.pool, deliveries::body_lock_key(&sha)).await?;
    let mut change = None;
    let detail;
    (delivery.verdict, detail) = match &parsed {
        Err(e) => (
            Verdict::Unparseable,
            Some(format!(
                "line {} column {}: {}",
                e.line(),
                e.column(),
                format!("{:?}", e.classify()).to_lowercase()
            )),
        ),
        Ok(body) => {
            let claimed = match body.token.as_deref() {
                Some(token) => deliveries::claim(&mut tx, &sha, token).await?,
                None => None,
            };
            match claimed {
                // a duplicate of an unknown-token body is still a duplicate
                None if deliveries::seen(&mut tx, &sha).await? => (Verdict::Duplicate, None),
                None => (Verdict::UnknownToken, None),
                Some(claimed) => {
                    delivery.login_id = Some(claimed.login_id);
                    delivery.attempt_id = Some(claimed.attempt_id);
                    if claimed.seen {
                        (Verdict::Duplicate, None)
                    } else {
                        let (verdict, moved) = judge(
                            &mut tx,
                            body,
                            &claimed,
                            &delivery,
                            state.settings.approval_ttl,
                        )
                        .await?;
                        change = moved;
                        let detail = (verdict == Verdict::UnexpectedType).then(|| {
                            format!(
                                "type {:?}, method {:?}",
                                body.kind.as_deref().unwrap_or_default(),
                                body.method.as_deref().unwrap_or_default()
                            )
                        });
                        (verdict, detail)
                    }
                }
            }
        }
    };
    delivery.detail = detail.as_deref();
    // an applied delivery was stored by the change's own statement
    if delivery.verdict != Verdict::Applied {
        deliveries::insert(&mut tx, &delivery).await?;
    }
    let login_id = delivery.login_id;
    let announcement = change
        .as_ref()
        .zip(login_id)
        .map(|(moved, login_id)| service::Announcement::new(state, login_id, moved.seq));
    tx.commit().await?;

    let (delivery_id, verdict) = (delivery.id, delivery.verdict);
    state.metrics.delivery(verdict, received.signing_key_index);
    tracing::info!(%delivery_id, verdict = verdict.as_str(), login_id = login_id.map(tracing::field::display), "webhook recorded");
    if let Some(moved) = change {
        moved.record(state);
    }
    // iDenfy reads nothing back: its answer need not wait for the NOTIFY, and every webhook
    // answered sooner leaves PostgreSQL fewer commits to flush one at a time
    if let Some(announcement) = announcement {
        announcement.queue();
    }
    Ok(Recorded {
        delivery_id,
        verdict,
    })
}

/// Decides a delivery for a known attempt, moving it when the state machine allows; the
/// delivery is then stored with the move.
async fn judge(
    tx: &mut sqlx::PgConnection,
    body: &WebhookBody,
    &Claimed {
        login_id,
        attempt_id,
        ..
    }: &Claimed,
    delivery: &NewDelivery<'_>,
    approval_ttl: std::time::Duration,
) -> Result<(Verdict, Option<service::Moved>), ApiError> {
    if !body.is_face_matching_authentication() {
        return Ok((Verdict::UnexpectedType, None));
    }
    // locked by `claim`; read after the lock, so no change made meanwhile is missed
    let row = logins::find(&mut *tx, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    if body
        .scan_ref
        .as_deref()
        .is_some_and(|s| Some(s) != row.scan_ref.as_deref())
    {
        return Ok((Verdict::ScanRefMismatch, None));
    }
    let outcome = match WebhookStatus::parse(&body.status) {
        WebhookStatus::Outcome(o) => o,
        WebhookStatus::Unknown(_) => return Ok((Verdict::UnknownStatus, None)),
    };
    if row.attempt.id != attempt_id {
        // an older attempt: it ended when the next code was issued
        return Ok((settled_verdict(tx, attempt_id).await?, None));
    }
    // facepair's clock may already show this code expired: what readers saw stays true
    let now = Utc::now();
    if view::expired_by_clock(&row, now) {
        let moved =
            service::end_current(tx, &row, now, AttemptEvent::ClockExpired, Source::Clock).await?;
        return Ok((Verdict::Late, moved));
    }
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
        ..*delivery
    };
    let moved = service::move_attempt(
        tx,
        &row,
        AttemptEvent::Idenfy(outcome),
        Source::Webhook,
        &report,
        Some(&applied),
        approval_ttl,
    )
    .await?;
    match moved {
        Some(moved) => Ok((Verdict::Applied, Some(moved))),
        None => Ok((settled_verdict(tx, attempt_id).await?, None)),
    }
}

/// For an attempt that had already ended: was it iDenfy that ended it, or facepair?
async fn settled_verdict(
    tx: &mut sqlx::PgConnection,
    attempt_id: Uuid,
) -> Result<Verdict, sqlx::Error> {
    let source = attempts::outcome_source(tx, attempt_id).await?;
    Ok(match source {
        Some(Source::Webhook | Source::Reconciliation) => Verdict::AttemptTerminal,
        _ => Verdict::Late,
    })
}
