//! Codes cost money at iDenfy: each is reserved in PostgreSQL, with the scan_ref's hourly
//! budgets counted under its lock, before iDenfy is called. The transaction that stores the
//! code removes the reservation; a failed or abandoned request releases it.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{ScanRef, network};
use crate::error::ApiError;
use crate::service::Context;
use crate::store::attempts::scan_ref_lock_key;
use crate::store::logins;
use crate::store::reservations::{self, NewReservation};

/// The address bucket a scan_ref's per-address budget is counted in.
pub fn requested_from(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), network::bucket)
}

/// A code reserved for one login. Dropped before [`Reservation::settled`] (iDenfy failed, the
/// client went away, the store failed), it is released in the background; its lease ends it
/// if the instance dies first.
#[must_use = "a reservation is settled once its code is stored"]
pub struct Reservation {
    pool: PgPool,
    id: Uuid,
    settled: bool,
}

impl Reservation {
    /// Reserves a code for `login_id`: 409 `code_being_issued` while another is being issued
    /// for it, 429 when the scan_ref's budget from `requested_from`, or from everywhere, is
    /// spent. For an `existing` login, its own rules are checked once the reservation is its
    /// only one: a code stored meanwhile by another request is seen.
    pub async fn take(
        state: &Context,
        login_id: Uuid,
        scan_ref: &ScanRef,
        requested_from: &str,
        existing: bool,
    ) -> Result<Self, ApiError> {
        let settings = &state.settings;
        // longer than the calls it covers: check-status and the session, each with a retry
        let lease = settings.idenfy_timeout * 4 + std::time::Duration::from_secs(10);
        let mut tx =
            crate::store::begin_locked(&state.pool, scan_ref_lock_key(scan_ref.as_str())).await?;
        let reservation = NewReservation {
            id: Uuid::now_v7(),
            login_id,
            scan_ref: scan_ref.as_str(),
            requested_from,
            lease_secs: lease.as_secs_f64(),
        };
        let used = reservations::used(
            &mut *tx,
            scan_ref.as_str(),
            requested_from,
            settings.max_attempts_per_scan_ref_hour,
            settings.max_attempts_per_scan_ref_hour_total,
        )
        .await?;
        if used.from_address >= settings.max_attempts_per_scan_ref_hour {
            return Err(spent(
                "this scan_ref was issued too many codes from this address in the last hour",
                "scan_ref_hourly",
                used.address_frees_at,
            ));
        }
        if used.total >= settings.max_attempts_per_scan_ref_hour_total {
            return Err(spent(
                "this scan_ref was issued too many codes in the last hour",
                "scan_ref_hourly_total",
                used.total_frees_at,
            ));
        }
        if !reservations::reserve(&mut tx, &reservation).await? {
            return Err(ApiError::CodeBeingIssued);
        }
        if existing {
            let row = logins::find(&mut *tx, login_id)
                .await?
                .ok_or(ApiError::LoginNotFound)?;
            super::ensure_code_allowed(&row, Utc::now())?;
        }
        // the guard exists before the commit, so a commit abandoned half-way is released too
        let guard = Self {
            pool: state.pool.clone(),
            id: reservation.id,
            settled: false,
        };
        tx.commit().await?;
        Ok(guard)
    }

    /// Removes the reservation in the transaction that stores its code.
    pub async fn remove(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        reservations::remove(conn, self.id).await
    }

    /// The transaction that removed the reservation committed.
    pub fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (pool, id) = (self.pool.clone(), self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = reservations::remove(&pool, id).await {
                    tracing::warn!(error = %e, "could not release a code reservation; its lease ends it");
                }
            });
        }
    }
}

fn spent(message: &'static str, budget: &'static str, frees_at: Option<DateTime<Utc>>) -> ApiError {
    let wait = frees_at.map_or(3600, |at| (at - Utc::now()).num_seconds().max(1) as u64);
    ApiError::BudgetExhausted {
        message,
        budget,
        retry_after: Some(wait),
    }
}
