//! facepair's benchmark suite: runs each scenario against a release `facepair serve` and the
//! reference PostgreSQL measures it is compared with, on the same machine and database server,
//! and prints a table. Started by `scripts/bench`, which provides PostgreSQL and the limits.
//!
//! Benchmarks print figures; they never fail on a target.

mod db;
mod load;
mod pgbench;
mod report;
mod server;
mod usage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use facepair::idenfy::signature;
use facepair::sim::state::Eligibility;
use facepair::sim::{SimConfig, Simulator};
use http_body_util::Full;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{Seeded, recreate, seed, settle};
use crate::load::{Conn, Run, closed_loop, percentile, send_webhook, summarise, webhook_body};
use crate::pgbench::{pgbench, pgbench_init};
use crate::report::{Row, print_table, redact};
use crate::server::{API_KEY, SIGNING_KEY, SIM_KEY, SIM_SECRET, Server};
use crate::usage::{Cpu, Usage, WalDisk, metric, rss_kib};

#[derive(Parser)]
#[command(about = "facepair's benchmark suite")]
struct Args {
    /// A PostgreSQL URL whose user may create databases; `facepair_bench` and
    /// `facepair_bench_ref` are created beside it.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The facepair binary to measure (a release build).
    #[arg(long, default_value = "target/release/facepair")]
    facepair: PathBuf,
    /// The pgbench binary for the reference figures.
    #[arg(long, default_value = "pgbench")]
    pgbench: String,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Concurrent SSE streams in scenario 3.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Streams being opened at once in scenario 3 (desktops arrive over time; a number as
    /// large as `--streams` opens them in one burst, as after a deploy).
    #[arg(long, default_value_t = 64)]
    opening: usize,
    /// Webhooks sent while the streams are open, for the latency figures.
    #[arg(long, default_value_t = 500)]
    stream_samples: usize,
    /// Logins created in scenario 4.
    #[arg(long, default_value_t = 2_000)]
    creates: usize,
    /// Pending attempts seeded for webhook ingest (must exceed what the runs consume).
    #[arg(long, default_value_t = 500_000)]
    rows: usize,
    /// Interleaved facepair/pgbench rounds per comparison; the median round is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Which scenarios to run, e.g. `1,3`; all by default.
    #[arg(long, value_delimiter = ',', default_values_t = [1u8, 2, 3, 4, 5])]
    scenarios: Vec<u8>,
    /// The webhook ingest concurrencies to measure, e.g. `8`.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    ingest_clients: Vec<usize>,
    /// Keep facepair's log in this file (with `RUST_LOG` passed through) instead of
    /// discarding it, to see where a request's time goes.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// The scheduling policy of the load generators: this process's threads and pgbench.
    /// facepair and PostgreSQL keep the normal policy either way.
    #[arg(long, value_enum, default_value_t = Policy::Batch)]
    generator_policy: Policy,
}

/// Linux scheduling policies, as `chrt` names them.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Policy {
    /// SCHED_BATCH: a generator thread woken by an answer waits for the server to block or
    /// for the tick, rather than preempting it. Clients on other machines, which the
    /// generators stand in for, take no CPU from the server at all.
    Batch,
    /// SCHED_OTHER, the normal policy.
    Other,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // before the runtime starts its threads, so that each inherits it
    let batch = args.generator_policy == Policy::Batch && generators_to_batch();
    tokio::runtime::Runtime::new()?.block_on(run(args, batch))
}

/// Puts this process under SCHED_BATCH with util-linux's `chrt`; the threads it starts
/// later inherit the policy, and so does every pgbench it runs.
fn generators_to_batch() -> bool {
    let pid = std::process::id().to_string();
    let set = std::process::Command::new("chrt")
        .args(["--all-tasks", "--batch", "--pid", "0", &pid])
        .status();
    let ok = set.as_ref().is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "chrt could not set SCHED_BATCH ({set:?}): the load generators run under the normal policy"
        );
    }
    ok
}

async fn run(args: Args, batch: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let admin = PgPool::connect(&args.database_url)
        .await
        .context("DATABASE_URL")?;
    let app_url = recreate(&admin, &args.database_url, "facepair_bench").await?;
    let ref_url = recreate(&admin, &args.database_url, "facepair_bench_ref").await?;
    let app_db = PgPool::connect(&app_url).await?;
    let ref_db = PgPool::connect(&ref_url).await?;
    facepair::MIGRATOR.run(&app_db).await?;
    facepair::MIGRATOR.run(&ref_db).await?;
    eprintln!("seeding {} pending attempts in each database...", args.rows);
    let seeded = seed(&app_db, args.rows).await?;
    seed(&ref_db, args.rows).await?;
    for db in [&app_db, &ref_db] {
        sqlx::query("vacuum analyze").execute(db).await?;
    }

    let mut sim_config = SimConfig::for_tests(SIM_KEY, SIM_SECRET, SIGNING_KEY);
    // every creation is for another person, as on a platform with many users
    sim_config.scan_refs = (0..args.creates)
        .map(|i| (format!("bench-person-{i}"), Eligibility::Authentication))
        .chain([("bench-person".into(), Eligibility::Authentication)])
        .collect();
    sim_config.rate_limit_per_hour = u64::MAX;
    let sim = Simulator::start(sim_config).await?;
    let sim_url = sim.base_url();
    tokio::spawn(sim.run_until_stopped());

    let mut rows = Vec::new();

    // 5. start-up and idle footprint (first, on a quiet machine)
    let start_server = || async {
        let started = Server::start(
            &args.facepair,
            batch,
            &app_url,
            &sim_url,
            args.server_log.as_deref(),
        )
        .await;
        // past start-up's allocations before anything is measured
        tokio::time::sleep(Duration::from_millis(500)).await;
        started
    };
    let (server, ready_after) = start_server().await?;
    let idle_rss = rss_kib(server.pid)?;
    rows.push(Row {
        scenario: "5. start-up: exec to /health/ready".into(),
        facepair: format!("{:.0} ms", ready_after.as_secs_f64() * 1000.0),
        reference: "-".into(),
        ratio: "-".into(),
        target: "<= 1000 ms".into(),
    });
    rows.push(Row {
        scenario: "5. idle RSS after start".into(),
        facepair: format!("{:.1} MiB", idle_rss as f64 / 1024.0),
        reference: "-".into(),
        ratio: "-".into(),
        target: "<= 30 MiB".into(),
    });

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let secs = Duration::from_secs(args.seconds);

    let run = |n: u8| args.scenarios.contains(&n);
    let mut next_token = 0usize;

    if run(1) {
        // 1. webhook ingest
        // the attempts pgbench takes, one after the other (bench/webhook.sql)
        sqlx::query("create sequence bench_tokens minvalue 0 start 0")
            .execute(&ref_db)
            .await?;
        // facepair always listens to its own NOTIFYs: PostgreSQL then signals the listening
        // backend at every notifying commit and sends it the notification. The reference
        // has a listener too, or its NOTIFY would cost PostgreSQL less than facepair's
        let mut listener = sqlx::postgres::PgListener::connect(&ref_url).await?;
        listener.listen(facepair::live::CHANNEL).await?;
        let reference_listener =
            tokio::spawn(async move { while listener.recv().await.is_ok() {} });
        let disk = WalDisk::find(&admin).await;
        for &concurrency in &args.ingest_clients {
            // facepair and pgbench take turns, so both see the same machine; the round with
            // the median ratio is reported
            let mut rounds = Vec::new();
            for _ in 0..args.rounds.max(1) {
                settle(&admin).await?;
                let before = Usage::now(server.pid, &admin, disk.as_ref()).await?;
                let batches_before = metric(&http, &server.url, NOTIFY_BATCHES).await?;
                let run = webhooks(&server.url, &mut next_token, concurrency, secs).await?;
                let webhooks_sent = run.rate * secs.as_secs_f64();
                let used = Usage::now(server.pid, &admin, disk.as_ref())
                    .await?
                    .each(before, webhooks_sent);
                // the batches of the last webhooks may still be gathering
                tokio::time::sleep(facepair::live::notify::GATHER * 2).await;
                let batches = (metric(&http, &server.url, NOTIFY_BATCHES).await? - batches_before)
                    / webhooks_sent;
                let mut reference = [0.0; 2];
                let mut reference_used = used;
                for (notify, rate) in reference.iter_mut().enumerate() {
                    settle(&admin).await?;
                    let before = Usage::now(server.pid, &admin, disk.as_ref()).await?;
                    *rate = pgbench(
                        &args.pgbench,
                        &ref_url,
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
                        reference_used = Usage::now(server.pid, &admin, disk.as_ref())
                            .await?
                            .each(before, *rate * secs.as_secs_f64());
                    }
                }
                let [without_notify, with_notify] = reference;
                rounds.push((
                    run.rate / with_notify,
                    run,
                    (used, reference_used, batches),
                    with_notify,
                    without_notify,
                ));
            }
            rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let spread = format!(
                "{:.2}x median of {} rounds ({:.2}-{:.2}); {:.2}x without NOTIFY",
                rounds[rounds.len() / 2].0,
                rounds.len(),
                rounds[0].0,
                rounds[rounds.len() - 1].0,
                rounds[rounds.len() / 2].1.rate / rounds[rounds.len() / 2].4,
            );
            let (_, run, (used, reference_used, batches), reference, without_notify) =
                &rounds[rounds.len() / 2];
            rows.push(Row {
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
                ratio: spread,
                target: ">= 0.8x".into(),
            });
        }
        reference_listener.abort();
        let taken: i64 = sqlx::query_scalar("select last_value from bench_tokens")
            .fetch_one(&ref_db)
            .await?;
        if taken >= args.rows as i64 {
            eprintln!(
                "warning: pgbench ran {taken} webhook transactions on {} seeded attempts, so it \
                 also updated finished ones, which costs less; raise --rows",
                args.rows
            );
        }
    }

    if run(2) {
        // 2. status polls, plain and conditional
        let poll_ids = seeded
            .login_ids
            .get(next_token + 1000..next_token + 11_000)
            .with_context(|| {
                format!(
                    "--rows {} leaves fewer than 10,000 logins to poll after the webhooks \
                     took {next_token}: raise --rows",
                    args.rows
                )
            })?;
        let poll_ids: Arc<Vec<Uuid>> = Arc::new(poll_ids.to_vec());
        pgbench_init(&args.pgbench, &ref_url)?;
        for conditional in [false, true] {
            let mut rounds = Vec::new();
            for _ in 0..args.rounds.max(1) {
                // the CPU each request takes, from each party: steadier than the rate on a
                // shared machine, and all of it comes out of the same cores
                let before = Cpu::now(server.pid)?;
                let reference = pgbench(&args.pgbench, &ref_url, &["-S"], 32, secs)?;
                let reference_cpu =
                    Cpu::now(server.pid)?.each(before, reference * secs.as_secs_f64());
                let before = Cpu::now(server.pid)?;
                let run =
                    polls(&http, &server.url, poll_ids.clone(), conditional, 32, secs).await?;
                let cpu = Cpu::now(server.pid)?.each(before, run.rate * secs.as_secs_f64());
                rounds.push((run.rate / reference, run, reference, (cpu, reference_cpu)));
            }
            rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (ratio, run, reference, (cpu, reference_cpu)) = &rounds[rounds.len() / 2];
            rows.push(Row {
                scenario: format!(
                    "2. status polls{}, 32 clients",
                    if conditional {
                        " with If-None-Match (304)"
                    } else {
                        ""
                    }
                ),
                facepair: format!(
                    "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} errors; CPU each: facepair {:.1} us, load generator {:.1} us)",
                    run.rate,
                    run.p50_ms,
                    run.p99_ms,
                    run.errors,
                    cpu.facepair * 1000.0,
                    cpu.generator * 1000.0
                ),
                reference: format!(
                    "{reference:.0}/s pgbench -S (CPU each: PostgreSQL {:.1} us, pgbench {:.1} us)",
                    reference_cpu.postgres * 1000.0,
                    reference_cpu.pgbench * 1000.0
                ),
                ratio: format!(
                    "{ratio:.2}x median of {} rounds ({:.2}-{:.2})",
                    rounds.len(),
                    rounds[0].0,
                    rounds[rounds.len() - 1].0
                ),
                target: ">= 1.5x".into(),
            });
        }
    }

    if run(3) {
        // 3. waiting clients
        let stream_base = next_token + 11_000;
        let streams = (args.streams).min(seeded.login_ids.len().saturating_sub(stream_base));
        if streams == 0 {
            bail!(
                "--rows {} leaves no logins to open streams on after the webhooks and polls \
                 took {stream_base}: raise --rows",
                args.rows
            );
        }
        // a fresh process: memory freed by the earlier scenarios would otherwise be reused
        // by the streams and hide part of their cost
        let (fresh, _) = start_server().await?;
        let result = waiting_clients(
            &fresh,
            &seeded,
            stream_base,
            streams,
            args.stream_samples,
            args.opening,
        )
        .await?;
        drop(fresh);
        rows.push(Row {
            scenario: format!("3. memory per open SSE stream ({streams} open)"),
            facepair: format!("{:.1} KiB", result.kib_per_stream),
            reference: "-".into(),
            ratio: "-".into(),
            target: "<= 20 KiB".into(),
        });
        rows.push(Row {
            scenario: format!("3. webhook-to-event latency, {streams} open"),
            facepair: format!(
                "p50 {:.2} ms, p99 {:.2} ms ({} of {} events)",
                result.p50_ms, result.p99_ms, result.received, result.sent
            ),
            reference: "-".into(),
            ratio: "-".into(),
            target: "p99 <= 50 ms".into(),
        });
        rows.push(Row {
            scenario: "3. RSS once every stream closed".into(),
            facepair: format!(
                "{:.1} MiB (before the first opened: {:.1} MiB; every stream closed {:.1} s after its client left; read {} s later)",
                result.idle_after_kib as f64 / 1024.0,
                result.idle_before_kib as f64 / 1024.0,
                result.all_closed_after.as_secs_f64(),
                AFTER_THE_WAVE.as_secs()
            ),
            reference: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        });
    }

    if run(4) {
        // 4. login creation against the simulator
        let create = creates(&http, &server.url, &sim_url, args.creates).await?;
        rows.push(Row {
            scenario: "4. login creation: facepair's own time".into(),
            facepair: format!(
                "p50 {:.2} ms, p99 {:.2} ms",
                create.own_p50_ms, create.own_p99_ms
            ),
            reference: format!(
                "simulator alone p50 {:.2} ms, p99 {:.2} ms",
                create.sim_p50_ms, create.sim_p99_ms
            ),
            ratio: format!(
                "total p50 {:.2} ms, p99 {:.2} ms",
                create.total_p50_ms, create.total_p99_ms
            ),
            target: "own p99 <= 5 ms".into(),
        });
    }

    drop(server);
    print_table(&rows);
    println!(
        "\n(run took {:.0} s; load generators under {}, facepair and PostgreSQL under SCHED_OTHER; facepair at {}, PostgreSQL at {})",
        started.elapsed().as_secs_f64(),
        if batch { "SCHED_BATCH" } else { "SCHED_OTHER" },
        args.facepair.display(),
        redact(&args.database_url)
    );
    Ok(())
}

/// facepair's NOTIFY statements, each for a batch of changed logins; pgbench's script sends
/// one per transaction.
const NOTIFY_BATCHES: &str = "facepair_notify_batches_total";

async fn webhooks(
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

async fn polls(
    http: &reqwest::Client,
    url: &str,
    ids: Arc<Vec<Uuid>>,
    conditional: bool,
    concurrency: usize,
    secs: Duration,
) -> anyhow::Result<Run> {
    let mut etags = HashMap::new();
    if conditional {
        for id in ids.iter() {
            let r = http
                .get(format!("{url}/v1/logins/{id}"))
                .bearer_auth(API_KEY)
                .send()
                .await?;
            let status = r.status();
            let etag = r
                .headers()
                .get("etag")
                .map(|e| e.to_str().map(str::to_owned));
            let etag = etag.transpose()?.with_context(|| {
                format!("GET /v1/logins/{id} answered {status} without an ETag")
            })?;
            etags.insert(*id, etag);
        }
    }
    // every request's parts made and checked once, before the clock starts: the load
    // generator's CPU is taken from facepair on a shared machine
    let authorization = http::HeaderValue::from_str(&format!("Bearer {API_KEY}"))?;
    let host = http::HeaderValue::from_str(url.trim_start_matches("http://"))?;
    let prepared = ids
        .iter()
        .map(|id| {
            let uri: http::Uri = format!("/v1/logins/{id}").parse()?;
            let etag = etags
                .get(id)
                .map(|e| http::HeaderValue::from_str(e))
                .transpose()?;
            Ok((uri, etag))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prepared = Arc::new(prepared);
    let want = if conditional { 304 } else { 200 };
    let (latencies, errors, took, _) =
        closed_loop(url, concurrency, secs, 0, move |mut conn: Conn, i| {
            let (prepared, host, authorization) =
                (prepared.clone(), host.clone(), authorization.clone());
            async move {
                let (uri, etag) = &prepared[i % prepared.len()];
                let mut request = http::Request::new(Full::new(Bytes::new()));
                *request.uri_mut() = uri.clone();
                let headers = request.headers_mut();
                headers.insert(http::header::HOST, host);
                headers.insert(http::header::AUTHORIZATION, authorization);
                if let Some(etag) = etag {
                    headers.insert(http::header::IF_NONE_MATCH, etag.clone());
                }
                let ok = conn
                    .send(request)
                    .await
                    .is_some_and(|(status, _)| status == want);
                (conn, ok)
            }
        })
        .await?;
    Ok(summarise(latencies, errors, took))
}

/// How long after the last stream closed its RSS is read: facepair hands freed memory back to
/// the system periodically, after dropping the cached rows nobody read in a whole period.
const AFTER_THE_WAVE: Duration = Duration::from_secs(facepair::memory::EVERY.as_secs() * 2 + 1);

struct Waiting {
    kib_per_stream: f64,
    /// RSS before the first stream opened and [`AFTER_THE_WAVE`] after the last one closed.
    idle_before_kib: u64,
    idle_after_kib: u64,
    /// From the last client leaving to facepair having closed every stream.
    all_closed_after: Duration,
    p50_ms: f64,
    p99_ms: f64,
    sent: usize,
    received: usize,
}

/// Opens `count` watch streams, measures facepair's RSS growth, then sends webhooks for a
/// sample of them and times each from send to the event arriving on its stream. Then closes
/// every stream and measures what facepair keeps once they are gone.
async fn waiting_clients(
    server: &Server,
    seeded: &Seeded,
    first: usize,
    count: usize,
    samples: usize,
    opening: usize,
) -> anyhow::Result<Waiting> {
    let before = rss_kib(server.pid)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    // desktops arrive over time: at most `opening` streams are being opened at once, so the
    // figure is what an open stream keeps, not the high-water mark of thousands of requests
    // queued for the database at the same instant (which glibc keeps mapped afterwards)
    let opening = Arc::new(tokio::sync::Semaphore::new(opening.max(1)));
    let mut streams = tokio::task::JoinSet::new();
    for k in 0..count {
        let token = seeded.watch_tokens[first + k].clone();
        let permit = opening.clone().acquire_owned().await?;
        let (client, url, arrived, opened) = (
            client.clone(),
            server.url.clone(),
            arrived_tx.clone(),
            opened.clone(),
        );
        streams.spawn(async move {
            let mut permit = Some(permit);
            let Ok(mut response) = client
                .get(format!("{url}/v1/watch/{token}/events"))
                .send()
                .await
            else {
                return;
            };
            let mut buffer = String::new();
            let mut announced = false;
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                if !announced && buffer.contains("event: login_created") {
                    announced = true;
                    opened.add_permits(1);
                    permit.take();
                }
                if buffer.contains("event: attempt_succeeded") {
                    let _ = arrived.send((k, Instant::now()));
                    return;
                }
            }
        });
    }
    let all_open =
        tokio::time::timeout(Duration::from_secs(120), opened.acquire_many(count as u32)).await;
    if all_open.is_err() {
        bail!("not every stream opened within 120 s");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid)?;
    let kib_per_stream = after.saturating_sub(before) as f64 / count as f64;

    let http = reqwest::Client::new();
    let mut sent_at = HashMap::new();
    let step = (count / samples.max(1)).max(1);
    for k in (0..count).step_by(step).take(samples) {
        let token = format!("bench-{}", first + k);
        sent_at.insert(k, Instant::now());
        send_webhook(&http, &server.url, &token).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while latencies.len() < sent_at.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), arrived_rx.recv()).await {
            Ok(Some((k, at))) => {
                if let Some(sent) = sent_at.get(&k) {
                    latencies.push(at - *sent);
                }
            }
            _ => continue,
        }
    }
    let received = latencies.len();
    latencies.sort();
    // every desktop goes away; facepair notices a gone client when a write to it fails, at
    // the latest on the second keep-alive comment after it left
    streams.shutdown().await;
    drop(client);
    let closed_at = Instant::now();
    loop {
        let open = metric(&http, &server.url, "facepair_sse_streams_open").await?;
        if open == 0.0 {
            break;
        }
        // a client's close is read at once (0.0-0.3 s for 10,000 streams); a keep-alive
        // interval means facepair waited for a write to fail instead
        if closed_at.elapsed() > facepair::live::sse::KEEP_ALIVE {
            bail!(
                "{open} streams still open {:?} after every client left",
                closed_at.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_closed_after = closed_at.elapsed();
    tokio::time::sleep(AFTER_THE_WAVE).await;
    let idle_after_kib = rss_kib(server.pid)?;
    Ok(Waiting {
        kib_per_stream,
        idle_before_kib: before,
        idle_after_kib,
        all_closed_after,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        sent: sent_at.len(),
        received,
    })
}

struct Creation {
    total_p50_ms: f64,
    total_p99_ms: f64,
    sim_p50_ms: f64,
    sim_p99_ms: f64,
    own_p50_ms: f64,
    own_p99_ms: f64,
}

/// Creates logins one at a time, and separately times the simulator answering the same two
/// iDenfy calls facepair makes; facepair's own time is the difference.
async fn creates(
    http: &reqwest::Client,
    url: &str,
    sim_url: &str,
    count: usize,
) -> anyhow::Result<Creation> {
    let mut total = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v1/logins"))
            .bearer_auth(API_KEY)
            .json(&json!({ "scan_ref": format!("bench-person-{i}") }))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("create answered {}: {}", r.status(), r.text().await?);
        }
        r.bytes().await?;
        total.push(t.elapsed());
    }
    let mut sim = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        http.get(format!(
            "{sim_url}/identification/facial-auth/bench-person/check-status/?method=FACE_MATCHING"
        ))
        .basic_auth(SIM_KEY, Some(SIM_SECRET))
        .send()
        .await?
        .bytes()
        .await?;
        http.post(format!("{sim_url}/partner/authentication-info"))
            .basic_auth(SIM_KEY, Some(SIM_SECRET))
            .json(&json!({ "scanRef": "bench-person", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "generateDigitString": true, "lifetime": 600 }))
            .send()
            .await?
            .bytes()
            .await?;
        sim.push(t.elapsed());
    }
    total.sort();
    sim.sort();
    let (t50, t99, s50, s99) = (
        percentile(&total, 0.5),
        percentile(&total, 0.99),
        percentile(&sim, 0.5),
        percentile(&sim, 0.99),
    );
    Ok(Creation {
        total_p50_ms: t50,
        total_p99_ms: t99,
        sim_p50_ms: s50,
        sim_p99_ms: s99,
        own_p50_ms: t50 - s50,
        own_p99_ms: t99 - s99,
    })
}
