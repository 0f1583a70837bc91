//! The two databases the suite measures on: facepair's and the reference's, seeded alike.

use anyhow::Context as _;
use facepair::domain::WatchToken;
use sqlx::PgPool;
use uuid::Uuid;

use crate::scenario::Suite;

pub async fn recreate(admin: &PgPool, base: &str, name: &str) -> anyhow::Result<String> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(admin)
        .await?;
    let (prefix, _) = base
        .rsplit_once('/')
        .context("DATABASE_URL has no database name")?;
    Ok(format!("{prefix}/{name}"))
}

pub struct Seeded {
    pub login_ids: Vec<Uuid>,
    pub watch_tokens: Vec<String>,
}

/// Pending logins with one attempt each and their first event, as facepair would have written
/// them; login n has scan_ref and iDenfy token `bench-<n>`.
pub async fn seed(db: &PgPool, rows: usize) -> anyhow::Result<Seeded> {
    let mut login_ids = Vec::with_capacity(rows);
    let mut watch_tokens = Vec::with_capacity(rows);
    for chunk_start in (0..rows).step_by(10_000) {
        let n = (rows - chunk_start).min(10_000);
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let attempt_ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let tokens: Vec<WatchToken> = (0..n).map(|_| WatchToken::generate()).collect();
        let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| t.hash().to_vec()).collect();
        let idenfy_tokens: Vec<String> = (chunk_start..chunk_start + n)
            .map(|i| format!("bench-{i}"))
            .collect();
        let mut tx = db.begin().await?;
        sqlx::query(
            "insert into logins (id, scan_ref, lifetime_seconds, max_attempts, client_ip, api_key_id, watch_token_hash, status, event_seq)
             select id, t, 3600, 3, '198.51.100.7', 'bench', hash, 'pending', 1 from unnest($1::uuid[], $2::bytea[], $3::text[]) as u(id, hash, t)",
        )
        .bind(&ids)
        .bind(&hashes)
        .bind(&idenfy_tokens)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into attempts (id, login_id, number, idenfy_token, digit_string, idenfy_max_attempt_count, expires_at)
             select a, l, 1, t, lpad((random() * 99999999)::int::text, 8, '0'), 3, now() + interval '1 hour'
             from unnest($1::uuid[], $2::uuid[], $3::text[]) as u(a, l, t)",
        )
        .bind(&attempt_ids)
        .bind(&ids)
        .bind(&idenfy_tokens)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            // created a while ago, as the logins desktops wait on were: an event of the last
            // 15 s would have the backstop wake its streams during the run
            "insert into events (login_id, seq, kind, source, login_status, attempt_id, detail, created_at)
             select l, 1, 'login_created', 'platform', 'pending', a, '{\"attempt_number\": 1}', now() - interval '10 minutes'
             from unnest($1::uuid[], $2::uuid[]) as u(l, a)",
        )
        .bind(&ids)
        .bind(&attempt_ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        login_ids.extend(ids);
        watch_tokens.extend(tokens.iter().map(|t| t.expose().to_owned()));
    }
    // a database in use has received deliveries before; analyzed empty, the table would have
    // the webhook's duplicate check (`deliveries::claim`) planned as a sequential scan, a plan
    // the connections that cached it keep as the table grows
    sqlx::query(
        "insert into deliveries (id, received_at, body, body_sha256, content_type, event_type, signing_key_index, token, idenfy_status, verdict)
         select gen_random_uuid(), now() - interval '1 day', convert_to(repeat('x', 420), 'UTF8'), sha256(convert_to('history-' || g, 'UTF8')),
                'application/json', 'FACIAL_AUTHENTICATION', 0, 'history-' || g, 'SUCCESS', 'unknown_token'
         from generate_series(1, $1) as g",
    )
    .bind((rows / 10).max(1000) as i64)
    .execute(db)
    .await?;
    Ok(Seeded {
        login_ids,
        watch_tokens,
    })
}

/// Autovacuum (and with it autoanalyze) off on every table of `db` so far. Left on, its work,
/// set off by whichever run wrote most (pgbench writes three times per round to facepair's
/// once), lands in another run's seconds; each run vacuums what it wrote instead ([`vacuum`])
/// and [`settle`] analyzes.
pub async fn without_autovacuum(db: &PgPool) -> anyhow::Result<()> {
    let tables: Vec<String> =
        sqlx::query_scalar("select relname::text from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace")
            .fetch_all(db)
            .await?;
    for table in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter table {table} set (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
        )))
        .execute(db)
        .await?;
    }
    Ok(())
}

/// Removes the dead rows of the run that just wrote to `db`, before its usage is read: the
/// cost is that run's, and the next run starts from the same state.
pub async fn vacuum(db: &PgPool) -> anyhow::Result<()> {
    sqlx::query("vacuum").execute(db).await?;
    Ok(())
}

/// Starts a measured run from the same state: dead rows left by earlier runs removed,
/// statistics current, and dirty pages written out, so a checkpoint does not land in the
/// middle of the next one.
pub async fn settle(suite: &Suite) -> anyhow::Result<()> {
    for db in [&suite.app_db, &suite.ref_db] {
        sqlx::query("vacuum analyze").execute(db).await?;
    }
    sqlx::query("checkpoint").execute(&suite.admin).await?;
    Ok(())
}
