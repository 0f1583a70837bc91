//! Records codes whose time is up as expired (source: clock). Readers already see them as
//! expired; this writes it down once, even with several instances racing: each move happens
//! under the login's row lock and the state machine refuses a second one.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::domain::{AttemptEvent, EventKind, LoginStatus, Source};
use crate::service::Context;
use crate::service::{self, view};
use crate::store::attempts::{self, IdenfyReport};
use crate::store::changes::{self, Change, NewEvent, StatusChange};
use crate::store::logins;

const BATCH: i64 = 200;

pub async fn run(state: Context, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.settings.expiry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match expire_due(&state).await {
            Ok(n) => {
                state.metrics.expiry_runs.inc();
                state.metrics.expired_by_clock.inc_by(n);
            }
            Err(e) => {
                state.metrics.expiry_failures.inc();
                tracing::warn!(error = %crate::error::error_chain(&e), "expiry run failed; retrying next tick");
            }
        }
    }
}

/// One pass; returns how many attempts this instance recorded as expired.
///
/// Readers see a code as expired from `expires_at` on. With reconciliation on, the record is
/// written a grace period later, after asking iDenfy what became of the session: a webhook
/// lost on the way shows up here as iDenfy's status on an expired attempt (source:
/// reconciliation). What readers saw stays true: the attempt is recorded as expired either
/// way. Without an answer from iDenfy it is recorded from facepair's clock.
pub async fn expire_due(state: &Context) -> Result<u64, sqlx::Error> {
    let grace = state
        .settings
        .reconcile_after
        .map_or(0.0, |d| d.as_secs_f64());
    let due = attempts::due_for_expiry(&state.pool, grace, BATCH).await?;
    let mut expired = 0;
    for item in due {
        // asked before the transaction: no connection is held while iDenfy answers
        let (source, report) = match state.settings.reconcile_after {
            Some(_) => reconcile(state, &item.idenfy_token).await,
            None => (Source::Clock, IdenfyReport::default()),
        };
        let mut tx = state.pool.begin().await?;
        let Some(row) = logins::lock(&mut tx, item.login_id).await? else {
            continue;
        };
        let still_due =
            row.attempt.id == item.attempt_id && view::expired_by_clock(&row, Utc::now());
        if !still_due {
            continue;
        }
        let moved = service::move_attempt(
            &mut tx,
            &row,
            AttemptEvent::ClockExpired,
            source,
            &report,
            None,
            state.settings.approval_ttl,
        )
        .await?;
        let announcement = moved
            .as_ref()
            .map(|moved| service::Announcement::new(state, item.login_id, moved.seq));
        tx.commit().await?;
        if let Some(moved) = moved {
            moved.record(state);
            expired += 1;
        }
        if let Some(announcement) = announcement {
            announcement.send().await;
        }
    }
    expire_approvals(state).await?;
    Ok(expired)
}

/// Records approvals that were not redeemed in time as expired (event `approval_expired`), so
/// every live channel hears of it. Readers already see them as expired.
async fn expire_approvals(state: &Context) -> Result<(), sqlx::Error> {
    for login_id in logins::approvals_due(&state.pool, BATCH).await? {
        let mut tx = state.pool.begin().await?;
        let Some(row) = logins::lock(&mut tx, login_id).await? else {
            continue;
        };
        let status = view::effective(&row, Utc::now()).1;
        if row.status != LoginStatus::Approved || status == LoginStatus::Approved {
            continue;
        }
        let seq = changes::apply(
            &mut tx,
            Change {
                login_id,
                status,
                flags: StatusChange::default(),
                finish: None,
                event: NewEvent {
                    kind: EventKind::ApprovalExpired,
                    source: Source::Clock,
                    attempt_id: Some(row.attempt.id),
                    detail: serde_json::json!({ "attempt_number": row.attempt.number }),
                },
                delivery: None,
                read_at_seq: None,
            },
        )
        .await?;
        let announcement = service::Announcement::new(state, login_id, seq);
        tx.commit().await?;
        announcement.send().await;
        tracing::info!(%login_id, "approval expired unredeemed");
    }
    Ok(())
}

/// What iDenfy says of a session whose webhook never came.
async fn reconcile(state: &Context, token: &str) -> (Source, IdenfyReport) {
    let started = std::time::Instant::now();
    let result = state.idenfy.get_session(token).await;
    state.metrics.idenfy_call(
        "get_session",
        crate::idenfy::outcome(&result),
        started.elapsed(),
    );
    match result {
        Ok(session) => {
            let status = match session.approved {
                Some(true) => "SUCCESS",
                Some(false) => "FAILED",
                None => "NO_RESULT",
            };
            if session.approved.is_some() {
                tracing::warn!(
                    idenfy_status = status,
                    "iDenfy finished this session but its webhook never arrived"
                );
            }
            let report = IdenfyReport {
                idenfy_status: Some(status.to_owned()),
                idenfy_session_id: session.id,
                face_photo_url: session.face_photo,
                ..IdenfyReport::default()
            };
            (Source::Reconciliation, report)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not reconcile an expired session with iDenfy; recording facepair's clock");
            (Source::Clock, IdenfyReport::default())
        }
    }
}
