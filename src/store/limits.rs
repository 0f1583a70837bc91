//! rate_limits: fixed-window counters shared by every instance.

use sqlx::PgExecutor;

/// Counts one hit in `bucket`'s current window of `window_secs`; `Some(seconds)` until the
/// window ends when the hit is over `limit`.
///
/// The count commits without waiting for the disk: a count lost in a crash only lets a few
/// more requests through, and not waiting keeps a second fsync off every login creation.
pub async fn hit(
    pool: &sqlx::PgPool,
    bucket: &str,
    window_secs: f64,
    limit: i32,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query!(
        r#"
        insert into rate_limits as r (bucket, window_start, hits) values ($1, now(), 1)
        on conflict (bucket) do update set
            hits = case when r.window_start <= now() - make_interval(secs => $2) then 1 else r.hits + 1 end,
            window_start = case when r.window_start <= now() - make_interval(secs => $2) then now() else r.window_start end
        returning hits,
                  extract(epoch from (window_start + make_interval(secs => $2) - now()))::float8 as "remaining!"
        "#,
        bucket,
        window_secs
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((row.hits > limit).then(|| row.remaining.ceil().max(1.0) as u64))
}

/// Forgets windows that ended long ago.
pub async fn prune(conn: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query!("delete from rate_limits where window_start < now() - interval '1 day'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
