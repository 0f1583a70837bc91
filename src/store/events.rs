//! events: the append-only audit log, one row per state change, numbered per login.

use uuid::Uuid;

use crate::domain::EventKind;

/// One event as streamed to live readers.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i32,
    pub kind: EventKind,
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
        r#"select seq, kind as "kind: EventKind" from events
           where login_id = $1 and seq > $2 order by seq limit $3"#,
        login_id,
        seq,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Each of `ids` with the number of its newest event: the backstop compares them with what
/// this instance last saw, so a change is found however late its transaction committed.
pub async fn newest(
    conn: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select id, event_seq from logins where id = any($1::uuid[])",
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.event_seq)).collect())
}
