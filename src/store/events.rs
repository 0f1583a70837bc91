//! events: the append-only audit log, one row per state change, numbered per login.

use uuid::Uuid;

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

/// Logins with an event in the last `seconds`, each with its newest event's sequence number:
/// the backstop for a NOTIFY lost to a crash between commit and notify.
pub async fn recently_changed(
    conn: impl sqlx::PgExecutor<'_>,
    seconds: f64,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select login_id, max(seq) as "seq!" from events
           where created_at > now() - make_interval(secs => $1)
           group by login_id"#,
        seconds
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.login_id, r.seq)).collect())
}
