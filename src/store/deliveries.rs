//! deliveries: every verified webhook request, raw, with its verdict.

use sqlx::PgConnection;
use uuid::Uuid;

pub struct NewDelivery<'a> {
    pub id: Uuid,
    pub body: &'a [u8],
    pub body_sha256: &'a [u8],
    pub content_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub signing_key_index: i32,
    pub token: Option<&'a str>,
    pub idenfy_status: Option<&'a str>,
    pub verdict: &'a str,
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
        d.verdict,
        d.attempt_id,
        d.login_id,
        d.detail
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Serialises deliveries of the same body, then says whether one was stored before.
pub async fn lock_and_seen(
    conn: &mut PgConnection,
    body_sha256: &[u8],
) -> Result<bool, sqlx::Error> {
    sqlx::query!(
        "select pg_advisory_xact_lock(('x' || encode(substring($1::bytea from 1 for 8), 'hex'))::bit(64)::bigint)",
        body_sha256
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"select exists(select 1 from deliveries where body_sha256 = $1) as "seen!""#,
        body_sha256
    )
    .fetch_one(conn)
    .await
}
