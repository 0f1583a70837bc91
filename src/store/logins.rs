//! logins, read together with their current (latest) attempt.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::network::NetworkMatch;
use crate::domain::{AttemptStatus, LoginStatus, Source};

/// A login and its current attempt, as stored (before the clock's overlay).
#[derive(Debug, Clone)]
pub struct LoginRow {
    pub id: Uuid,
    /// `None` once retention purged the login's identity data.
    pub scan_ref: Option<String>,
    pub user_ref: Option<String>,
    pub locale: Option<String>,
    pub lifetime_seconds: i32,
    pub max_attempts: i32,
    /// Failed attempts that do not count toward the budget (the selfie came from another
    /// network than the desktop's).
    pub attempts_forgiven: i32,
    pub client_ip: Option<String>,
    pub status: LoginStatus,
    pub event_seq: i32,
    pub created_at: DateTime<Utc>,
    pub approved_at: Option<DateTime<Utc>>,
    /// Until when an approval may be redeemed.
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// The platform's opaque value, handed back to the browser.
    pub state: Option<String>,
    /// What the pairing page shows, as the platform gave it.
    pub platform_name: Option<String>,
    pub desktop_place: Option<String>,
    pub attempt: AttemptRow,
    /// The documents made from this row, kept with it: a cached row is serialised once per
    /// reader and code status (`service::view::render`).
    pub rendered: Rendered,
}

/// Serialised documents of one row, in two parts around the per-request `server_time`. A
/// copy of the row starts empty, since a copy may be changed.
#[derive(Debug, Default)]
pub struct Rendered(pub [std::sync::OnceLock<Parts>; 4]);

/// A document's bytes before and after one value.
pub type Parts = (Box<[u8]>, Box<[u8]>);

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub id: Uuid,
    pub number: i32,
    pub status: AttemptStatus,
    pub digit_string: Option<String>,
    pub idenfy_max_attempt_count: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome_source: Option<Source>,
    pub fail_reason: Option<String>,
    pub risk_tags: Option<Vec<String>>,
    pub client_id: Option<String>,
    pub phone_ip: Option<String>,
    pub network_match: Option<NetworkMatch>,
}

#[cfg(test)]
impl LoginRow {
    /// A pending login whose current attempt has `attempt_status` and expires at
    /// `expires_at`, for unit tests.
    pub fn sample(id: Uuid, attempt_status: AttemptStatus, expires_at: DateTime<Utc>) -> Self {
        LoginRow {
            id,
            scan_ref: Some("person".into()),
            user_ref: None,
            locale: None,
            lifetime_seconds: 600,
            max_attempts: 3,
            attempts_forgiven: 0,
            client_ip: None,
            status: LoginStatus::Pending,
            event_seq: 1,
            created_at: Utc::now(),
            approved_at: None,
            approval_expires_at: None,
            redeemed_at: None,
            canceled_at: None,
            state: None,
            platform_name: None,
            desktop_place: None,
            attempt: AttemptRow {
                id,
                number: 1,
                status: attempt_status,
                digit_string: Some("12345678".into()),
                idenfy_max_attempt_count: Some(3),
                created_at: Utc::now(),
                expires_at,
                finished_at: None,
                outcome_source: None,
                fail_reason: None,
                risk_tags: None,
                client_id: None,
                phone_ip: None,
                network_match: None,
            },
            rendered: Rendered::default(),
        }
    }
}

impl LoginRow {
    /// Codes that count toward the login's budget.
    pub fn budget_used(&self) -> i32 {
        self.attempt.number - self.attempts_forgiven
    }
}

/// Reads a login and its current attempt (unlocked; see [`lock`]).
pub async fn find(conn: impl PgExecutor<'_>, id: Uuid) -> Result<Option<LoginRow>, sqlx::Error> {
    sqlx::query_as!(
        Joined,
        r#"
        select l.id, l.scan_ref, l.user_ref, l.locale, l.lifetime_seconds, l.max_attempts, l.attempts_forgiven,
               host(l.client_ip) as client_ip, l.status as "status: LoginStatus", l.event_seq,
               l.created_at, l.approved_at, l.approval_expires_at, l.redeemed_at, l.canceled_at,
               l.state, l.platform_name, l.desktop_place, a.id as "attempt_id!", a.number as "attempt_number!",
               a.status as "attempt_status!: AttemptStatus", a.digit_string,
               a.idenfy_max_attempt_count, a.created_at as "attempt_created_at!",
               a.expires_at as "expires_at!", a.finished_at,
               a.outcome_source as "outcome_source: Source", a.fail_reason, a.risk_tags,
               a.client_id, a.phone_ip, a.network_match as "network_match: NetworkMatch"
        from logins l
        join lateral (
            select * from attempts where login_id = l.id order by number desc limit 1
        ) a on true
        where l.id = $1
        "#,
        id
    )
    .fetch_optional(conn)
    .await
    .map(|found| found.map(Joined::into_row))
}

/// A login joined with its current attempt, as [`find`] and a creation
/// (`store::changes::create`) read it, before it is nested.
#[derive(sqlx::FromRow)]
pub(crate) struct Joined {
    pub id: Uuid,
    pub scan_ref: Option<String>,
    pub user_ref: Option<String>,
    pub locale: Option<String>,
    pub lifetime_seconds: i32,
    pub max_attempts: i32,
    pub attempts_forgiven: i32,
    pub client_ip: Option<String>,
    pub status: LoginStatus,
    pub event_seq: i32,
    pub created_at: DateTime<Utc>,
    pub approved_at: Option<DateTime<Utc>>,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub state: Option<String>,
    pub platform_name: Option<String>,
    pub desktop_place: Option<String>,
    pub attempt_id: Uuid,
    pub attempt_number: i32,
    pub attempt_status: AttemptStatus,
    pub digit_string: Option<String>,
    pub idenfy_max_attempt_count: Option<i32>,
    pub attempt_created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome_source: Option<Source>,
    pub fail_reason: Option<String>,
    pub risk_tags: Option<Vec<String>>,
    pub client_id: Option<String>,
    pub phone_ip: Option<String>,
    pub network_match: Option<NetworkMatch>,
}

impl Joined {
    pub(crate) fn into_row(self) -> LoginRow {
        LoginRow {
            id: self.id,
            scan_ref: self.scan_ref,
            user_ref: self.user_ref,
            locale: self.locale,
            lifetime_seconds: self.lifetime_seconds,
            max_attempts: self.max_attempts,
            attempts_forgiven: self.attempts_forgiven,
            client_ip: self.client_ip,
            status: self.status,
            event_seq: self.event_seq,
            created_at: self.created_at,
            approved_at: self.approved_at,
            approval_expires_at: self.approval_expires_at,
            redeemed_at: self.redeemed_at,
            canceled_at: self.canceled_at,
            state: self.state,
            platform_name: self.platform_name,
            desktop_place: self.desktop_place,
            attempt: AttemptRow {
                id: self.attempt_id,
                number: self.attempt_number,
                status: self.attempt_status,
                digit_string: self.digit_string,
                idenfy_max_attempt_count: self.idenfy_max_attempt_count,
                created_at: self.attempt_created_at,
                expires_at: self.expires_at,
                finished_at: self.finished_at,
                outcome_source: self.outcome_source,
                fail_reason: self.fail_reason,
                risk_tags: self.risk_tags,
                client_id: self.client_id,
                phone_ip: self.phone_ip,
                network_match: self.network_match,
            },
            rendered: Rendered::default(),
        }
    }
}

/// The login a watch token belongs to.
pub async fn id_for_watch_hash(
    conn: impl PgExecutor<'_>,
    hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("select id from logins where watch_token_hash = $1", hash)
        .fetch_optional(conn)
        .await
}

/// Begins a transaction holding the login's row lock, in one round trip; read the login
/// after it, with [`find`].
pub async fn begin_locked(
    pool: &sqlx::PgPool,
    id: Uuid,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    // a UUID: nothing in it can be read as SQL
    super::begin_locking(
        pool,
        format!("select from logins where id = '{id}' for update"),
    )
    .await
}

/// Takes the login's row lock, then reads it with its current attempt. Every writer takes this
/// lock first, so concurrent changes to one login queue here.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<LoginRow>, sqlx::Error> {
    let locked = sqlx::query_scalar!("select id from logins where id = $1 for update", id)
        .fetch_optional(&mut *conn)
        .await?;
    if locked.is_none() {
        return Ok(None);
    }
    // A separate read, not a join in the locking statement: after waiting for the lock,
    // PostgreSQL re-checks the locked login row but would keep the joined attempt from the
    // old snapshot, missing a code issued meanwhile. The attempt rows need no lock of their
    // own: every writer of an attempt holds its login's lock.
    find(&mut *conn, id).await
}

pub struct NewLogin<'a> {
    pub id: Uuid,
    pub scan_ref: &'a str,
    pub user_ref: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub lifetime_seconds: i32,
    pub max_attempts: i32,
    pub client_ip: Option<String>,
    pub user_agent: Option<&'a str>,
    pub api_key_id: &'a str,
    pub watch_token_hash: &'a [u8],
    pub state: Option<&'a str>,
    pub platform_name: Option<&'a str>,
    pub desktop_place: Option<&'a str>,
}

/// Approved logins whose approval expired and is not recorded yet, oldest first.
pub async fn approvals_due(
    conn: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        select id from logins
        where status = 'approved' and coalesce(approval_expires_at, approved_at) <= now()
        order by coalesce(approval_expires_at, approved_at)
        limit $1
        "#,
        limit
    )
    .fetch_all(conn)
    .await
}

/// The outcome of a browser's poll against the slow_down rule.
pub enum Poll {
    Answered(Uuid),
    TooSoon { retry_after_ms: i64 },
    UnknownToken,
}

/// Records a watch-token poll if at least `interval_ms` (less a small allowance for network
/// jitter) passed since the last answered one. A poll that is refused is not recorded, so a
/// client that waits `Retry-After` is answered next time.
pub async fn record_watch_poll(
    conn: &mut PgConnection,
    hash: &[u8],
    interval_ms: i64,
) -> Result<Poll, sqlx::Error> {
    const JITTER_ALLOWANCE_MS: i64 = 250;
    let floor = (interval_ms - JITTER_ALLOWANCE_MS).max(0);
    let answered = sqlx::query_scalar!(
        r#"
        update logins set watch_polled_at = now()
        where watch_token_hash = $1
          and (watch_polled_at is null
               or watch_polled_at <= now() - make_interval(secs => $2::bigint / 1000.0))
        returning id
        "#,
        hash,
        floor
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = answered {
        return Ok(Poll::Answered(id));
    }
    let last = sqlx::query_scalar!(
        r#"
        select (extract(epoch from (now() - watch_polled_at)) * 1000)::bigint as "elapsed_ms"
        from logins where watch_token_hash = $1
        "#,
        hash
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match last {
        None => Poll::UnknownToken,
        Some(elapsed) => Poll::TooSoon {
            retry_after_ms: (interval_ms - elapsed.unwrap_or(0)).max(1),
        },
    })
}
