//! deliveries: every verified webhook request, raw, with its verdict.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Verdict;
use crate::store::logins::{Joined, LoginRow};

#[derive(Clone, Copy)]
pub struct NewDelivery<'a> {
    pub id: Uuid,
    pub body: &'a [u8],
    pub body_sha256: &'a [u8],
    pub content_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub signing_key_index: i32,
    pub token: Option<&'a str>,
    pub idenfy_status: Option<&'a str>,
    pub verdict: Verdict,
    pub attempt_id: Option<Uuid>,
    pub login_id: Option<Uuid>,
    pub detail: Option<&'a str>,
}

pub async fn insert(conn: &mut PgConnection, d: &NewDelivery<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        insert into deliveries (id, body, body_sha256, content_type, event_type, signing_key_index,
                                token, idenfy_status, verdict, attempt_id, login_id, detail)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        "#,
        d.id,
        d.body,
        d.body_sha256,
        d.content_type,
        d.event_type,
        d.signing_key_index,
        d.token,
        d.idenfy_status,
        d.verdict as Verdict,
        d.attempt_id,
        d.login_id,
        d.detail
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`find_by_token`] read, all in one snapshot.
pub struct Claimed {
    /// The login and its current attempt.
    pub row: LoginRow,
    /// The attempt the delivery's token names (the current one, or an older one).
    pub attempt_id: Uuid,
    /// The same body was stored before.
    pub seen: bool,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    joined: Joined,
    claimed_attempt_id: Uuid,
    seen: bool,
}

/// The attempt `token` names, its login with the login's current attempt, and whether the
/// same body was stored before, in one statement and without a lock: a change made from it
/// names the event number it read (`changes::Change::read_at_seq`). `None` for an unknown
/// token.
pub async fn find_by_token(
    conn: &mut PgConnection,
    body_sha256: &[u8],
    token: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    // columns named as `Joined`'s fields; checked by every webhook test rather than by the
    // query macros, which cannot fill a struct with fields of its own beside them
    let found: Option<ClaimedRow> = sqlx::query_as(
        r#"
        select l.id, l.scan_ref, l.user_ref, l.locale, l.lifetime_seconds, l.max_attempts,
               l.attempts_forgiven, host(l.client_ip) as client_ip, l.status, l.event_seq,
               l.created_at, l.approved_at, l.approval_expires_at, l.redeemed_at, l.canceled_at,
               l.state, l.platform_name, l.desktop_place, a.id as attempt_id,
               a.number as attempt_number, a.status as attempt_status, a.digit_string,
               a.idenfy_max_attempt_count, a.created_at as attempt_created_at, a.expires_at,
               a.finished_at, a.outcome_source, a.fail_reason, a.risk_tags, a.client_id,
               a.phone_ip, a.network_match, t.id as claimed_attempt_id,
               exists(select 1 from deliveries where body_sha256 = $1) as seen
        from attempts t
        join logins l on l.id = t.login_id
        join lateral (
            select * from attempts where login_id = l.id order by number desc limit 1
        ) a on true
        where t.idenfy_token = $2
        "#,
    )
    .bind(body_sha256)
    .bind(token)
    .fetch_optional(conn)
    .await?;
    Ok(found.map(|f| Claimed {
        row: f.joined.into_row(),
        attempt_id: f.claimed_attempt_id,
        seen: f.seen,
    }))
}

/// Whether the same body was stored before.
pub async fn seen(conn: &mut PgConnection, body_sha256: &[u8]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from deliveries where body_sha256 = $1) as "seen!""#,
        body_sha256
    )
    .fetch_one(conn)
    .await
}
