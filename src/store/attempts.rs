//! attempts: one iDenfy face-auth session each.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub struct NewAttempt<'a> {
    pub id: Uuid,
    pub login_id: Uuid,
    pub number: i32,
    pub idenfy_token: &'a str,
    pub digit_string: &'a str,
    pub idenfy_max_attempt_count: Option<i32>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut PgConnection, a: &NewAttempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        insert into attempts (id, login_id, number, idenfy_token, digit_string,
                              idenfy_max_attempt_count, expires_at)
        values ($1, $2, $3, $4, $5, $6, $7)
        "#,
        a.id,
        a.login_id,
        a.number,
        a.idenfy_token,
        a.digit_string,
        a.idenfy_max_attempt_count,
        a.expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What iDenfy's webhook (or session lookup) said about the session, kept on the attempt.
#[derive(Debug, Default, Clone)]
pub struct IdenfyReport {
    pub idenfy_status: Option<String>,
    pub fail_reason: Option<String>,
    pub risk_tags: Option<Vec<String>>,
    pub idenfy_session_id: Option<String>,
    pub client_id: Option<String>,
    pub phone_ip: Option<String>,
    pub face_photo_url: Option<String>,
    pub network_match: Option<&'static str>,
}

/// Who settled an attempt (`None` while pending).
pub async fn outcome_source(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let source = sqlx::query_scalar!("select outcome_source from attempts where id = $1", id)
        .fetch_optional(conn)
        .await?;
    Ok(source.flatten())
}

/// Whether `scan_ref` was issued `budget` codes in the last hour, and if so when the budget
/// frees (when the oldest of the newest `budget` leaves the window). Reads at most `budget`
/// attempts, however many the scan_ref has.
pub async fn scan_ref_hour_budget(
    conn: impl PgExecutor<'_>,
    scan_ref: &str,
    budget: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        select count(*) as "count!", min(created_at) + interval '1 hour' as frees_at
        from (
            select a.created_at
            from attempts a join logins l on l.id = a.login_id
            where l.scan_ref = $1 and a.created_at > now() - interval '1 hour'
            order by a.created_at desc
            limit $2
        ) newest
        "#,
        scan_ref,
        budget
    )
    .fetch_one(conn)
    .await?;
    Ok(if row.count >= budget {
        Some(
            row.frees_at
                .unwrap_or_else(|| Utc::now() + chrono::Duration::hours(1)),
        )
    } else {
        None
    })
}

/// The advisory lock that serialises code issuance per scan_ref across connections and
/// instances, so the hourly budget cannot be overrun by concurrent requests.
pub fn scan_ref_lock_key(scan_ref: &str) -> i64 {
    super::lock_key("facepair.scan_ref", scan_ref.as_bytes())
}

/// Takes [`scan_ref_lock_key`] inside a transaction.
pub async fn lock_scan_ref(conn: &mut PgConnection, scan_ref: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_advisory_xact_lock($1)",
        scan_ref_lock_key(scan_ref)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An attempt whose code expired and is still recorded as pending.
pub struct Due {
    pub login_id: Uuid,
    pub attempt_id: Uuid,
    pub idenfy_token: String,
}

/// Pending attempts whose expiry passed at least `grace_secs` ago, oldest first.
pub async fn due_for_expiry(
    conn: impl PgExecutor<'_>,
    grace_secs: f64,
    limit: i64,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as!(
        Due,
        r#"
        select login_id, id as attempt_id, idenfy_token from attempts
        where status = 'pending' and expires_at <= now() - make_interval(secs => $1)
        order by expires_at
        limit $2
        "#,
        grace_secs,
        limit
    )
    .fetch_all(conn)
    .await
}
