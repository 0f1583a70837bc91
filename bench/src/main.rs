//! facepair's benchmark suite: runs each scenario against a release `facepair serve` and the
//! reference PostgreSQL measures it is compared with, on the same machine and database server,
//! and prints a table. Started by `scripts/bench`, which provides PostgreSQL and the limits.
//!
//! Benchmarks print figures; they never fail on a target.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use facepair::domain::WatchToken;
use facepair::idenfy::signature;
use facepair::sim::state::Eligibility;
use facepair::sim::{SimConfig, Simulator};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const API_KEY: &str = "bench-platform-api-key-0001";
const SIGNING_KEY: &str = "bench-signing-key";
const SIM_KEY: &str = "bench-sim-key";
const SIM_SECRET: &str = "bench-sim-secret";

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

struct Row {
    scenario: String,
    facepair: String,
    reference: String,
    ratio: String,
    target: String,
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

fn redact(url: &str) -> String {
    url.split('@').next_back().unwrap_or(url).to_owned()
}

fn print_table(rows: &[Row]) {
    let header = ["scenario", "facepair", "reference", "ratio", "target"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.as_str(),
                &r.facepair,
                &r.reference,
                &r.ratio,
                &r.target,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    println!();
    line(header);
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in cells {
        line(row);
    }
}

async fn recreate(admin: &PgPool, base: &str, name: &str) -> anyhow::Result<String> {
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

struct Seeded {
    login_ids: Vec<Uuid>,
    watch_tokens: Vec<String>,
}

/// Pending logins with one attempt each and their first event, as facepair would have written
/// them; login n has scan_ref and iDenfy token `bench-<n>`.
async fn seed(db: &PgPool, rows: usize) -> anyhow::Result<Seeded> {
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
    // a database in use has received deliveries before. Analyzed empty, the table would have
    // PostgreSQL plan the duplicate check of a webhook (`deliveries::claim`) as a
    // sequential scan while it is small, and a connection that caches that plan keeps it
    // as the table grows, until the next ANALYZE: runs a few seconds long would then measure
    // whichever connections happened to plan early
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

struct Server {
    url: String,
    pid: u32,
    child: std::process::Child,
}

impl Server {
    /// `batch`: this process runs under SCHED_BATCH, which facepair would inherit; it is
    /// started under the normal policy instead, as PostgreSQL runs.
    async fn start(
        bin: &PathBuf,
        batch: bool,
        db: &str,
        sim_url: &str,
        log: Option<&std::path::Path>,
    ) -> anyhow::Result<(Server, Duration)> {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let mut command = if batch {
            let mut chrt = std::process::Command::new("chrt");
            chrt.args(["--other", "0"]).arg(bin);
            chrt
        } else {
            std::process::Command::new(bin)
        };
        let child = command
            .arg("serve")
            .env("DATABASE_URL", db)
            .env("FACEPAIR_LISTEN", format!("127.0.0.1:{port}"))
            .env("FACEPAIR_API_KEYS", API_KEY)
            .env("FACEPAIR_IDENFY_BASE_URL", sim_url)
            .env("FACEPAIR_IDENFY_API_KEY", SIM_KEY)
            .env("FACEPAIR_IDENFY_API_SECRET", SIM_SECRET)
            .env("FACEPAIR_IDENFY_SIGNING_KEYS", SIGNING_KEY)
            .env("FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR", "100000000")
            .env("FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL", "100000000")
            // the limits stay on (their counters are part of the cost) but high enough
            .env("FACEPAIR_LOGINS_PER_API_KEY_PER_MINUTE", "100000000")
            .env("FACEPAIR_LOGINS_PER_CLIENT_IP_PER_HOUR", "100000000")
            .env("FACEPAIR_EXPIRY_INTERVAL_MS", "1000")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        loop {
            if let Ok(r) = probe.get(format!("{url}/health/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("facepair did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = started.elapsed();
        Ok((
            Server {
                url,
                pid: child.id(),
                child,
            },
            ready,
        ))
    }
}

/// The measured process never outlives the run, however the run ends.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's CPU time so far, in milliseconds, from `/proc/<pid>/stat`.
struct ProcCpu {
    command: String,
    parent: u32,
    /// user and system time of the process, all its threads
    own: f64,
    /// of its children that exited and were waited for
    children: f64,
}

fn proc_cpu_ms(pid: u32) -> anyhow::Result<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command is in parentheses and may hold spaces
    let (head, rest) = stat.rsplit_once(')').context("stat")?;
    let command = head.split_once('(').context("stat")?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |a: usize, b: usize| -> anyhow::Result<f64> {
        Ok((fields[a].parse::<f64>()? + fields[b].parse::<f64>()?) * 10.0)
    };
    Ok(ProcCpu {
        command,
        parent: fields[1].parse()?,
        own: ticks(11, 12)?,
        children: ticks(13, 14)?,
    })
}

/// CPU time used so far, in ms, by each party of a run: facepair, the load generator (this
/// process), pgbench (this process's children that exited) and PostgreSQL (every postgres
/// process, and the backends that exited, which the postmaster has waited for). Only this
/// suite's PostgreSQL may run on the machine.
#[derive(Clone, Copy)]
struct Cpu {
    facepair: f64,
    generator: f64,
    pgbench: f64,
    postgres: f64,
}

impl Cpu {
    fn now(facepair: u32) -> anyhow::Result<Cpu> {
        let me = proc_cpu_ms(std::process::id())?;
        let mut postgres = HashMap::new();
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // a process may end between the listing and the read
            if let Ok(p) = proc_cpu_ms(pid)
                && p.command == "postgres"
            {
                postgres.insert(pid, p);
            }
        }
        // the postmaster (the one whose parent is not postgres) holds its exited backends'
        let postgres = postgres
            .values()
            .map(|p| {
                p.own
                    + if postgres.contains_key(&p.parent) {
                        0.0
                    } else {
                        p.children
                    }
            })
            .sum();
        Ok(Cpu {
            facepair: proc_cpu_ms(facepair)?.own,
            generator: me.own,
            pgbench: me.children,
            postgres,
        })
    }

    /// The CPU each of `count` operations took since `before`, in ms.
    fn each(self, before: Cpu, count: f64) -> Cpu {
        Cpu {
            facepair: (self.facepair - before.facepair) / count,
            generator: (self.generator - before.generator) / count,
            pgbench: (self.pgbench - before.pgbench) / count,
            postgres: (self.postgres - before.postgres) / count,
        }
    }
}

/// facepair's NOTIFY statements, each for a batch of changed logins; pgbench's script sends
/// one per transaction.
const NOTIFY_BATCHES: &str = "facepair_notify_batches_total";

/// A figure from facepair's `/metrics`.
async fn metric(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("no {name} in /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{name} in /metrics"))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    Ok(facepair::memory::resident_kib(&pid.to_string())?)
}

struct Run {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn summarise(mut latencies: Vec<Duration>, errors: usize, took: Duration) -> Run {
    latencies.sort();
    Run {
        rate: latencies.len() as f64 / took.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        errors,
    }
}

/// One keep-alive HTTP/1.1 connection of the load generator, on hyper directly (the stack
/// reqwest is built on, without reqwest's pool), driven by the task that sends on it: a
/// request and its answer then cost no hand-over between tasks, which on 2 cores is CPU
/// taken from facepair.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    connection: std::pin::Pin<Box<Connection>>,
    authority: String,
}

type Connection = hyper::client::conn::http1::Connection<
    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    Full<Bytes>,
>;

impl Conn {
    async fn open(url: &str) -> anyhow::Result<Conn> {
        let authority = url.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            connection: Box::pin(connection),
            authority,
        })
    }

    fn request(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
    }

    /// The status and the whole body; `None` if the connection failed.
    async fn send(&mut self, request: http::Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
        let exchange = async {
            self.sender.ready().await.ok()?;
            let response = self.sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        tokio::select! {
            answered = exchange => answered,
            // the connection's future ends only when the connection does
            _ = self.connection.as_mut() => None,
        }
    }
}

/// `workers` clients, each on its own connection, each sending its next request as soon as
/// the last one was answered, until `secs` pass. `one(conn, i)` sends request number `i`
/// and says whether it succeeded.
///
/// The clients run on one thread per CPU, each thread a single-threaded runtime driving its
/// share of the connections (as pgbench runs with `-j 2`): no task moves between threads,
/// so a response wakes only the thread that waits for it. Each client is a task of its own,
/// so a response polls only its own client, not every client of the thread (as one future
/// joining them all would). The load generator's CPU is taken from facepair on a shared
/// machine.
async fn closed_loop<F, Fut>(
    url: &str,
    workers: usize,
    secs: Duration,
    first: usize,
    one: F,
) -> anyhow::Result<(Vec<Duration>, usize, Duration, usize)>
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Conn, bool)> + 'static,
{
    let one = Arc::new(one);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(first));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, workers.max(1));
    // every thread has its connections open before the clock starts
    let opened = Arc::new(std::sync::Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = workers / threads + usize::from(t < workers % threads);
        let (url, one, counter, opened) =
            (url.to_owned(), one.clone(), counter.clone(), opened.clone());
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<(Vec<Duration>, usize)> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let conns = runtime.block_on(async {
                    let mut conns = Vec::with_capacity(share);
                    for _ in 0..share {
                        conns.push(Conn::open(&url).await?);
                    }
                    anyhow::Ok(conns)
                });
                opened.wait();
                let deadline = Instant::now() + secs;
                let clients = tokio::task::LocalSet::new();
                let clients_done: Vec<_> = conns?
                    .into_iter()
                    .map(|mut conn| {
                        let (one, counter) = (one.clone(), counter.clone());
                        clients.spawn_local(async move {
                            let mut latencies = Vec::new();
                            let mut errors = 0;
                            while Instant::now() < deadline {
                                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let t = Instant::now();
                                let (back, ok) = one(conn, i).await;
                                conn = back;
                                if ok {
                                    latencies.push(t.elapsed());
                                } else {
                                    errors += 1;
                                }
                            }
                            (latencies, errors)
                        })
                    })
                    .collect();
                runtime.block_on(clients.run_until(async {
                    let mut all = Vec::new();
                    let mut errors = 0;
                    for client in clients_done {
                        let (latencies, n) = client.await?;
                        all.extend(latencies);
                        errors += n;
                    }
                    Ok((all, errors))
                }))
            },
        ));
    }
    let (results, took) = tokio::task::spawn_blocking(move || {
        opened.wait();
        let started = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("load generator thread"))
            .collect();
        (results, started.elapsed())
    })
    .await?;
    let mut all = Vec::new();
    let mut errors = 0;
    for r in results {
        let (l, e) = r?;
        all.extend(l);
        errors += e;
    }
    let used = counter.load(std::sync::atomic::Ordering::Relaxed);
    Ok((all, errors, took, used))
}

fn webhook_body(token: &str) -> String {
    json!({
        "id": Uuid::new_v4(), "scanRef": token, "clientId": "BENCHCLIENT", "token": token,
        "status": "SUCCESS", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "facePhoto": null,
        "ipAddress": "203.0.113.7", "failReason": null, "riskTags": []
    })
    .to_string()
}

async fn send_webhook(http: &reqwest::Client, url: &str, token: &str) -> bool {
    let body = webhook_body(token);
    let sig = signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
    match http
        .post(format!("{url}/v1/webhooks/idenfy"))
        .header("content-type", "application/json")
        .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
        .header("idenfy-signature", sig)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().is_success() && r.text().await.is_ok_and(|t| t.contains("\"applied\"")),
        Err(_) => false,
    }
}

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

fn pgbench_init(pgbench: &str, url: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new(pgbench)
        .args(["-i", "-q", "-s", "10", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("pgbench -i failed");
    }
    Ok(())
}

/// What the parties of a run used: their CPU and PostgreSQL's write-ahead log.
#[derive(Clone, Copy)]
struct Usage {
    cpu: Cpu,
    wal: Wal,
}

impl Usage {
    async fn now(facepair: u32, admin: &PgPool, disk: Option<&WalDisk>) -> anyhow::Result<Usage> {
        Ok(Usage {
            cpu: Cpu::now(facepair)?,
            wal: Wal::now(admin, disk).await?,
        })
    }

    /// What each of `count` operations used since `before`.
    fn each(self, before: Usage, count: f64) -> Usage {
        Usage {
            cpu: self.cpu.each(before.cpu, count),
            wal: self.wal.each(before.wal, count),
        }
    }
}

/// How much PostgreSQL has written to its write-ahead log so far, read from the log's
/// position rather than from `pg_stat_wal`: a backend that is busy, or went idle less than
/// ten seconds after it last reported, has not yet reported its statistics there, so they
/// would miss the end of a run on facepair's pooled connections but not on pgbench's, which
/// report when they exit. For the same reason the flushes are counted by the kernel, on the
/// disk that holds the log.
#[derive(Clone, Copy)]
struct Wal {
    kib: f64,
    flushes: Option<f64>,
}

impl Wal {
    async fn now(admin: &PgPool, disk: Option<&WalDisk>) -> anyhow::Result<Wal> {
        let bytes: f64 = sqlx::query_scalar(
            "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8",
        )
        .fetch_one(admin)
        .await?;
        Ok(Wal {
            kib: bytes / 1024.0,
            flushes: disk.and_then(WalDisk::flushes),
        })
    }

    /// The WAL each of `count` transactions wrote and flushed since `before`.
    fn each(self, before: Wal, count: f64) -> Wal {
        Wal {
            kib: (self.kib - before.kib) / count,
            flushes: self
                .flushes
                .zip(before.flushes)
                .map(|(now, then)| (now - then) / count),
        }
    }

    /// "4.2 KiB, 0.83 flushes": fewer flushes per commit than one means group commit had
    /// several commits share each.
    fn describe(&self) -> String {
        match self.flushes {
            Some(flushes) => format!("{:.1} KiB, {flushes:.2} flushes", self.kib),
            None => format!("{:.1} KiB", self.kib),
        }
    }
}

/// The statistics file of the block device that holds PostgreSQL's write-ahead log, whose
/// count of completed flushes rises by one for every WAL fsync (and any other process's on
/// that disk, which an otherwise idle machine barely has).
struct WalDisk(PathBuf);

impl WalDisk {
    /// None where the kernel does not tell: no block device under the log (tmpfs, overlays),
    /// a kernel without flush counts, or a role that may not read `data_directory`.
    async fn find(admin: &PgPool) -> Option<WalDisk> {
        use std::os::unix::fs::MetadataExt as _;
        let dir: String = sqlx::query_scalar("select current_setting('data_directory')")
            .fetch_one(admin)
            .await
            .ok()?;
        let dev = std::fs::metadata(std::path::Path::new(&dir).join("pg_wal"))
            .ok()?
            .dev();
        // glibc's encoding of a device number
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let device = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        // a partition's flushes are counted on its disk
        let disk = if device.join("partition").exists() {
            device.parent()?.to_path_buf()
        } else {
            device
        };
        let disk = WalDisk(disk.join("stat"));
        disk.flushes().map(|_| disk)
    }

    /// Flushes completed so far: the 16th field of the device's `stat`.
    fn flushes(&self) -> Option<f64> {
        std::fs::read_to_string(&self.0)
            .ok()?
            .split_whitespace()
            .nth(15)?
            .parse()
            .ok()
    }
}

/// Starts a measured run from the same state: the dirty pages of the previous run (and of
/// seeding) written out, so a checkpoint does not land in the middle of the next one.
async fn settle(admin: &PgPool) -> anyhow::Result<()> {
    sqlx::query("checkpoint").execute(admin).await?;
    Ok(())
}

/// Transactions per second from pgbench, at `clients` clients for `secs`.
fn pgbench(
    pgbench: &str,
    url: &str,
    extra: &[&str],
    clients: usize,
    secs: Duration,
) -> anyhow::Result<f64> {
    let output = std::process::Command::new(pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &secs.as_secs().to_string(),
        ])
        .args(extra)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| {
            format!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(tps)
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
