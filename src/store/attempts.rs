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

/// Ends a pending attempt. The digit code is dropped with it.
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    status: &str,
    source: &str,
    report: &IdenfyReport,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        update attempts
        set status = $2, outcome_source = $3, finished_at = now(), digit_string = null,
            idenfy_status = $4, fail_reason = $5, risk_tags = $6, idenfy_session_id = $7,
            client_id = $8, phone_ip = $9, face_photo_url = $10, network_match = $11
        where id = $1 and status = 'pending'
        "#,
        id,
        status,
        source,
        report.idenfy_status,
        report.fail_reason,
        report.risk_tags.as_deref(),
        report.idenfy_session_id,
        report.client_id,
        report.phone_ip,
        report.face_photo_url,
        report.network_match
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The login that owns the attempt with this iDenfy session token.
pub async fn login_for_token(
    conn: impl PgExecutor<'_>,
    token: &str,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    let row = sqlx::query!(
        "select id, login_id from attempts where idenfy_token = $1",
        token
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.login_id, r.id)))
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

/// Codes issued for `scan_ref` in the last hour, and when the oldest of them leaves the window.
pub async fn issued_for_scan_ref_last_hour(
    conn: impl PgExecutor<'_>,
    scan_ref: &str,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let row = sqlx::query!(
        r#"
        select count(*) as "count!", min(a.created_at) + interval '1 hour' as frees_at
        from attempts a join logins l on l.id = a.login_id
        where l.scan_ref = $1 and a.created_at > now() - interval '1 hour'
        "#,
        scan_ref
    )
    .fetch_one(conn)
    .await?;
    Ok((row.count, row.frees_at))
}

/// Serialises code issuance per scan_ref across connections and instances, so the hourly
/// budget cannot be overrun by concurrent requests.
pub async fn lock_scan_ref(conn: &mut PgConnection, scan_ref: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended('facepair.scan_ref:' || $1, 0))",
        scan_ref
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
