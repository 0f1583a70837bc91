//! deliveries: every verified webhook request, raw, with its verdict.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Verdict;

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

/// The advisory lock that serialises deliveries of the same body, so exactly one of them is
/// judged first and the others are duplicates.
pub fn body_lock_key(body_sha256: &[u8]) -> i64 {
    super::lock_key("facepair.webhook_body", body_sha256)
}

/// What [`claim`] found.
pub struct Claimed {
    pub login_id: Uuid,
    pub attempt_id: Uuid,
    pub seen: bool,
}

/// The delivery's attempt and login, the login locked for the caller's transaction, and
/// whether the same body was stored before. Run with [`body_lock_key`] held: the statement's
/// snapshot then sees every earlier delivery of the body. `None` for an unknown token.
pub async fn claim(
    conn: &mut PgConnection,
    body_sha256: &[u8],
    token: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    // the attempt's token and login never change, so reading them from the snapshot taken
    // before a wait for the login's lock is safe; the login itself is read again afterwards
    let row = sqlx::query!(
        r#"
        select a.login_id, a.id as attempt_id,
               exists(select 1 from deliveries where body_sha256 = $1) as "seen!"
        from attempts a join logins l on l.id = a.login_id
        where a.idenfy_token = $2
        for update of l
        "#,
        body_sha256,
        token
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Claimed {
        login_id: r.login_id,
        attempt_id: r.attempt_id,
        seen: r.seen,
    }))
}

/// Whether the same body was stored before (with [`body_lock_key`] held).
pub async fn seen(conn: &mut PgConnection, body_sha256: &[u8]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from deliveries where body_sha256 = $1) as "seen!""#,
        body_sha256
    )
    .fetch_one(conn)
    .await
}
