//! Records codes whose time is up as expired (source: clock). Readers already see them as
//! expired; this writes it down once, even with several instances racing: each move happens
//! under the login's row lock and the state machine refuses a second one.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::domain::{AttemptEvent, AttemptStatus, Source};
use crate::service::{self, view};
use crate::store::attempts::{self, IdenfyReport};
use crate::store::logins;

const BATCH: i64 = 200;

pub async fn run(state: AppState, stop: CancellationToken) {
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
                state.metrics.expired_by_clock.add(n);
            }
            Err(e) => {
                state.metrics.expiry_failures.inc();
                tracing::warn!(error = %crate::error::error_chain(&e), "expiry run failed; retrying next tick");
            }
        }
    }
}

/// One pass; returns how many attempts this instance recorded as expired.
pub async fn expire_due(state: &AppState) -> Result<u64, sqlx::Error> {
    let due = attempts::due_for_expiry(&state.pool, BATCH).await?;
    let mut expired = 0;
    for (login_id, attempt_id) in due {
        let mut tx = state.pool.begin().await?;
        let Some(row) = logins::lock(&mut tx, login_id).await? else {
            continue;
        };
        let still_due = row.attempt.id == attempt_id
            && row.attempt.status == AttemptStatus::Pending.as_str()
            && view::effective(&row, Utc::now()).0 == AttemptStatus::Expired;
        if !still_due {
            continue;
        }
        let moved = service::move_attempt(
            &mut tx,
            &row,
            AttemptEvent::ClockExpired,
            Source::Clock,
            &IdenfyReport::default(),
            None,
        )
        .await?;
        tx.commit().await?;
        if let Some(moved) = moved {
            moved.record(state);
            expired += 1;
            service::notify(state, login_id).await;
        }
    }
    Ok(expired)
}
