//! Codes cost money at iDenfy: each is reserved in PostgreSQL, with the scan_ref's hourly
//! budgets counted under its lock, before iDenfy is called. The transaction that stores the
//! code removes the reservation. The work runs to its end in a task of its own, so a client
//! that leaves does not drop a session iDenfy already created.

use std::net::IpAddr;
use std::time::Duration;

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

/// The longest a code's issuing may take: both calls to iDenfy with their retries, and the
/// database's waits. A reservation's lease is longer, so it never ends while its work goes on.
pub fn issuing_limit(idenfy_timeout: Duration) -> Duration {
    idenfy_timeout * 4 + Duration::from_secs(20)
}

/// Runs the issuing of a code to its end in a task of its own, within [`issuing_limit`]: the
/// request that asked may be dropped (its client left), the session iDenfy creates is stored
/// all the same.
pub async fn to_completion<T, F>(state: &Context, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let limit = issuing_limit(state.settings.idenfy_timeout);
    crate::service::detached(async move {
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ApiError::IdenfyTimeout(
                crate::idenfy::IdenfyError::Timeout,
            )))
    })
    .await
}

/// A code reserved for one login. Dropped before [`Reservation::settled`], it is released in
/// the background, unless iDenfy may have created its session: then it is kept, spent, and
/// counts in the budgets for the hour. Its lease ends it if the instance dies first.
#[must_use = "a reservation is settled once its code is stored"]
pub struct Reservation {
    pool: PgPool,
    id: Uuid,
    settled: bool,
    /// A session may exist at iDenfy for this reservation.
    bought: bool,
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
        let lease = issuing_limit(settings.idenfy_timeout) + Duration::from_secs(10);
        let mut tx =
            crate::store::begin_locked(&state.pool, scan_ref_lock_key(scan_ref.as_str())).await?;
        let reservation = NewReservation {
            id: Uuid::now_v7(),
            login_id,
            scan_ref: scan_ref.as_str(),
            requested_from,
            lease_secs: lease.as_secs_f64(),
        };
        let used = reservations::reserve(
            &mut tx,
            &reservation,
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
        if !used.reserved {
            return Err(ApiError::CodeBeingIssued);
        }
        if existing {
            let row = logins::find(&mut *tx, login_id)
                .await?
                .ok_or(ApiError::LoginNotFound)?;
            super::ensure_code_allowed(&row, Utc::now())?;
        }
        tx.commit().await?;
        Ok(Self {
            pool: state.pool.clone(),
            id: reservation.id,
            settled: false,
            bought: false,
        })
    }

    /// Asks iDenfy for the session with `create`; from then on, unless iDenfy surely created
    /// nothing, the reservation is spent if its code is never stored.
    pub async fn buy<T, F>(&mut self, create: F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<T, crate::idenfy::IdenfyError>>,
    {
        self.bought = true;
        let result = create.await;
        if let Err(e) = &result {
            self.bought = e.may_have_created_a_session();
        }
        Ok(result?)
    }

    /// Removes the reservation in the transaction that stores its code.
    pub async fn remove(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !reservations::remove(conn, self.id).await? {
            tracing::warn!("a code's reservation ended before its code was stored");
        }
        Ok(())
    }

    /// Its row, for a statement that stores the code and removes it at once.
    pub fn id(&self) -> Uuid {
        self.id
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
        let (pool, id, bought) = (self.pool.clone(), self.id, self.bought);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let done = if bought {
                    reservations::spend(&pool, id).await
                } else {
                    reservations::remove(&pool, id).await.map(|_| ())
                };
                if let Err(e) = done {
                    tracing::warn!(error = %e, "could not settle a code reservation; its lease ends it");
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
