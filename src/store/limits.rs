//! rate_limits: fixed-window counters shared by every instance.

use sqlx::PgExecutor;

/// A fixed-window limit: at most `limit` hits per `window_secs` in `bucket`.
pub struct Limit {
    pub bucket: String,
    pub window_secs: f64,
    pub limit: i32,
}

/// Counts one hit in each limit's current window, in one statement. Returns the index of the
/// first limit the hit is over and the seconds until its window ends.
///
/// The counts commit without waiting for the disk: a count lost in a crash only lets a few
/// more requests through, and not waiting keeps a second fsync off every login creation.
pub async fn hit(
    conn: impl PgExecutor<'_>,
    limits: &[Limit],
) -> Result<Option<(usize, u64)>, sqlx::Error> {
    let buckets: Vec<&str> = limits.iter().map(|l| l.bucket.as_str()).collect();
    let windows: Vec<f64> = limits.iter().map(|l| l.window_secs).collect();
    // `set_config(.., true)` lasts for the statement's own transaction, whose commit it makes
    // asynchronous
    let rows = sqlx::query!(
        r#"
        with async_commit as (select set_config('synchronous_commit', 'off', true)),
        input as (
            select bucket, make_interval(secs => window_secs) as width
            from unnest($1::text[], $2::float8[]) as u(bucket, window_secs)
        )
        insert into rate_limits as r (bucket, window_start, hits)
        select bucket, now(), 1 from input, async_commit
        on conflict (bucket) do update set
            hits = case when r.window_start <= now() - (select width from input where bucket = r.bucket)
                        then 1 else r.hits + 1 end,
            window_start = case when r.window_start <= now() - (select width from input where bucket = r.bucket)
                                then now() else r.window_start end
        returning bucket, hits,
                  extract(epoch from (window_start + (select width from input where bucket = r.bucket) - now()))::float8 as "remaining!"
        "#,
        &buckets as &[&str],
        &windows
    )
    .fetch_all(conn)
    .await?;
    Ok(limits.iter().enumerate().find_map(|(i, limit)| {
        let row = rows.iter().find(|r| r.bucket == limit.bucket)?;
        (row.hits > limit.limit).then(|| (i, row.remaining.ceil().max(1.0) as u64))
    }))
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
