//! The operations on logins: domain rules, store and iDenfy composed. Handlers and background
//! tasks call these; none of them re-implements a rule.
//!
//! No database connection is held while iDenfy is being called.

pub mod codes;
mod context;
pub mod expiry;
pub mod outbound;
pub mod view;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::network::NetworkMatch;
use crate::domain::state::{self, CodeRefusal, LoginFacts};
use crate::domain::{
    AttemptEvent, AttemptStatus, EventKind, Lifetime, Locale, LoginStatus, ScanRef, Source,
    UserRef, WatchToken,
};
use crate::error::ApiError;
use crate::idenfy::{CreatedSession, Eligibility, SessionRequest};
use crate::store::attempts::{self, IdenfyReport, NewAttempt};
use crate::store::changes::{self, Change, Finish, NewEvent, StatusChange};
use crate::store::deliveries::NewDelivery;
use crate::store::limits::Limit;
use crate::store::logins::{self, LoginRow, NewLogin};

pub use context::Context;
pub use view::{Audience, LoginState, effective};

/// A validated request for a new login.
#[derive(Debug)]
pub struct NewLoginRequest {
    pub scan_ref: ScanRef,
    pub user_ref: Option<UserRef>,
    pub locale: Option<Locale>,
    pub lifetime: Lifetime,
    pub client_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    /// The platform's opaque value, handed back to the browser.
    pub state: Option<String>,
    /// Shown on the pairing page.
    pub platform_name: Option<String>,
    /// Shown on the pairing page.
    pub desktop_place: Option<String>,
}

/// Checks eligibility at iDenfy, creates the session with a digit code, and stores the login
/// with its first attempt in one transaction. The code is reserved, its budgets counted,
/// before iDenfy is called, and the work runs to its end if the client leaves.
pub async fn create_login(
    state: &Context,
    api_key_id: &str,
    req: NewLoginRequest,
) -> Result<(LoginRow, WatchToken), ApiError> {
    let (ctx, key) = (state.clone(), api_key_id.to_owned());
    codes::to_completion(state, async move { create(&ctx, &key, req).await }).await
}

async fn create(
    state: &Context,
    api_key_id: &str,
    req: NewLoginRequest,
) -> Result<(LoginRow, WatchToken), ApiError> {
    let limits = state.settings.limits;
    let mut checks = vec![(
        Limit {
            bucket: format!("api_key:{api_key_id}"),
            window_secs: 60.0,
            limit: limits.logins_per_api_key_per_minute,
        },
        "logins_per_api_key",
    )];
    if let Some(ip) = req.client_ip {
        checks.push((
            Limit {
                bucket: format!("client_ip:{}", crate::domain::network::bucket(ip)),
                window_secs: 3600.0,
                limit: limits.logins_per_client_ip_per_hour,
            },
            "logins_per_client_ip",
        ));
    }
    rate_limit(state, checks).await?;

    let login_id = Uuid::now_v7();
    let requested_from = codes::requested_from(req.client_ip);
    let mut reservation =
        codes::Reservation::take(state, login_id, &req.scan_ref, &requested_from, false).await?;

    let started = std::time::Instant::now();
    let eligibility = state.idenfy.check_status(&req.scan_ref).await;
    state.metrics.idenfy_call(
        "check_status",
        crate::idenfy::outcome(&eligibility),
        started.elapsed(),
    );
    match eligibility? {
        Eligibility::Authentication => {}
        Eligibility::Identification => return Err(ApiError::IdentificationRequired),
        Eligibility::Other(kind) => return Err(ApiError::FaceAuthNotAvailable { kind }),
    }
    let session = create_session(
        state,
        &mut reservation,
        &req.scan_ref,
        req.lifetime,
        req.locale.as_ref(),
    )
    .await?;

    let watch_token = WatchToken::generate();
    let attempt_id = Uuid::now_v7();
    let row = changes::create(
        &state.pool,
        &NewLogin {
            id: login_id,
            scan_ref: req.scan_ref.as_str(),
            user_ref: req.user_ref.as_ref().map(UserRef::as_str),
            locale: req.locale.as_ref().map(Locale::as_str),
            lifetime_seconds: req.lifetime.seconds() as i32,
            max_attempts: state.settings.max_attempts_per_login,
            client_ip: req.client_ip.map(|ip| ip.to_string()),
            user_agent: req.user_agent.as_deref(),
            api_key_id,
            watch_token_hash: &watch_token.hash(),
            state: req.state.as_deref(),
            platform_name: req.platform_name.as_deref(),
            desktop_place: req.desktop_place.as_deref(),
        },
        &new_attempt(
            attempt_id,
            login_id,
            1,
            &session,
            req.lifetime,
            &requested_from,
        ),
        reservation.id(),
        json!({ "attempt_number": 1, "eligibility": "AUTHENTICATION" }),
    )
    .await?;
    reservation.settled();
    state.metrics.logins_created.inc();
    tracing::info!(%login_id, %attempt_id, "login created");
    Ok((row, watch_token))
}

/// Issues a fresh code: after a failed, expired or canceled attempt, or superseding a pending
/// one, within the login's and the scan_ref's budgets. `requested_from` is the browser's
/// address for a code asked from the browser; the platform's codes count against the
/// desktop's address given at creation. The work runs to its end if the client leaves.
pub async fn issue_code(
    state: &Context,
    login_id: Uuid,
    source: Source,
    requested_from: Option<std::net::IpAddr>,
) -> Result<LoginRow, ApiError> {
    let ctx = state.clone();
    codes::to_completion(state, async move {
        issue(&ctx, login_id, source, requested_from).await
    })
    .await
}

async fn issue(
    state: &Context,
    login_id: Uuid,
    source: Source,
    requested_from: Option<std::net::IpAddr>,
) -> Result<LoginRow, ApiError> {
    let row = logins::find(&state.pool, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    ensure_code_allowed(&row, Utc::now())?;
    // a login whose identity data was purged has long ended
    let scan_ref = row
        .scan_ref
        .as_deref()
        .map(ScanRef::parse)
        .transpose()
        .map_err(|e| internal(&e.to_string()))?;
    let scan_ref = scan_ref.ok_or(ApiError::LoginFinished { status: "purged" })?;
    let requested_from = codes::requested_from(
        requested_from.or_else(|| row.client_ip.as_deref().and_then(|ip| ip.parse().ok())),
    );
    let mut reservation =
        codes::Reservation::take(state, login_id, &scan_ref, &requested_from, true).await?;
    let lifetime = Lifetime::from_seconds(row.lifetime_seconds.into())
        .map_err(|e| internal(&e.to_string()))?;
    let locale = row.locale.as_deref().and_then(|l| Locale::parse(l).ok());
    let session = create_session(
        state,
        &mut reservation,
        &scan_ref,
        lifetime,
        locale.as_ref(),
    )
    .await?;

    let mut tx = state.pool.begin().await?;
    let row = logins::lock(&mut tx, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    let now = Utc::now();
    if let Err(e) = ensure_code_allowed(&row, now) {
        tracing::warn!(%login_id, "the login changed while iDenfy created a session; the session is left unused");
        return Err(e);
    }
    reservation.remove(&mut tx).await?;
    // the code being replaced ends first: expired if its time is up, superseded if not
    let ended = end_current(&mut tx, &row, now, AttemptEvent::Superseded, source, None).await?;
    let number = row.attempt.number + 1;
    let attempt_id = Uuid::now_v7();
    attempts::insert(
        &mut tx,
        &new_attempt(
            attempt_id,
            login_id,
            number,
            &session,
            lifetime,
            &requested_from,
        ),
    )
    .await?;
    changes::apply(
        &mut tx,
        Change {
            login_id,
            status: LoginStatus::Pending,
            flags: StatusChange::default(),
            finish: None,
            event: NewEvent {
                kind: EventKind::AttemptIssued,
                source,
                attempt_id: Some(attempt_id),
                detail: json!({ "attempt_number": number }),
            },
            delivery: None,
            read_at_seq: None,
        },
    )
    .await?;
    let row = logins::find(&mut *tx, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    let announcement = Announcement::new(state, login_id, row.event_seq);
    tx.commit().await?;
    reservation.settled();
    if let Some(moved) = ended {
        moved.record(state);
    }
    announcement.send().await;
    tracing::info!(%login_id, %attempt_id, attempt_number = number, "new code issued");
    Ok(row)
}

/// Ends the login for good; a pending code is canceled with it. Canceling twice is harmless.
pub async fn cancel(state: &Context, login_id: Uuid) -> Result<LoginRow, ApiError> {
    let mut tx = state.pool.begin().await?;
    let row = logins::lock(&mut tx, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    let now = Utc::now();
    match view::effective(&row, now).1 {
        LoginStatus::Canceled => return Ok(row),
        LoginStatus::Redeemed => return Err(ApiError::AlreadyRedeemed),
        LoginStatus::Exhausted => {
            return Err(ApiError::LoginFinished {
                status: LoginStatus::Exhausted.as_str(),
            });
        }
        LoginStatus::Pending
        | LoginStatus::Approved
        | LoginStatus::Failed
        | LoginStatus::Expired => {}
    }
    let ended = end_current(
        &mut tx,
        &row,
        now,
        AttemptEvent::LoginCanceled,
        Source::Platform,
        None,
    )
    .await?;
    changes::apply(
        &mut tx,
        Change {
            login_id,
            status: LoginStatus::Canceled,
            flags: StatusChange {
                canceled: true,
                ..Default::default()
            },
            finish: None,
            event: NewEvent {
                kind: EventKind::LoginCanceled,
                source: Source::Platform,
                attempt_id: Some(row.attempt.id),
                detail: json!({}),
            },
            delivery: None,
            read_at_seq: None,
        },
    )
    .await?;
    let row = logins::find(&mut *tx, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    let announcement = Announcement::new(state, login_id, row.event_seq);
    tx.commit().await?;
    if let Some(moved) = ended {
        moved.record(state);
    }
    announcement.send().await;
    tracing::info!(%login_id, "login canceled");
    Ok(row)
}

/// Consumes an approved login exactly once: judged under the login's row lock, so concurrent
/// redeems queue and the second sees `redeemed`, and an approval cannot expire between the
/// judgement and the change. Runs to its end if the client leaves, so a change that commits
/// is announced and logged. Returns the login as read: a redeem changes nothing it answers.
pub async fn redeem(state: &Context, login_id: Uuid) -> Result<LoginRow, ApiError> {
    let state = state.clone();
    detached(async move { redeem_now(&state, login_id).await }).await
}

async fn redeem_now(state: &Context, login_id: Uuid) -> Result<LoginRow, ApiError> {
    let mut tx = logins::begin_locked(&state.pool, login_id).await?;
    let row = logins::find(&mut *tx, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    match view::effective(&row, Utc::now()).1 {
        LoginStatus::Approved => {}
        LoginStatus::Redeemed => return Err(ApiError::AlreadyRedeemed),
        LoginStatus::Expired if row.attempt.status == AttemptStatus::Succeeded => {
            return Err(ApiError::ApprovalExpired);
        }
        other => {
            return Err(ApiError::NotApproved {
                status: other.as_str(),
            });
        }
    }
    let change = Change {
        login_id,
        status: LoginStatus::Redeemed,
        flags: StatusChange {
            redeemed: true,
            ..Default::default()
        },
        finish: None,
        event: NewEvent {
            kind: EventKind::LoginRedeemed,
            source: Source::Platform,
            attempt_id: Some(row.attempt.id),
            detail: json!({}),
        },
        delivery: None,
        read_at_seq: None,
    };
    let seq = changes::apply(&mut tx, change).await?;
    let announcement = Announcement::new(state, login_id, seq);
    tx.commit().await?;
    announcement.send().await;
    tracing::info!(%login_id, "login redeemed");
    Ok(row)
}

/// What a move did, for the caller's verdict and metrics.
#[derive(Debug, Clone)]
pub struct Moved {
    /// The login's event number after the move.
    pub seq: i32,
    pub attempt: AttemptStatus,
    pub login: LoginStatus,
    pub fail_reason: Option<String>,
}

impl Moved {
    /// Counts the move; call after the transaction committed.
    pub fn record(&self, state: &Context) {
        state
            .metrics
            .attempt_finished(self.attempt, self.fail_reason.as_deref());
    }
}

/// Ends the login's current attempt if it is still pending: as expired (source: clock) when
/// its time is up, otherwise with `event` from `source`. `None` if it had already ended. A
/// webhook `delivery` that found it so is stored with the change.
pub async fn end_current(
    conn: &mut PgConnection,
    row: &LoginRow,
    now: DateTime<Utc>,
    event: AttemptEvent,
    source: Source,
    delivery: Option<&NewDelivery<'_>>,
) -> Result<Option<Moved>, sqlx::Error> {
    let (event, source) = if view::expired_by_clock(row, now) {
        (AttemptEvent::ClockExpired, Source::Clock)
    } else {
        (event, source)
    };
    // none of these events approves
    let no_approval = std::time::Duration::ZERO;
    move_attempt(
        conn,
        row,
        event,
        source,
        &IdenfyReport::default(),
        delivery,
        no_approval,
    )
    .await
}

/// Applies `event` to the login's current attempt through the state machine: the attempt, the
/// login's status and one event row, in one statement, only if the login is still as `row`
/// was read (else `RowNotFound`, nothing changed). `None` when the state machine says the
/// event changes nothing. A success may be redeemed for `approval_ttl`. A webhook `delivery`
/// that causes the move is stored with it.
pub async fn move_attempt(
    conn: &mut PgConnection,
    row: &LoginRow,
    event: AttemptEvent,
    source: Source,
    report: &IdenfyReport,
    delivery: Option<&NewDelivery<'_>>,
    approval_ttl: std::time::Duration,
) -> Result<Option<Moved>, sqlx::Error> {
    let Some(to) = state::next(row.attempt.status, event) else {
        return Ok(None);
    };
    let canceled = event == AttemptEvent::LoginCanceled;
    // a stranger who types the victim's code and fails does not use up the victim's codes
    let forgive =
        to == AttemptStatus::Failed && report.network_match == Some(NetworkMatch::Different);
    let login = state::login_status(LoginFacts {
        current_attempt: to,
        attempts_used: row.budget_used() - i32::from(forgive),
        max_attempts: row.max_attempts,
        redeemed: row.redeemed_at.is_some(),
        canceled: canceled || row.canceled_at.is_some(),
        approval_expired: false,
    });
    let mut detail = json!({ "attempt_number": row.attempt.number });
    if let Some(reason) = &report.fail_reason {
        detail["fail_reason"] = json!(reason);
    }
    if let Some(status) = &report.idenfy_status {
        detail["idenfy_status"] = json!(status);
    }
    if let Some(tags) = &report.risk_tags {
        detail["risk_tags"] = json!(tags);
    }
    let seq = changes::apply(
        conn,
        Change {
            login_id: row.id,
            status: login,
            flags: StatusChange {
                approved_for: (to == AttemptStatus::Succeeded).then_some(approval_ttl),
                canceled,
                redeemed: false,
                forgive,
            },
            finish: Some(Finish {
                attempt_id: row.attempt.id,
                status: to,
                source,
                report,
            }),
            event: NewEvent {
                kind: EventKind::attempt(to),
                source,
                attempt_id: Some(row.attempt.id),
                detail,
            },
            delivery,
            read_at_seq: Some(row.event_seq),
        },
    )
    .await?;
    Ok(Some(Moved {
        seq,
        attempt: to,
        login,
        fail_reason: report.fail_reason.clone(),
    }))
}

pub(crate) fn ensure_code_allowed(row: &LoginRow, now: DateTime<Utc>) -> Result<(), ApiError> {
    let (_, status) = view::effective(row, now);
    state::may_issue_code(status, row.budget_used(), row.max_attempts).map_err(|refusal| {
        match refusal {
            CodeRefusal::Approved => ApiError::AlreadyApproved,
            CodeRefusal::Redeemed => ApiError::AlreadyRedeemed,
            CodeRefusal::Canceled => ApiError::LoginCanceled,
            CodeRefusal::BudgetExhausted => ApiError::BudgetExhausted {
                message: "this login has used all its codes; create a new login",
                budget: "login",
                retry_after: None,
            },
        }
    })
}

/// Counts a hit against each PostgreSQL-kept limit; 429 `rate_limited` naming the first one
/// that is exceeded.
async fn rate_limit(state: &Context, checks: Vec<(Limit, &'static str)>) -> Result<(), ApiError> {
    let (limits, names): (Vec<Limit>, Vec<&'static str>) = checks.into_iter().unzip();
    let mut conn = state.pool.acquire().await?;
    match crate::store::limits::hit(&mut conn, &limits).await? {
        None => Ok(()),
        Some((i, retry_after)) => Err(ApiError::RateLimited {
            limit: names[i],
            retry_after,
        }),
    }
}

/// Buys the session for a reserved code.
async fn create_session(
    state: &Context,
    reservation: &mut codes::Reservation,
    scan_ref: &ScanRef,
    lifetime: Lifetime,
    locale: Option<&Locale>,
) -> Result<CreatedSession, ApiError> {
    let started = std::time::Instant::now();
    reservation
        .buy(async {
            let result = state
                .idenfy
                .create_session(&SessionRequest {
                    scan_ref,
                    lifetime,
                    locale,
                })
                .await;
            state.metrics.idenfy_call(
                "create_session",
                crate::idenfy::outcome(&result),
                started.elapsed(),
            );
            result
        })
        .await
}

/// A new attempt for iDenfy's session; its expiry is counted from after iDenfy answered, so
/// facepair's expiry never comes before iDenfy's.
fn new_attempt<'a>(
    id: Uuid,
    login_id: Uuid,
    number: i32,
    session: &'a CreatedSession,
    lifetime: Lifetime,
    requested_from: &'a str,
) -> NewAttempt<'a> {
    NewAttempt {
        id,
        login_id,
        number,
        idenfy_token: &session.token,
        digit_string: session.digit_string.as_str(),
        idenfy_max_attempt_count: session.max_attempt_count,
        expires_at: Utc::now() + chrono::Duration::seconds(lifetime.seconds().into()),
        requested_from,
    }
}

/// Reads a login for a reader (GET, long-poll, SSE): from this instance's cache when the
/// login has not changed since it was read, else from PostgreSQL. Writers lock instead.
pub async fn read_login(
    state: &Context,
    login_id: Uuid,
) -> Result<Option<std::sync::Arc<LoginRow>>, sqlx::Error> {
    let cache = &state.hub.cache;
    if let Some(row) = cache.get(&login_id) {
        state.metrics.cache_hits.inc();
        return Ok(Some(row));
    }
    state.metrics.cache_misses.inc();
    let seen = cache.version(&login_id);
    let Some(row) = logins::find(&state.pool, login_id).await? else {
        return Ok(None);
    };
    let row = std::sync::Arc::new(row);
    cache.store(login_id, seen, row.clone());
    Ok(Some(row))
}

/// A change to announce once its transaction committed: made before `COMMIT`, sent after it.
///
/// Sending tells every instance's listeners that the login changed and waits for the NOTIFY
/// to go out, so the caller's answer follows it. Queueing does the same without waiting, for
/// a caller who reads nothing back (a webhook's sender): this instance's readers are woken at
/// once, other instances' with the notifier's next batch, within its gathering time.
/// Dropped unsent (a request abandoned by its client during `COMMIT` or while its NOTIFY
/// waits, or a commit that failed, perhaps after committing), it is queued: a committed
/// change is never left for the listeners' catch-up from the events table to find, which
/// covers only a crash.
#[must_use = "an announcement is sent after the commit"]
pub struct Announcement<'a> {
    state: &'a Context,
    /// The login and the event number its change reaches once committed.
    change: Option<(Uuid, i32)>,
}

impl<'a> Announcement<'a> {
    pub fn new(state: &'a Context, login_id: Uuid, event_seq: i32) -> Self {
        Self {
            state,
            change: Some((login_id, event_seq)),
        }
    }

    /// Sends it (after the commit succeeded) and waits for the NOTIFY to go out.
    pub async fn send(mut self) {
        if let Some((login_id, seq)) = self.change {
            self.state.notifier.notify(login_id, Some(seq)).await;
            self.state.hub.changed(login_id, Some(seq));
            self.change = None;
        }
    }

    /// The change was not made (nothing was written): nothing to announce.
    pub fn forget(mut self) {
        self.change = None;
    }

    /// Puts the login in the next NOTIFY (after the commit succeeded) and wakes this
    /// instance's subscribers, without waiting for the NOTIFY to go out or hastening it.
    pub fn queue(mut self) {
        if let Some((login_id, seq)) = self.change.take() {
            self.state.notifier.enqueue(login_id, Some(seq));
            self.state.hub.changed(login_id, Some(seq));
        }
    }
}

impl Drop for Announcement<'_> {
    /// Unsent: the commit failed or was abandoned, perhaps after committing (or the caller
    /// left while the NOTIFY was on its way). The change is announced without its event
    /// number, which it may never have reached.
    fn drop(&mut self) {
        if let Some((login_id, _)) = self.change.take() {
            self.state.notifier.enqueue(login_id, None);
            self.state.hub.changed(login_id, None);
        }
    }
}

/// Runs `work` to its end in a task of its own, whether or not the request that started it
/// is dropped (its client left); lines it logs keep the request's id, and a failure nobody
/// is left to answer is logged.
pub async fn detached<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task = async move {
        if let Err(Err(e)) = answer.send(work.await) {
            tracing::warn!(error = %crate::error::error_chain(&e), "work whose client left failed");
        }
    };
    let task = match crate::telemetry::current_id() {
        Some(id) => tokio::spawn(crate::telemetry::in_request(id, task)),
        None => tokio::spawn(task),
    };
    task.await
        .map_err(|e| internal(&format!("work that outlives its request failed: {e}")))?;
    answered
        .await
        .map_err(|_| internal("work that outlives its request ended without an answer"))?
}

fn internal(what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("{what}"))
}
