//! events: the append-only audit log, one row per state change, numbered per login.

use sqlx::PgConnection;
use uuid::Uuid;

pub struct NewEvent<'a> {
    pub login_id: Uuid,
    pub seq: i32,
    pub kind: &'a str,
    pub source: &'a str,
    pub login_status: &'a str,
    pub attempt_id: Option<Uuid>,
    pub delivery_id: Option<Uuid>,
    pub detail: serde_json::Value,
}

pub async fn append(conn: &mut PgConnection, e: NewEvent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        insert into events (login_id, seq, kind, source, login_status, attempt_id, delivery_id, detail)
        values ($1, $2, $3, $4, $5, $6, $7, $8)
        "#,
        e.login_id,
        e.seq,
        e.kind,
        e.source,
        e.login_status,
        e.attempt_id,
        e.delivery_id,
        e.detail
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Wakes every instance's listener after commit. Sent outside the writing transaction: a
/// NOTIFY inside it serialises all commits on a global lock.
pub async fn notify(conn: impl sqlx::PgExecutor<'_>, login_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_notify('facepair_events', $1)",
        login_id.to_string()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One event as streamed to live readers.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i32,
    pub kind: String,
}

/// Events after `seq`, oldest first.
pub async fn after(
    conn: impl sqlx::PgExecutor<'_>,
    login_id: Uuid,
    seq: i32,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "select seq, kind from events where login_id = $1 and seq > $2 order by seq limit $3",
        login_id,
        seq,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Logins with an event in the last `seconds`: the backstop for a NOTIFY lost to a crash
/// between commit and notify.
pub async fn recently_changed(
    conn: impl sqlx::PgExecutor<'_>,
    seconds: f64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select distinct login_id from events where created_at > now() - make_interval(secs => $1)",
        seconds
    )
    .fetch_all(conn)
    .await
}
