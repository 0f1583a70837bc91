//! Scenario 1: webhook ingest, facepair against pgbench running the same SQL
//! (`bench/webhook.sql`) and the least SQL that does the same durable work
//! (`bench/webhook-minimal.sql`) on the same PostgreSQL, at each concurrency.

use std::time::Duration;

use bytes::Bytes;
use facepair::idenfy::signature;
use http_body_util::Full;

use super::Suite;
use crate::db::{settle, vacuum};
use crate::load::{Conn, Run, closed_loop, summarise, webhook_body};
use crate::pgbench::pgbench;
use crate::report::Row;
use crate::server::{SIGNING_KEY, Server};
use crate::usage::{Usage, WalDisk, metric};

/// One row per concurrency; `next_token` is the first seeded attempt not yet taken, and
/// moves past the ones these webhooks took.
pub async fn run(
    suite: &Suite,
    server: &Server,
    next_token: &mut usize,
) -> anyhow::Result<Vec<Row>> {
    let args = &suite.args;
    // the attempts pgbench takes, one after the other (bench/webhook.sql)
    sqlx::query("create sequence bench_tokens minvalue 0 start 0")
        .execute(&suite.ref_db)
        .await?;
    // facepair always listens to its own NOTIFYs: PostgreSQL then signals the listening
    // backend at every notifying commit and sends it the notification. The reference
    // has a listener too, or its NOTIFY would cost PostgreSQL less than facepair's
    let mut listener = sqlx::postgres::PgListener::connect(&suite.ref_url).await?;
    listener.listen(facepair::live::CHANNEL).await?;
    let reference_listener = tokio::spawn(async move { while listener.recv().await.is_ok() {} });
    let disk = WalDisk::find(&suite.admin).await;
    let mut rows = Vec::new();
    for &concurrency in &args.ingest_clients {
        // facepair and pgbench take turns, so both see the same machine; the round with
        // the median ratio is reported
        let mut rounds = Vec::new();
        for _ in 0..args.rounds.max(1) {
            rounds.push(round(suite, server, disk.as_ref(), next_token, concurrency).await?);
        }
        rounds.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
        rows.push(row(concurrency, &rounds));
        rows.push(minimal_row(concurrency, &rounds));
    }
    reference_listener.abort();
    let taken: i64 = sqlx::query_scalar("select last_value from bench_tokens")
        .fetch_one(&suite.ref_db)
        .await?;
    if taken >= args.rows as i64 {
        eprintln!(
            "warning: pgbench ran {taken} webhook transactions on {} seeded attempts, so it \
             also updated finished ones, which costs less; raise --rows",
            args.rows
        );
    }
    Ok(rows)
}

/// One facepair run followed by pgbench without and with NOTIFY.
struct Round {
    /// facepair's rate over pgbench's with NOTIFY
    ratio: f64,
    run: Run,
    used: Usage,
    reference_used: Usage,
    /// facepair's NOTIFY statements per webhook
    batches: f64,
    with_notify: f64,
    without_notify: f64,
    /// pgbench running the least SQL that does the same durable work (bench/webhook-minimal.sql)
    minimal: f64,
    minimal_used: Usage,
}

async fn round(
    suite: &Suite,
    server: &Server,
    disk: Option<&WalDisk>,
    next_token: &mut usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    let (args, admin, http, secs) = (&suite.args, &suite.admin, &suite.http, suite.secs());
    settle(suite).await?;
    let before = Usage::now(server.pid, admin, disk).await?;
    let batches_before = metric(http, &server.url, NOTIFY_BATCHES).await?;
    let run = webhooks(&server.url, next_token, concurrency, secs).await?;
    let webhooks_sent = run.rate * secs.as_secs_f64();
    vacuum(&suite.app_db).await?;
    let used = Usage::now(server.pid, admin, disk)
        .await?
        .each(before, webhooks_sent);
    // the batches of the last webhooks may still be gathering
    tokio::time::sleep(facepair::live::notify::GATHER * 2).await;
    let batches =
        (metric(http, &server.url, NOTIFY_BATCHES).await? - batches_before) / webhooks_sent;
    let mut reference = [0.0; 2];
    let mut reference_used = used;
    for (notify, rate) in reference.iter_mut().enumerate() {
        settle(suite).await?;
        let before = Usage::now(server.pid, admin, disk).await?;
        *rate = pgbench(
            &args.pgbench,
            &suite.ref_url,
            &[
                "-f",
                "bench/webhook.sql",
                "-D",
                &format!("rows={}", args.rows),
                "-D",
                &format!("notify={notify}"),
            ],
            concurrency,
            secs,
        )?;
        if notify == 1 {
            vacuum(&suite.ref_db).await?;
            reference_used = Usage::now(server.pid, admin, disk)
                .await?
                .each(before, *rate * secs.as_secs_f64());
        }
    }
    let [without_notify, with_notify] = reference;
    settle(suite).await?;
    let before = Usage::now(server.pid, admin, disk).await?;
    let minimal = pgbench(
        &args.pgbench,
        &suite.ref_url,
        &[
            "-f",
            "bench/webhook-minimal.sql",
            "-D",
            &format!("rows={}", args.rows),
        ],
        concurrency,
        secs,
    )?;
    vacuum(&suite.ref_db).await?;
    let minimal_used = Usage::now(server.pid, admin, disk)
        .await?
        .each(before, minimal * secs.as_secs_f64());
    Ok(Round {
        minimal,
        minimal_used,
        ratio: run.rate / with_notify,
        run,
        used,
        reference_used,
        batches,
        with_notify,
        without_notify,
    })
}

/// facepair against the minimal same-work SQL: the median round by rate ratio.
fn minimal_row(concurrency: usize, rounds: &[Round]) -> Row {
    let mut ratios: Vec<(f64, &Round)> =
        rounds.iter().map(|r| (r.run.rate / r.minimal, r)).collect();
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, median) = ratios[ratios.len() / 2];
    let pg = median.used.cpu.postgres / median.minimal_used.cpu.postgres;
    Row {
        scenario: format!("1. webhook ingest against the minimal SQL, concurrency {concurrency}"),
        facepair: format!(
            "{:.0}/s; each: PostgreSQL CPU {:.3} ms, {}",
            median.run.rate,
            median.used.cpu.postgres,
            median.used.describe_statements()
        ),
        reference: format!(
            "{:.0}/s pgbench, bench/webhook-minimal.sql; each: PostgreSQL CPU {:.3} ms, {}",
            median.minimal,
            median.minimal_used.cpu.postgres,
            median.minimal_used.describe_statements()
        ),
        ratio: format!(
            "{ratio:.2}x median of {} rounds ({:.2}-{:.2}); PostgreSQL CPU {pg:.2}x the reference's",
            ratios.len(),
            ratios[0].0,
            ratios[ratios.len() - 1].0,
        ),
        target: ">= 0.8x; PostgreSQL CPU <= 1.25x".into(),
    }
}

/// The median round of `rounds`, sorted by ratio, and their spread.
fn row(concurrency: usize, rounds: &[Round]) -> Row {
    let median = &rounds[rounds.len() / 2];
    let Round {
        run,
        used,
        reference_used,
        batches,
        with_notify: reference,
        without_notify,
        ..
    } = median;
    Row {
        scenario: format!("1. webhook ingest, concurrency {concurrency}"),
        facepair: format!(
            "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} errors; CPU each: facepair {:.3} ms, PostgreSQL {:.3} ms, load generator {:.3} ms; WAL each: {}; NOTIFYs each: {batches:.2})",
            run.rate,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            used.cpu.facepair,
            used.cpu.postgres,
            used.cpu.generator,
            used.wal.describe()
        ),
        reference: format!(
            "{reference:.0}/s pgbench, same SQL ({without_notify:.0}/s without NOTIFY; CPU each: PostgreSQL {:.3} ms, pgbench {:.3} ms; WAL each: {})",
            reference_used.cpu.postgres,
            reference_used.cpu.pgbench,
            reference_used.wal.describe()
        ),
        ratio: format!(
            "{:.2}x median of {} rounds ({:.2}-{:.2}); {:.2}x without NOTIFY",
            median.ratio,
            rounds.len(),
            rounds[0].ratio,
            rounds[rounds.len() - 1].ratio,
            run.rate / without_notify,
        ),
        target: ">= 0.8x".into(),
    }
}

/// facepair's NOTIFY statements, each for a batch of changed logins; pgbench's script sends
/// one per transaction.
const NOTIFY_BATCHES: &str = "facepair_notify_batches_total";

pub async fn webhooks(
    url: &str,
    next: &mut usize,
    concurrency: usize,
    secs: Duration,
) -> anyhow::Result<Run> {
    let (latencies, errors, took, used) = closed_loop(
        url,
        concurrency,
        secs,
        *next,
        |mut conn: Conn, i| async move {
            let body = webhook_body(&format!("bench-{i}"));
            let sig = signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
            let request = conn
                .request("POST", "/v1/webhooks/idenfy")
                .header("content-type", "application/json")
                .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
                .header("idenfy-signature", sig)
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let ok = conn.send(request).await.is_some_and(|(status, body)| {
                status == 200 && body.windows(9).any(|w| w == b"\"applied\"")
            });
            (conn, ok)
        },
    )
    .await?;
    *next = used;
    Ok(summarise(latencies, errors, took))
}
