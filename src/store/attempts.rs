//! attempts: one iDenfy face-auth session each.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::Source;
use crate::domain::network::NetworkMatch;

pub struct NewAttempt<'a> {
    pub id: Uuid,
    pub login_id: Uuid,
    pub number: i32,
    pub idenfy_token: &'a str,
    pub digit_string: &'a str,
    pub idenfy_max_attempt_count: Option<i32>,
    pub expires_at: DateTime<Utc>,
    /// The address bucket the code was asked from (`store::reservations`).
    pub requested_from: &'a str,
}

pub async fn insert(conn: &mut PgConnection, a: &NewAttempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        insert into attempts (id, login_id, number, idenfy_token, digit_string,
                              idenfy_max_attempt_count, expires_at, requested_from)
        values ($1, $2, $3, $4, $5, $6, $7, $8)
        "#,
        a.id,
        a.login_id,
        a.number,
        a.idenfy_token,
        a.digit_string,
        a.idenfy_max_attempt_count,
        a.expires_at,
        a.requested_from
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
    pub network_match: Option<NetworkMatch>,
}

/// Who settled an attempt (`None` while pending).
pub async fn outcome_source(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Source>, sqlx::Error> {
    let source = sqlx::query_scalar!(
        r#"select outcome_source as "outcome_source: Source" from attempts where id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(source.flatten())
}

/// The advisory lock that serialises code issuance per scan_ref across connections and
/// instances, so its hourly budgets cannot be overrun by concurrent requests.
pub fn scan_ref_lock_key(scan_ref: &str) -> i64 {
    super::lock_key("facepair.scan_ref", scan_ref.as_bytes())
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
