//! facepair's benchmark suite: each scenario against a `facepair serve`, beside reference
//! figures from the same PostgreSQL, printed as a table. `scripts/bench` starts it with
//! PostgreSQL and the limits. Benchmarks print figures; they never fail on a target.

mod db;
mod load;
mod pgbench;
mod report;
mod scenario;
mod server;
mod usage;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use sqlx::PgPool;

use crate::db::{recreate, seed, without_autovacuum};
use crate::report::{print_table, redact};
use crate::scenario::{Suite, creation, events, ingest, polls, startup, streams};
use crate::server::start_simulator;

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
    /// Pending attempts seeded for webhook ingest (must exceed what the runs consume: pgbench's
    /// three scripts took 650,000 of them in a full run at this machine's faster hours).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Interleaved facepair/pgbench rounds per comparison; the median round is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Which scenarios to run, e.g. `1,3`; all by default.
    #[arg(long, value_delimiter = ',', default_values_t = [1u8, 2, 3, 4, 5, 6])]
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
    // `facepair-bench scale ...`: the scale test of scripts/scale, with flags of its own
    if std::env::args().nth(1).as_deref() == Some("scale") {
        let args = scenario::scale::Args::parse_from(std::env::args().skip(1));
        return scenario::scale::main(args);
    }
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
    if !usage::reset_statements(&admin).await {
        eprintln!("statements are not counted: PostgreSQL runs without pg_stat_statements");
    }
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
        without_autovacuum(db).await?;
    }
    let sim_url = start_simulator(args.creates).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let suite = Suite {
        args,
        batch,
        admin,
        app_url,
        ref_url,
        app_db,
        ref_db,
        seeded,
        sim_url,
        http,
    };

    let (server, ready_after) = suite.start_server().await?;
    let mut rows = startup::rows(&server, ready_after)?;
    // the seeded attempts are taken in order: webhooks first, then polls, then streams
    let mut next_token = 0usize;
    if suite.runs(1) {
        rows.extend(ingest::run(&suite, &server, &mut next_token).await?);
    }
    if suite.runs(6) {
        rows.extend(events::run(&suite, &server, &mut next_token).await?);
    }
    if suite.runs(2) {
        rows.extend(polls::run(&suite, &server, next_token).await?);
    }
    if suite.runs(3) {
        rows.extend(streams::run(&suite, next_token).await?);
    }
    if suite.runs(4) {
        rows.extend(creation::run(&suite, &server).await?);
    }

    drop(server);
    print_table(&rows);
    println!(
        "\n(run took {:.0} s; load generators under {}, facepair and PostgreSQL under SCHED_OTHER; facepair at {}, PostgreSQL at {})",
        started.elapsed().as_secs_f64(),
        if batch { "SCHED_BATCH" } else { "SCHED_OTHER" },
        suite.args.facepair.display(),
        redact(&suite.args.database_url)
    );
    Ok(())
}
