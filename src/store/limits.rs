//! rate_limits: fixed-window counters shared by every instance.

use sqlx::PgConnection;

/// A fixed-window limit: at most `limit` (at least 1) hits per `window_secs` in `bucket`.
pub struct Limit {
    pub bucket: String,
    pub window_secs: f64,
    pub limit: i32,
}

/// The constraint that keeps a window's hits within its cap (migration 0007).
const WITHIN_CAP: &str = "rate_limits_hits_within_cap";

/// Counts one hit in each limit's current window if every limit has room for it, in one
/// statement. Returns the index of the first limit that is full and the seconds until its
/// window ends; a refused hit counts in no window, so requests refused by one limit (a
/// desktop address over its own) never use up another (the platform's key).
///
/// The windows' rows are locked in bucket order before they are read, so concurrent hits
/// queue on them and none slips past a full window. Hits that race a window's first insert
/// have no row to lock: past the cap, their count breaks `rate_limits_hits_within_cap`, the
/// statement counts nothing, and it runs again, now finding the row. Outside a transaction
/// only, for that reason.
///
/// The counts commit without waiting for the disk: a count lost in a crash only lets a few
/// more requests through, and not waiting keeps a second fsync off every login creation.
pub async fn hit(
    conn: &mut PgConnection,
    limits: &[Limit],
) -> Result<Option<(usize, u64)>, sqlx::Error> {
    // a try can lose a race only on a bucket with no row when it began, and the next try
    // finds that row: one try per bucket, and one more, always suffice
    let tries_allowed = limits.len() + 1;
    let mut tries = 0;
    loop {
        tries += 1;
        match hit_once(&mut *conn, limits).await {
            Err(sqlx::Error::Database(e))
                if e.constraint() == Some(WITHIN_CAP) && tries < tries_allowed =>
            {
                continue;
            }
            other => return other,
        }
    }
}

async fn hit_once(
    conn: &mut PgConnection,
    limits: &[Limit],
) -> Result<Option<(usize, u64)>, sqlx::Error> {
    let buckets: Vec<&str> = limits.iter().map(|l| l.bucket.as_str()).collect();
    let windows: Vec<f64> = limits.iter().map(|l| l.window_secs).collect();
    let caps: Vec<i32> = limits.iter().map(|l| l.limit).collect();
    // `set_config(.., true)` lasts for the statement's own transaction, whose commit it makes
    // asynchronous
    let full = sqlx::query!(
        r#"
        with async_commit as (select set_config('synchronous_commit', 'off', true)),
        input as (
            select bucket, make_interval(secs => window_secs) as width, cap
            from unnest($1::text[], $2::float8[], $3::int4[]) as u(bucket, window_secs, cap)
        ),
        held as (
            select r.bucket, r.hits, r.window_start
            from rate_limits r join input i on i.bucket = r.bucket
            order by r.bucket
            for update of r
        ),
        full_windows as (
            select h.bucket, extract(epoch from (h.window_start + i.width - now()))::float8 as remaining
            from held h join input i on i.bucket = h.bucket
            where h.window_start > now() - i.width and h.hits >= i.cap
        ),
        counted as (
            insert into rate_limits as r (bucket, window_start, hits, cap)
            select bucket, now(), 1, cap from input, async_commit
            where not exists (select from full_windows)
            order by bucket
            on conflict (bucket) do update set
                hits = case when r.window_start <= now() - (select width from input where bucket = r.bucket)
                            then 1 else r.hits + 1 end,
                window_start = case when r.window_start <= now() - (select width from input where bucket = r.bucket)
                                    then now() else r.window_start end,
                cap = excluded.cap
        )
        select bucket as "bucket!", remaining as "remaining!" from full_windows
        "#,
        &buckets as &[&str],
        &windows,
        &caps
    )
    .fetch_all(conn)
    .await?;
    Ok(limits.iter().enumerate().find_map(|(i, limit)| {
        let window = full.iter().find(|w| w.bucket == limit.bucket)?;
        Some((i, window.remaining.ceil().max(1.0) as u64))
    }))
}

/// Forgets windows that ended long ago.
pub async fn prune(conn: impl sqlx::PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query!("delete from rate_limits where window_start < now() - interval '1 day'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
