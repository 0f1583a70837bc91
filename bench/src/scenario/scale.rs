//! The scale test (`scripts/scale`, not part of the suite): facepair instances behind nginx,
//! tens of thousands of browsers following seeded logins by SSE and long polls, webhooks at a
//! steady rate straight to the instances, and one instance killed (SIGKILL) half-way through.
//! Reports webhook-to-event latency, memory per stream, and every event a client missed or
//! received twice. The browsers run in client processes of their own (`clients.rs`).

mod children;
mod clients;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use facepair::idenfy::signature;
use facepair::sim::{SimConfig, Simulator};
use sqlx::PgPool;
use uuid::Uuid;

use self::children::Children;
use self::clients::{Arrival, Follower, Poller, now_ns};
use crate::db::{Seeded, seed};
use crate::load::{percentile, webhook_body};
use crate::server::{SIGNING_KEY, SIM_KEY, SIM_SECRET};
use crate::usage::{metric, rss_kib};

#[derive(clap::Parser)]
#[command(about = "facepair's scale test: instances behind nginx (scripts/scale starts them)")]
pub struct Args {
    /// PostgreSQL itself (not PgBouncer), on the database the instances serve: the logins
    /// are seeded there and the events checked against it.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// nginx, in front of every instance (`http://127.0.0.1:8480`).
    #[arg(long)]
    nginx: String,
    /// An instance as `http://host:port=pid`, once per instance: webhooks, metrics and RSS.
    #[arg(long = "instance", required = true)]
    instances: Vec<String>,
    /// Where the iDenfy simulator listens (the instances' FACEPAIR_IDENFY_BASE_URL).
    #[arg(long, default_value = "127.0.0.1:0")]
    sim_listen: SocketAddr,
    /// SSE streams opened through nginx.
    #[arg(long, default_value_t = 20_000)]
    streams: usize,
    /// Streams following each login (several tabs and devices): logins = streams / this.
    #[arg(long, default_value_t = 4)]
    streams_per_login: usize,
    /// Long polls through nginx, on logins spread over the run, beside the streams.
    #[arg(long, default_value_t = 1_000)]
    long_polls: usize,
    /// Streams being opened at once, over all client processes (desktops arrive over time).
    #[arg(long, default_value_t = 64)]
    opening: usize,
    /// Webhooks per second, one per login, each to the next live instance in turn.
    #[arg(long, default_value_t = 50)]
    webhooks_per_second: u32,
    /// Which instance (0-based) is killed with SIGKILL once half the webhooks are sent.
    #[arg(long, default_value_t = 0)]
    kill: usize,
    /// Seconds waited after the last webhook before the events are checked.
    #[arg(long, default_value_t = 15)]
    drain: u64,
    /// Local addresses 127.1.0.1 to 127.1.0.N the clients connect from.
    #[arg(long, default_value_t = 8)]
    source_addresses: u8,
    /// Also write every live event's latency to this CSV file (seconds since the first
    /// webhook, webhook's instance, stream's instance, milliseconds), to see when tails came.
    #[arg(long)]
    samples: Option<std::path::PathBuf>,
    /// Clients (streams and long polls) per client process: a process holds at most
    /// RLIMIT_NOFILE sockets (20,000 on the standard machine, where it cannot be raised).
    #[arg(long, default_value_t = 8_000)]
    clients_per_process: usize,
    /// Internal: run as a client process, `tokens-file:streams-from:streams-to:polls-from:polls-to:logins:opening`.
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// Runs the scale test, or one of its client processes, on a runtime with a worker per CPU.
pub fn main(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    match &args.child {
        Some(spec) => runtime.block_on(children::serve(&args, spec)),
        None => runtime.block_on(run(args)),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let instances = parse_instances(&args.instances)?;
    let db = PgPool::connect(&args.database_url)
        .await
        .context("DATABASE_URL")?;
    let logins = args.streams.div_ceil(args.streams_per_login.max(1)).max(1);
    say(
        started,
        &format!(
            "seeding {logins} pending logins (each followed by {} streams)",
            args.streams_per_login
        ),
    );
    let seeded = seed(&db, logins).await?;
    sqlx::query("vacuum analyze").execute(&db).await?;
    start_simulator(args.sim_listen).await?;
    let ctx = Arc::new(Ctx::new(instances)?);
    let rss_before = ctx.rss();

    say(
        started,
        &format!(
            "opening {} SSE streams through {}",
            args.streams, args.nginx
        ),
    );
    let opening = Instant::now();
    let mut children = Children::start(&args, &seeded.watch_tokens, logins)?;
    let opened = children.expect_all("opened").await?;
    let opened_in = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = Memory::read(&ctx, &rss_before).await?;
    say(
        started,
        &format!(
            "{opened} of {} streams open after {:.1} s ({} by the instances' gauges)",
            args.streams,
            opened_in.as_secs_f64(),
            memory.open.iter().sum::<f64>()
        ),
    );

    children.tell("polls").await?;
    children.expect_all("polled").await?;
    say(
        started,
        &format!(
            "{} long polls waiting; sending {logins} webhooks at {}/s",
            args.long_polls, args.webhooks_per_second
        ),
    );
    let sent = send_webhooks(&ctx, logins, args.webhooks_per_second, args.kill).await;
    say(
        started,
        &format!("webhooks sent; waiting {} s before checking", args.drain),
    );
    tokio::time::sleep(Duration::from_secs(args.drain)).await;
    let expected = event_seqs(&db, &seeded).await?;
    let after_kill = Memory::read(&ctx, &rss_before).await?;
    children.tell("stop").await?;
    let (followers, pollers) = children.reports().await?;

    let report = Report {
        ctx: &ctx,
        args: &args,
        seeded: &seeded,
        expected: &expected,
        sent: &sent,
    };
    report.print(&memory, &after_kill, &followers, &pollers, opened_in);
    if let Some(path) = &args.samples {
        write_samples(path, &sent, &followers)?;
    }
    println!("\n(run took {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// One line per event pushed live to a stream: when its webhook was sent, from where to where,
/// and how long it took.
fn write_samples(
    path: &std::path::Path,
    sent: &Sending,
    followers: &[Follower],
) -> anyhow::Result<()> {
    let first = sent.sent.iter().flatten().map(|s| s.at).min().unwrap_or(0);
    let mut out = String::from("sent_s,webhook_instance,stream_instance,latency_ms\n");
    for f in followers {
        let Some(s) = sent.sent[f.login] else {
            continue;
        };
        for a in f.arrivals.iter().filter(|a| a.seq == 2 && !a.resumed) {
            let stream = a.instance.map_or("-".into(), |i| i.to_string());
            out.push_str(&format!(
                "{:.3},{},{stream},{:.1}\n",
                (s.at - first) as f64 / 1e9,
                s.instance,
                a.at.saturating_sub(s.at) as f64 / 1e6
            ));
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn say(started: Instant, what: &str) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// Starts the iDenfy simulator at the address the instances were given. The seeded logins
/// never call it; it answers reconciliation and anything else an instance asks.
async fn start_simulator(listen: SocketAddr) -> anyhow::Result<()> {
    let mut config = SimConfig::for_tests(SIM_KEY, SIM_SECRET, SIGNING_KEY);
    config.listen = listen;
    config.rate_limit_per_hour = u64::MAX;
    let sim = Simulator::start(config).await?;
    tokio::spawn(sim.run_until_stopped());
    Ok(())
}

struct Instance {
    url: String,
    /// `host:port`, as nginx names the upstream that answered
    address: String,
    pid: u32,
    alive: AtomicBool,
}

fn parse_instances(given: &[String]) -> anyhow::Result<Vec<Instance>> {
    given
        .iter()
        .map(|spec| {
            let (url, pid) = spec
                .rsplit_once('=')
                .with_context(|| format!("--instance {spec}: expected URL=PID"))?;
            Ok(Instance {
                url: url.to_owned(),
                address: url.trim_start_matches("http://").to_owned(),
                pid: pid
                    .parse()
                    .with_context(|| format!("--instance {spec}: pid"))?,
                alive: AtomicBool::new(true),
            })
        })
        .collect()
}

/// The instances, and the client webhooks reach them with.
struct Ctx {
    instances: Vec<Instance>,
    webhooks: reqwest::Client,
}

impl Ctx {
    fn new(instances: Vec<Instance>) -> anyhow::Result<Ctx> {
        let webhooks = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Ctx {
            instances,
            webhooks,
        })
    }

    fn rss(&self) -> Vec<Option<u64>> {
        self.instances.iter().map(|i| rss_kib(i.pid).ok()).collect()
    }
}

/// Each instance's RSS and open streams at one moment.
struct Memory {
    rss_kib: Vec<Option<u64>>,
    grown_kib: Vec<Option<u64>>,
    open: Vec<f64>,
}

impl Memory {
    async fn read(ctx: &Ctx, before: &[Option<u64>]) -> anyhow::Result<Memory> {
        let http = reqwest::Client::new();
        let mut open = Vec::new();
        for instance in &ctx.instances {
            let gauge = metric(&http, &instance.url, "facepair_sse_streams_open").await;
            open.push(gauge.unwrap_or(0.0));
        }
        let rss_kib = ctx.rss();
        let grown_kib = rss_kib
            .iter()
            .zip(before)
            .map(|(now, then)| Some(now.as_ref()?.saturating_sub((*then)?)))
            .collect();
        Ok(Memory {
            rss_kib,
            grown_kib,
            open,
        })
    }
}

/// A webhook as sent: when first tried, the instance that took it, and how many tries.
#[derive(Clone, Copy)]
struct Sent {
    /// nanoseconds since the Unix epoch, as the clients stamp arrivals
    at: u64,
    instance: usize,
    tries: u32,
}

/// What the webhooks and the kill did.
struct Sending {
    sent: Vec<Option<Sent>>,
    /// the instance killed and when, in nanoseconds since the Unix epoch
    killed: Option<(usize, u64)>,
    took: Duration,
}

/// One webhook per login at a steady `rate`, each to the next live instance; half-way through,
/// instance `kill` is killed. A webhook whose answer is lost is sent again to another instance,
/// as iDenfy retries (the copy is recognised as a duplicate if the first was committed).
async fn send_webhooks(ctx: &Arc<Ctx>, count: usize, rate: u32, kill: usize) -> Sending {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut killed = None;
    for login in 0..count {
        tick.tick().await;
        if login == count / 2 && kill < ctx.instances.len() {
            killed = Some((kill, kill_instance(&ctx.instances[kill])));
        }
        let ctx = ctx.clone();
        tasks.spawn(async move { (login, send_one(&ctx, login).await) });
    }
    let mut sent = vec![None; count];
    while let Some(Ok((login, one))) = tasks.join_next().await {
        sent[login] = one;
    }
    Sending {
        sent,
        killed,
        took: started.elapsed(),
    }
}

/// SIGKILL, as a crash or the OOM killer would end it: nothing is flushed or closed cleanly.
fn kill_instance(instance: &Instance) -> u64 {
    instance.alive.store(false, Ordering::SeqCst);
    let at = now_ns();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &instance.pid.to_string()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("could not kill instance pid {}", instance.pid);
    }
    at
}

async fn send_one(ctx: &Ctx, login: usize) -> Option<Sent> {
    let body = webhook_body(&format!("bench-{login}"));
    let sig = signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
    let at = now_ns();
    let n = ctx.instances.len();
    let mut tries = 0;
    for turn in 0..3 * n {
        let instance = (login + turn) % n;
        if !ctx.instances[instance].alive.load(Ordering::SeqCst) {
            continue;
        }
        tries += 1;
        let answer = ctx
            .webhooks
            .post(format!(
                "{}/v1/webhooks/idenfy",
                ctx.instances[instance].url
            ))
            .header("content-type", "application/json")
            .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
            .header("idenfy-signature", &sig)
            .body(body.clone())
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Some(Sent {
                at,
                instance,
                tries,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Each seeded login's last event number, from the database: what every client should have.
async fn event_seqs(db: &PgPool, seeded: &Seeded) -> anyhow::Result<HashMap<Uuid, i32>> {
    let rows: Vec<(Uuid, i32)> =
        sqlx::query_as("select id, event_seq from logins where id = any($1)")
            .bind(&seeded.login_ids)
            .fetch_all(db)
            .await?;
    if rows.len() != seeded.login_ids.len() {
        bail!(
            "{} of {} seeded logins found",
            rows.len(),
            seeded.login_ids.len()
        );
    }
    Ok(rows.into_iter().collect())
}

/// Missed, duplicated and out-of-order events over every client.
#[derive(Default)]
struct Tally {
    clients: usize,
    complete: usize,
    missed: usize,
    duplicated: usize,
    out_of_order: usize,
}

impl Tally {
    fn add(&mut self, received: &[i32], expected: i32) {
        self.clients += 1;
        let mut seen = HashSet::new();
        let mut dups = 0;
        for seq in received {
            if !seen.insert(*seq) {
                dups += 1;
            }
        }
        let missed = (1..=expected).filter(|s| !seen.contains(s)).count();
        let disorder = received.windows(2).filter(|w| w[1] <= w[0]).count();
        self.missed += missed;
        self.duplicated += dups;
        self.out_of_order += disorder;
        if missed == 0 && dups == 0 && disorder == 0 {
            self.complete += 1;
        }
    }
}

/// Latencies from a webhook's send to its event at the clients, by where they were.
#[derive(Default)]
struct Latencies {
    same: Vec<Duration>,
    cross: Vec<Duration>,
    unknown: Vec<Duration>,
    /// delivered on reconnection, from the table
    resumed: Vec<Duration>,
}

impl Latencies {
    fn add(&mut self, arrival: &Arrival, sent: &Sent) {
        let took = Duration::from_nanos(arrival.at.saturating_sub(sent.at));
        let bucket = match arrival.instance {
            _ if arrival.resumed => &mut self.resumed,
            Some(i) if i == sent.instance => &mut self.same,
            Some(_) => &mut self.cross,
            None => &mut self.unknown,
        };
        bucket.push(took);
    }

    fn live(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = [&self.same, &self.cross, &self.unknown]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        all.sort();
        all
    }
}

fn describe(label: &str, sorted: &mut [Duration]) -> String {
    sorted.sort();
    if sorted.is_empty() {
        return format!("{label}: none");
    }
    format!(
        "{label}: {} events, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        percentile(sorted, 0.5),
        percentile(sorted, 0.95),
        percentile(sorted, 0.99),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    )
}

struct Report<'a> {
    ctx: &'a Ctx,
    args: &'a Args,
    seeded: &'a Seeded,
    expected: &'a HashMap<Uuid, i32>,
    sent: &'a Sending,
}

impl Report<'_> {
    fn print(
        &self,
        memory: &Memory,
        after_kill: &Memory,
        followers: &[Follower],
        pollers: &[Poller],
        opened_in: Duration,
    ) {
        self.print_setup(followers, opened_in);
        self.print_memory(memory, after_kill);
        self.print_latency(followers, pollers);
        self.print_kill(followers);
        self.print_check(followers, pollers);
    }

    fn expected(&self, login: usize) -> i32 {
        self.expected[&self.seeded.login_ids[login]]
    }

    fn print_setup(&self, followers: &[Follower], opened_in: Duration) {
        let a = self.args;
        let opened = followers.iter().filter(|f| f.opened).count();
        println!(
            "\n== facepair scale test: {} instances behind nginx ({})",
            self.ctx.instances.len(),
            a.nginx
        );
        println!(
            "logins: {} seeded; SSE streams: {opened} of {} opened ({} per login, at most {} being opened at once, all open {:.1} s after opening began), long polls: {}",
            self.seeded.login_ids.len(),
            a.streams,
            a.streams_per_login,
            a.opening,
            opened_in.as_secs_f64(),
            a.long_polls
        );
        let mut first = vec![0usize; self.ctx.instances.len() + 1];
        for f in followers {
            let at = f.connections.first().copied().flatten();
            first[at.unwrap_or(self.ctx.instances.len())] += 1;
        }
        for (i, instance) in self.ctx.instances.iter().enumerate() {
            println!(
                "  instance {i} ({}): {} streams first opened there (nginx's X-Facepair-Upstream)",
                instance.address, first[i]
            );
        }
        if first[self.ctx.instances.len()] > 0 {
            println!("  unknown instance: {}", first[self.ctx.instances.len()]);
        }
    }

    fn print_memory(&self, memory: &Memory, after_kill: &Memory) {
        println!(
            "\n-- memory per open SSE stream (RSS growth over the streams open, read 2 s after the last opened, before any long poll)"
        );
        for (i, instance) in self.ctx.instances.iter().enumerate() {
            let (open, grown) = (memory.open[i], memory.grown_kib[i]);
            let per = grown.map_or(f64::NAN, |g| g as f64 / open.max(1.0));
            println!(
                "  instance {i} ({}): {open:.0} streams open, RSS {:.1} MiB (+{:.1} MiB): {per:.1} KiB per stream",
                instance.address,
                memory.rss_kib[i].unwrap_or(0) as f64 / 1024.0,
                grown.unwrap_or(0) as f64 / 1024.0
            );
        }
        println!(
            "  at the end (after the kill, before closing): {}",
            Self::snapshot(after_kill)
        );
    }

    fn snapshot(memory: &Memory) -> String {
        let parts: Vec<String> = (0..memory.open.len())
            .map(|i| match memory.rss_kib[i] {
                Some(rss) => format!(
                    "instance {i} {:.0} streams, RSS {:.1} MiB",
                    memory.open[i],
                    rss as f64 / 1024.0
                ),
                None => format!("instance {i} gone"),
            })
            .collect();
        parts.join("; ")
    }

    fn print_latency(&self, followers: &[Follower], pollers: &[Poller]) {
        let s = self.sent;
        let delivered = s.sent.iter().flatten().count();
        let retried = s.sent.iter().flatten().filter(|x| x.tries > 1).count();
        println!(
            "\n-- webhooks: {delivered} of {} answered 2xx in {:.1} s ({:.1}/s), straight to the instances in turn; {retried} were sent again after an answer other than 2xx or none",
            s.sent.len(),
            s.took.as_secs_f64(),
            s.sent.len() as f64 / s.took.as_secs_f64()
        );
        println!(
            "-- webhook sent to event received (its event, seq 2, on every stream of its login)"
        );
        let kill_at = s.killed.map_or(u64::MAX, |(_, at)| at);
        let phases: [(&str, &dyn Fn(u64) -> bool); 2] = [
            ("sent before the kill", &|at| at < kill_at),
            ("sent after the kill", &|at| at >= kill_at),
        ];
        for (phase, within) in phases {
            println!("  webhooks {phase}:");
            self.print_phase(followers, pollers, within);
        }
    }

    /// The latencies of the webhooks whose send time passes `within`.
    fn print_phase(
        &self,
        followers: &[Follower],
        pollers: &[Poller],
        within: &dyn Fn(u64) -> bool,
    ) {
        let sent_within = |login: usize| self.sent.sent[login].filter(|x| within(x.at));
        let mut lat = Latencies::default();
        for f in followers {
            let Some(sent) = sent_within(f.login) else {
                continue;
            };
            for arrival in f.arrivals.iter().filter(|a| a.seq == 2) {
                lat.add(arrival, &sent);
            }
        }
        let mut polls: Vec<Duration> = pollers
            .iter()
            .filter_map(|p| {
                let sent = sent_within(p.login)?;
                let (_, at, _) = p.seen.iter().find(|(seq, _, _)| *seq >= 2)?;
                Some(Duration::from_nanos(at.saturating_sub(sent.at)))
            })
            .collect();
        let lines = [
            describe("all live streams", &mut lat.live()),
            describe("same instance as the webhook", &mut lat.same),
            describe("another instance (cross-instance)", &mut lat.cross),
            describe("instance unknown", &mut lat.unknown),
            describe("read back on reconnection (not live)", &mut lat.resumed),
            describe("long polls, to the answer with the change", &mut polls),
        ];
        for line in lines
            .iter()
            .filter(|l| !l.starts_with("instance unknown: none"))
        {
            println!("    {line}");
        }
    }

    fn print_kill(&self, followers: &[Follower]) {
        let Some((killed, kill_at)) = self.sent.killed else {
            println!("\n-- no instance was killed");
            return;
        };
        let theirs: Vec<&Follower> = followers
            .iter()
            .filter(|f| f.connections.first().copied().flatten() == Some(killed))
            .collect();
        let moved = theirs.iter().filter(|f| f.connections.len() > 1).count();
        let mut onto = vec![0usize; self.ctx.instances.len()];
        for f in &theirs {
            if let Some(Some(i)) = f.connections.last() {
                onto[*i] += 1;
            }
        }
        let mut resumes: Vec<Duration> = theirs
            .iter()
            .flat_map(|f| f.resumes.iter().copied())
            .collect();
        let failed: usize = theirs.iter().map(|f| f.failed_opens).sum();
        println!(
            "\n-- instance {killed} killed (SIGKILL) after {} of {} webhooks",
            self.sent.sent.len() / 2,
            self.sent.sent.len()
        );
        println!(
            "  its streams: {}; reconnected: {moved}; now on each instance: {onto:?}; failed reopen tries: {failed}",
            theirs.len()
        );
        println!(
            "  {}",
            describe(
                "stream lost to stream open again (includes the `retry:` wait of 1-5 s)",
                &mut resumes
            )
        );
        let others: usize = followers
            .iter()
            .filter(|f| f.connections.first().copied().flatten() != Some(killed))
            .map(|f| f.connections.len() - 1)
            .sum();
        println!("  reconnections by clients of the other instances: {others}");
        let back = theirs
            .iter()
            .filter_map(|f| f.reopened.iter().find(|at| **at >= kill_at))
            .max()
            .map_or(f64::NAN, |at| (at - kill_at) as f64 / 1e9);
        println!("  the last of its clients was following again {back:.1} s after the kill");
    }

    fn print_check(&self, followers: &[Follower], pollers: &[Poller]) {
        let mut all = Tally::default();
        let mut moved = Tally::default();
        let killed = self.sent.killed.map(|(i, _)| i);
        for f in followers {
            let received: Vec<i32> = f.arrivals.iter().map(|a| a.seq).collect();
            let expected = self.expected(f.login);
            all.add(&received, expected);
            if f.connections.first().copied().flatten() == killed {
                moved.add(&received, expected);
            }
        }
        println!(
            "\n-- every client's events against the database (each login's events 1..event_seq, exactly once, in order)"
        );
        for (label, t) in [
            ("all SSE clients", &all),
            ("clients of the killed instance", &moved),
        ] {
            println!(
                "  {label}: {} of {} complete; {} events missed, {} duplicated, {} out of order",
                t.complete, t.clients, t.missed, t.duplicated, t.out_of_order
            );
        }
        let current = pollers
            .iter()
            .filter(|p| {
                p.seen
                    .last()
                    .is_some_and(|(seq, _, _)| *seq == i64::from(self.expected(p.login)))
            })
            .count();
        let errors: usize = pollers.iter().map(|p| p.errors).sum();
        println!(
            "  long polls: {current} of {} ended on their login's last event; {errors} failed polls",
            pollers.len()
        );
    }
}
