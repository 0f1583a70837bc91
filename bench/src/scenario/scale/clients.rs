//! The browsers of the scale test, in a process of their own (`facepair-bench scale --child`):
//! one process may hold only RLIMIT_NOFILE sockets, so the coordinator spreads the clients
//! over several. It speaks with them in lines on stdin and stdout.

use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// What a client process is given besides the shared flags.
pub struct Share {
    pub streams: Range<usize>,
    pub polls: Range<usize>,
    pub logins: usize,
    /// long poll j follows login j * poll_step, so that they spread over the whole run
    pub poll_step: usize,
    pub opening: usize,
}

/// What a client process reports, one JSON object per line, once stopped.
#[derive(Serialize, Deserialize)]
pub enum Report {
    Follower(Follower),
    Poller(Poller),
}

/// Runs this process's clients: opens its streams and says `opened N`; on `polls` opens its
/// long polls and says `polled`; on `stop` (or end of input) stops them and writes reports.
pub async fn serve(clients: Clients, share: Share) -> anyhow::Result<()> {
    let ctx = Arc::new(clients);
    let (followers, open) = open_streams(&ctx, share.streams, share.logins, share.opening).await;
    println!("opened {open}");
    let mut pollers = tokio::task::JoinSet::new();
    if next_line().await.as_deref() == Some("polls") {
        pollers = open_long_polls(&ctx, share.polls, share.logins, share.poll_step).await;
        println!("polled");
        next_line().await;
    }
    let _ = ctx.stop.send(true);
    let mut out = std::io::stdout().lock();
    for report in join(followers).await.into_iter().map(Report::Follower) {
        serde_json::to_writer(&mut out, &report)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    for report in join(pollers).await.into_iter().map(Report::Poller) {
        serde_json::to_writer(&mut out, &report)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    Ok(())
}

async fn next_line() -> Option<String> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line.trim().to_owned())
    })
    .await
    .ok()
    .flatten()
}

async fn join<T: 'static>(mut tasks: tokio::task::JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        if let Ok(value) = done {
            out.push(value);
        }
    }
    out
}

/// Nanoseconds since the Unix epoch, comparable between the processes of one machine.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What every client of a process works with.
pub struct Clients {
    nginx: String,
    /// `host:port` of each instance, as nginx names the upstream that answered
    instances: Vec<String>,
    tokens: Vec<String>,
    /// one client per local address; each stream takes a connection of its own
    clients: Vec<reqwest::Client>,
    stop: watch::Sender<bool>,
}

impl Clients {
    /// Clients connecting from 127.1.0.1 to 127.1.0.`sources`: no one address runs out of
    /// ephemeral ports, and facepair tells the browsers' addresses from nginx's.
    pub fn new(
        nginx: &str,
        instances: Vec<String>,
        tokens: Vec<String>,
        sources: u8,
    ) -> anyhow::Result<Clients> {
        let clients = (1..=sources.max(1))
            .map(|n| {
                reqwest::Client::builder()
                    .local_address(IpAddr::V4(Ipv4Addr::new(127, 1, 0, n)))
                    .pool_max_idle_per_host(0)
                    .build()
            })
            .collect::<Result<_, _>>()?;
        let (stop, _) = watch::channel(false);
        Ok(Clients {
            nginx: nginx.trim_end_matches('/').to_owned(),
            instances,
            tokens,
            clients,
            stop,
        })
    }

    fn client(&self, k: usize) -> &reqwest::Client {
        &self.clients[k % self.clients.len()]
    }

    /// The instance nginx says answered (`X-Facepair-Upstream`, which scripts/scale enables).
    fn instance_of(&self, response: &reqwest::Response) -> Option<usize> {
        let upstream = response
            .headers()
            .get("x-facepair-upstream")?
            .to_str()
            .ok()?;
        instance_of(self, Some(upstream.to_owned()))
    }
}

/// One event as a stream delivered it.
#[derive(Serialize, Deserialize)]
pub struct Arrival {
    pub seq: i32,
    /// nanoseconds since the Unix epoch: the clock every process of the run shares
    pub at: u64,
    pub instance: Option<usize>,
    /// in the opening chunk of a reconnection: read back from the table, not pushed live
    pub resumed: bool,
}

/// What one SSE client saw over the run.
#[derive(Serialize, Deserialize)]
pub struct Follower {
    pub login: usize,
    pub arrivals: Vec<Arrival>,
    /// the instance of each connection, in order
    pub connections: Vec<Option<usize>>,
    /// from noticing its stream was gone to the next one open, per reconnection
    pub resumes: Vec<Duration>,
    /// when each of those reconnections was open, in nanoseconds since the Unix epoch
    pub reopened: Vec<u64>,
    pub failed_opens: usize,
    /// opened at least once before the deadline
    pub opened: bool,
}

/// Opens the streams numbered `streams`, each on login k % `logins`, with at most `opening`
/// being opened at once; returns the clients and how many opened before the deadline.
async fn open_streams(
    ctx: &Arc<Clients>,
    streams: Range<usize>,
    logins: usize,
    opening: usize,
) -> (tokio::task::JoinSet<Follower>, usize) {
    let gate = Arc::new(Semaphore::new(opening.max(1)));
    let opened = Arc::new(Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let count = streams.len();
    let spawn_and_wait = async {
        for k in streams {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let first_open = FirstOpen(Some((permit, opened.clone())));
            tasks.spawn(follow(ctx.clone(), k, k % logins, first_open));
        }
        let _ = opened.acquire_many(count as u32).await;
    };
    if tokio::time::timeout(OPEN_DEADLINE, spawn_and_wait)
        .await
        .is_err()
    {
        eprintln!(
            "not every stream opened within {} s: {} of {count} did",
            OPEN_DEADLINE.as_secs(),
            opened.available_permits()
        );
    }
    let open = opened.available_permits().min(count);
    (tasks, open)
}

const OPEN_DEADLINE: Duration = Duration::from_secs(600);

/// Releases the opening slot and counts the stream open, once, when its first chunk arrives.
struct FirstOpen(Option<(OwnedSemaphorePermit, Arc<Semaphore>)>);

impl FirstOpen {
    fn done(&mut self) {
        if let Some((_, opened)) = self.0.take() {
            opened.add_permits(1);
        }
    }
}

/// A browser's EventSource: follows the login's stream through nginx, and after a lost
/// stream waits the last `retry:` and reconnects with `Last-Event-ID`, until told to stop.
async fn follow(ctx: Arc<Clients>, k: usize, login: usize, mut first_open: FirstOpen) -> Follower {
    let mut f = Follower {
        login,
        arrivals: Vec::new(),
        connections: Vec::new(),
        resumes: Vec::new(),
        reopened: Vec::new(),
        failed_opens: 0,
        opened: false,
    };
    let mut stop = ctx.stop.subscribe();
    let mut retry = Duration::from_millis(3000);
    let mut lost: Option<Instant> = None;
    while !*stop.borrow() {
        let last = f.arrivals.last().map(|a| a.seq);
        match open_stream(&ctx, k, login, last).await {
            Ok(Some((response, instance))) => {
                if let Some(at) = lost.take() {
                    f.resumes.push(at.elapsed());
                    f.reopened.push(now_ns());
                }
                f.connections.push(instance);
                f.opened = true;
                let resumed = f.connections.len() > 1;
                let read = Reading {
                    instance,
                    resumed,
                    retry: &mut retry,
                    first_open: &mut first_open,
                };
                read.stream(response, &mut f.arrivals, &mut stop).await;
            }
            // caught up on a login that can no longer change
            Ok(None) => break,
            Err(()) => f.failed_opens += 1,
        }
        lost.get_or_insert_with(Instant::now);
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    f
}

/// The stream's response and the instance behind it; `None` for 204 (nothing more to come).
async fn open_stream(
    ctx: &Clients,
    k: usize,
    login: usize,
    last: Option<i32>,
) -> Result<Option<(reqwest::Response, Option<usize>)>, ()> {
    let url = format!("{}/v1/watch/{}/events", ctx.nginx, ctx.tokens[login]);
    let mut request = ctx.client(k).get(url).header("accept", "text/event-stream");
    if let Some(seq) = last {
        request = request.header("last-event-id", seq.to_string());
    }
    let response = request.send().await.map_err(|_| ())?;
    match response.status().as_u16() {
        200 => {
            let instance = ctx.instance_of(&response);
            Ok(Some((response, instance)))
        }
        204 => Ok(None),
        _ => Err(()),
    }
}

struct Reading<'a> {
    instance: Option<usize>,
    resumed: bool,
    retry: &'a mut Duration,
    first_open: &'a mut FirstOpen,
}

impl Reading<'_> {
    /// Reads events until the stream ends or the run stops.
    async fn stream(
        self,
        mut response: reqwest::Response,
        arrivals: &mut Vec<Arrival>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let mut buffer = Vec::new();
        let mut opening = true;
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(Some(chunk)) = chunk else { return };
            buffer.extend_from_slice(&chunk);
            let at = now_ns();
            for block in take_blocks(&mut buffer) {
                if let Some(ms) = block.retry {
                    *self.retry = Duration::from_millis(ms);
                }
                if let Some(seq) = block.id {
                    arrivals.push(Arrival {
                        seq,
                        at,
                        instance: self.instance,
                        resumed: self.resumed && opening,
                    });
                }
            }
            self.first_open.done();
            opening = false;
        }
    }
}

/// The fields of one SSE event that matter here.
struct Block {
    id: Option<i32>,
    retry: Option<u64>,
}

/// Takes every complete event (ended by a blank line) off the front of `buffer`.
fn take_blocks(buffer: &mut Vec<u8>) -> Vec<Block> {
    let mut blocks = Vec::new();
    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buffer.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&block);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        blocks.push(Block {
            id: field("id:").and_then(|v| i32::try_from(v).ok()),
            retry: field("retry:"),
        });
    }
    blocks
}

/// What one long-polling client saw: each new `event_seq` of its login, when and from where.
#[derive(Serialize, Deserialize)]
pub struct Poller {
    pub login: usize,
    pub seen: Vec<(i64, u64, Option<usize>)>,
    pub errors: usize,
}

/// Starts the long polls numbered `polls` through nginx, each on login j * `step` % `logins`, and waits until each has
/// had its first answer.
async fn open_long_polls(
    ctx: &Arc<Clients>,
    polls: Range<usize>,
    logins: usize,
    step: usize,
) -> tokio::task::JoinSet<Poller> {
    let answered = Arc::new(Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let count = polls.len();
    for j in polls {
        tasks.spawn(long_poll(
            ctx.clone(),
            j,
            j * step % logins,
            answered.clone(),
        ));
    }
    let all = answered.acquire_many(count as u32);
    if tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .is_err()
    {
        eprintln!("not every long poll was answered within 120 s");
    }
    tasks
}

/// A browser long-polling the login (`?wait=60` with `If-None-Match`) until told to stop.
async fn long_poll(ctx: Arc<Clients>, j: usize, login: usize, answered: Arc<Semaphore>) -> Poller {
    let mut p = Poller {
        login,
        seen: Vec::new(),
        errors: 0,
    };
    let mut stop = ctx.stop.subscribe();
    let mut etag: Option<String> = None;
    let url = format!("{}/v1/watch/{}?wait=60", ctx.nginx, ctx.tokens[login]);
    while !*stop.borrow() {
        let mut request = ctx.client(j).get(&url);
        if let Some(tag) = &etag {
            request = request.header("if-none-match", tag);
        }
        let answer = tokio::select! {
            answer = poll_once(request) => answer,
            _ = stop.wait_for(|s| *s) => break,
        };
        let pause = match answer {
            Polled::Changed(tag, seq, instance) => {
                if p.seen.is_empty() {
                    answered.add_permits(1);
                }
                if p.seen.last().is_none_or(|(last, _, _)| *last < seq) {
                    p.seen.push((seq, now_ns(), instance_of(&ctx, instance)));
                }
                etag = tag;
                Duration::ZERO
            }
            Polled::Same => Duration::ZERO,
            Polled::SlowDown(wait) => wait,
            Polled::Failed => {
                p.errors += 1;
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    p
}

/// The instance behind an upstream address; after a failed try nginx lists every upstream it
/// tried, and the last one answered.
fn instance_of(ctx: &Clients, upstream: Option<String>) -> Option<usize> {
    let upstream = upstream?;
    let last = upstream.rsplit(", ").next()?;
    ctx.instances.iter().position(|i| i == last)
}

enum Polled {
    /// a new document: its ETag, `event_seq`, and the upstream that answered
    Changed(Option<String>, i64, Option<String>),
    Same,
    SlowDown(Duration),
    Failed,
}

async fn poll_once(request: reqwest::RequestBuilder) -> Polled {
    let Ok(response) = request.send().await else {
        return Polled::Failed;
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match response.status().as_u16() {
        200 => {
            let (tag, upstream) = (header("etag"), header("x-facepair-upstream"));
            let Ok(doc) = response.json::<serde_json::Value>().await else {
                return Polled::Failed;
            };
            let seq = doc["event_seq"].as_i64().unwrap_or(0);
            Polled::Changed(tag, seq, upstream)
        }
        304 => Polled::Same,
        429 => {
            let secs = header("retry-after").and_then(|v| v.parse().ok());
            Polled::SlowDown(Duration::from_secs(secs.unwrap_or(1)))
        }
        _ => Polled::Failed,
    }
}
