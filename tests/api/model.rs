//! A model-based test of the whole API. Seeded random sequences of every operation (logins,
//! new codes from the platform and the browser, cancel, redeem, webhooks of every status for
//! current and older codes and their duplicates, plain and long polls, SSE streams, codes and
//! approvals that expire) run from several clients at once against two instances. Exact
//! outcomes depend on the interleaving, so what is checked is what must hold whatever it is:
//! each answer against what its operation may give and what the model already knows
//! ([`allowed`], [`check_document`], the operations of [`Run`]), PostgreSQL after every step
//! ([`Run::check_store`]), and everything together once the clients are done ([`Run::finish`]).
//!
//! `FACEPAIR_MODEL_SEED` picks the seeds (`7`, `1,5,9` or `1-50`; CI runs [`CI_SEEDS`]),
//! `FACEPAIR_MODEL_STEPS` the steps per seed. A failure names its seed, client, step and
//! operation. A seed draws the same operations for each client every time; which logins they
//! meet and how they interleave depend on timing, so a replay may take a few runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::helpers::*;

const CI_SEEDS: [u64; 3] = [1, 2, 3];
const CI_STEPS: usize = 150;
const CLIENTS: usize = 4;
/// Longer than any answer may take here; a request still unanswered then is a failure.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// How long the end state may take to settle (streams catching up, the clock's expiries
/// being recorded).
const SETTLE_WITHIN: Duration = Duration::from_secs(15);
const APPROVAL_TTL: Duration = Duration::from_secs(2);
const CLIENT_IP: &str = "198.51.100.7";
const FINAL: [&str; 3] = ["redeemed", "canceled", "exhausted"];

#[sqlx::test]
async fn random_sequences_keep_the_invariants(pool: PgPool) {
    let seeds = seeds();
    let steps = std::env::var("FACEPAIR_MODEL_STEPS")
        .ok()
        .map(|v| v.parse().expect("FACEPAIR_MODEL_STEPS is a number"))
        .unwrap_or(CI_STEPS);
    for (run, seed) in seeds.into_iter().enumerate() {
        let started = Instant::now();
        let summary = Run::execute(pool.clone(), run, seed, steps).await;
        println!(
            "seed {seed}: {steps} steps in {:.1} s\n{summary}",
            started.elapsed().as_secs_f64()
        );
    }
}

fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("FACEPAIR_MODEL_SEED") else {
        return CI_SEEDS.to_vec();
    };
    let number = |s: &str| -> u64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("FACEPAIR_MODEL_SEED: {s:?} is not a seed"))
    };
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((from, to)) => (number(from)..=number(to)).collect::<Vec<_>>(),
            None => vec![number(part)],
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Platform,
    Watch,
}

/// One operation, with every random choice already drawn. Logins are named by their index in
/// the model, bodies by their index among the webhooks sent so far.
#[derive(Debug, Clone)]
enum Op {
    Create {
        on: usize,
        person: usize,
        lifetime: Option<u32>,
        stream_on: usize,
    },
    /// `burst` requests at once, spread over both instances (a double click, a retry).
    NewCode {
        login: usize,
        on: usize,
        from: Side,
        burst: usize,
    },
    Cancel {
        login: usize,
        on: usize,
    },
    Redeem {
        login: usize,
        on: usize,
        burst: usize,
    },
    Webhook {
        login: usize,
        on: usize,
        /// `None`: the login's current code; `Some(k)`: an older one, picked with `k`.
        older: Option<usize>,
        status: &'static str,
        /// The phone's address: the desktop's network, another one, or none reported.
        phone: Option<&'static str>,
    },
    Resend {
        body: usize,
        on: usize,
    },
    Poll {
        login: usize,
        on: usize,
        side: Side,
        if_none_match: bool,
    },
    LongPoll {
        login: usize,
        on: usize,
        side: Side,
        wait: u32,
        /// An ETag the login no longer has: answered at once.
        stale: bool,
        background: bool,
    },
    Stream {
        login: usize,
        on: usize,
        side: Side,
    },
}

const INSTANCE: [&str; 2] = ["A", "B"];

impl Op {
    fn draw(rng: &mut StdRng, logins: usize, bodies: usize) -> Op {
        let on = rng.random_range(0..2);
        let side = if rng.random_bool(0.5) {
            Side::Platform
        } else {
            Side::Watch
        };
        if logins == 0 || rng.random_range(0..100) < 8 {
            return Op::Create {
                on,
                person: rng.random_range(0..3),
                lifetime: [None, None, Some(2), Some(3)][rng.random_range(0..4)],
                stream_on: rng.random_range(0..2),
            };
        }
        // most operations go to the latest logins, so that clients meet on the same ones
        let recent = logins.min(6);
        let login = if rng.random_bool(0.75) {
            logins - 1 - rng.random_range(0..recent)
        } else {
            rng.random_range(0..logins)
        };
        let roll = rng.random_range(0..100);
        match roll {
            0..16 => Op::NewCode {
                login,
                on,
                from: side,
                burst: rng.random_range(1..=3),
            },
            16..19 => Op::Cancel { login, on },
            19..30 => Op::Redeem {
                login,
                on,
                burst: rng.random_range(1..=3),
            },
            30..56 => Op::Webhook {
                login,
                on,
                older: rng.random_bool(0.25).then(|| rng.random_range(0..8)),
                status: [
                    "SUCCESS",
                    "SUCCESS",
                    "SUCCESS",
                    "FAILED",
                    "FAILED",
                    "CANCELED",
                    "EXPIRED",
                    "PROCESSING",
                ][rng.random_range(0..8)],
                phone: [None, Some("198.51.100.20"), Some("203.0.113.50")][rng.random_range(0..3)],
            },
            56..64 if bodies > 0 => Op::Resend {
                body: rng.random_range(0..bodies),
                on,
            },
            56..78 => Op::Poll {
                login,
                on,
                side,
                if_none_match: rng.random_bool(0.5),
            },
            78..92 => {
                // a long poll in the foreground holds its client: short, but the clock runs
                let background = rng.random_bool(0.5);
                Op::LongPoll {
                    login,
                    on,
                    side,
                    stale: rng.random_bool(0.2),
                    background,
                    wait: if background {
                        rng.random_range(1..=2)
                    } else {
                        1
                    },
                }
            }
            _ => Op::Stream { login, on, side },
        }
    }
}

/// What an operation is, with the login it acted on, for failure messages.
struct Label<'a> {
    op: &'a Op,
    login: Option<&'a str>,
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.op)?;
        if let Some(id) = self.login {
            write!(f, " (login {id})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Login {
    id: String,
    watch_token: String,
    scan_ref: String,
}

/// One event as a stream delivered it.
#[derive(Debug, Clone)]
struct Delivered {
    id: i64,
    kind: String,
    status: String,
}

struct Stream {
    login: String,
    label: String,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    /// Times the stream ended before it had delivered a final status.
    early_ends: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
}

/// What the clients have learnt, shared between them.
#[derive(Default)]
struct Model {
    logins: Vec<Login>,
    /// Webhook bodies answered 200, to be delivered again.
    bodies: Vec<(String, Vec<u8>)>,
    /// Each attempt's status from when it was first seen terminal in PostgreSQL.
    terminal: HashMap<String, String>,
    /// Logins redeemed, with the operation that did it.
    redeemed: HashMap<String, String>,
    canceled: HashSet<String>,
    /// The last ETag each client saw for each login.
    etags: HashMap<(usize, String), String>,
    streams: Vec<Stream>,
    background: Vec<JoinHandle<()>>,
    tally: BTreeMap<String, usize>,
}

#[derive(Clone)]
struct Target {
    base: String,
    http: reqwest::Client,
}

impl Target {
    fn request(&self, method: reqwest::Method, path: &str, side: Side) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match side {
            Side::Platform => request.bearer_auth(API_KEY),
            Side::Watch => request,
        }
    }
}

struct Answer {
    status: u16,
    code: String,
    body: Value,
    etag: Option<String>,
    elapsed: Duration,
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let started = Instant::now();
    let response = request
        .timeout(ANSWER_WITHIN)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("{status}, body unread: {e}"))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Answer {
        status,
        code,
        body,
        etag,
        elapsed: started.elapsed(),
    })
}

/// The answers each operation may give: (status, error code), "" for a success.
const NEW_CODE: &[(u16, &str)] = &[
    (201, ""),
    (409, "already_approved"),
    (409, "already_redeemed"),
    (409, "login_canceled"),
    (409, "code_being_issued"),
    (429, "attempt_budget_exhausted"),
];
const CANCEL: &[(u16, &str)] = &[
    (200, ""),
    (409, "already_redeemed"),
    (409, "login_finished"),
];
const REDEEM: &[(u16, &str)] = &[
    (200, ""),
    (409, "already_redeemed"),
    (409, "not_approved"),
    (409, "approval_expired"),
];
const PLATFORM_READ: &[(u16, &str)] = &[(200, ""), (304, "")];
const WATCH_READ: &[(u16, &str)] = &[(200, ""), (304, ""), (429, "slow_down")];

fn allowed(answer: &Answer, allowed: &[(u16, &str)]) -> Result<(), String> {
    if answer.status >= 500 {
        return Err(format!("answered {}: {}", answer.status, answer.body));
    }
    if allowed
        .iter()
        .any(|&(status, code)| status == answer.status && code == answer.code)
    {
        return Ok(());
    }
    Err(format!(
        "answered {} {:?}, which this operation may not give: {}",
        answer.status, answer.code, answer.body
    ))
}

fn ensure(holds: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if holds { Ok(()) } else { Err(what()) }
}

/// A login document (GET, a change's answer, an SSE event's data) says one consistent thing.
fn check_document(
    doc: &Value,
    etag: Option<&str>,
    side: Side,
    login_id: &str,
) -> Result<(), String> {
    let status = doc["status"].as_str().unwrap_or_default();
    let attempt = doc["attempt"]["status"].as_str().unwrap_or_default();
    ensure((status == "pending") == (attempt == "pending"), || {
        format!("login {status} with its attempt {attempt}: {doc}")
    })?;
    ensure(
        !matches!(status, "approved" | "redeemed") || attempt == "succeeded",
        || format!("login {status} with its attempt {attempt}: {doc}"),
    )?;
    ensure(
        doc["attempt"]["digit_string"].is_string() == (attempt == "pending"),
        || format!("a code shown with the attempt {attempt}: {doc}"),
    )?;
    if let Some(etag) = etag {
        let expected = format!("\"{}-{status}\"", doc["event_seq"]);
        ensure(etag == expected, || {
            format!("ETag {etag} for the document {expected}")
        })?;
    }
    match side {
        Side::Platform => ensure(doc["login_id"] == login_id, || {
            format!("another login's document: {doc}")
        }),
        Side::Watch => ensure(
            doc.get("login_id").is_none()
                && doc.get("scan_ref").is_none()
                && doc.get("user_ref").is_none(),
            || format!("the browser was shown identity data: {doc}"),
        ),
    }
}

struct Run {
    seed: u64,
    apps: [TestApp; 2],
    targets: [Target; 2],
    /// Every scan_ref of this run starts with it.
    people: String,
    model: Mutex<Model>,
    /// Failures of background work (long polls, streams), raised at the next step.
    failures: Arc<Mutex<Vec<String>>>,
    steps: AtomicUsize,
    /// Store checks one at a time, so that each reads a snapshot newer than the last.
    checking: tokio::sync::Mutex<()>,
}

impl Run {
    /// Runs one seed on two fresh instances and checks the end state; returns a tally of the
    /// answers given.
    async fn execute(pool: PgPool, run: usize, seed: u64, steps: usize) -> String {
        // an instance closes its pool when it stops: each seed's first instance has its own
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect_with((*pool.connect_options()).clone())
            .await
            .unwrap();
        let a = TestApp::spawn_with(pool, |s| {
            s.approval_ttl = APPROVAL_TTL;
            s.poll_interval_seconds = 1;
            s.max_attempts_per_scan_ref_hour = 1_000_000;
            s.max_attempts_per_scan_ref_hour_total = 1_000_000;
        })
        .await;
        a.mock_eligible().await;
        let b = a.second_instance().await;
        let targets = [&a, &b].map(|app| Target {
            base: app.base.clone(),
            http: app.http.clone(),
        });
        let run = Run {
            seed,
            apps: [a, b],
            targets,
            people: format!("model-{run}-{seed}-"),
            model: Mutex::default(),
            failures: Arc::default(),
            steps: AtomicUsize::new(0),
            checking: tokio::sync::Mutex::new(()),
        };
        let clients = (0..CLIENTS).map(|client| {
            let share = steps / CLIENTS + usize::from(client < steps % CLIENTS);
            run.client(client, share)
        });
        futures_util::future::join_all(clients).await;
        run.finish().await;
        let tally = std::mem::take(&mut run.model.lock().unwrap().tally);
        let [mut a, mut b] = run.apps;
        a.stop().await;
        b.stop().await;
        tally
            .iter()
            .map(|(what, n)| format!("  {n:>4} {what}\n"))
            .collect()
    }

    async fn client(&self, client: usize, steps: usize) {
        let mut rng = StdRng::seed_from_u64(
            self.seed
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add(client as u64),
        );
        for step in 0..steps {
            let (logins, bodies) = {
                let model = self.model.lock().unwrap();
                (model.logins.len(), model.bodies.len())
            };
            let op = Op::draw(&mut rng, logins, bodies);
            let number = self.steps.fetch_add(1, Ordering::Relaxed);
            let login = self.login_of(&op);
            let label = format!(
                "seed {}, client {client}, step {step} (#{number} of the run), {}",
                self.seed,
                Label {
                    op: &op,
                    login: login.as_ref().map(|l| l.id.as_str())
                }
            );
            let result = async {
                self.perform(client, &op, login.as_ref(), &label).await?;
                self.check_store().await?;
                self.background_failures()
            }
            .await;
            if let Err(what) = result {
                panic!(
                    "{label}: {what}\nreplay: FACEPAIR_MODEL_SEED={} cargo nextest run model",
                    self.seed
                );
            }
        }
    }

    fn login_of(&self, op: &Op) -> Option<Login> {
        let model = self.model.lock().unwrap();
        let index = match op {
            Op::Create { .. } => return None,
            Op::Resend { body, .. } => {
                let id = &model.bodies[*body].0;
                return model.logins.iter().find(|l| &l.id == id).cloned();
            }
            Op::NewCode { login, .. }
            | Op::Cancel { login, .. }
            | Op::Redeem { login, .. }
            | Op::Webhook { login, .. }
            | Op::Poll { login, .. }
            | Op::LongPoll { login, .. }
            | Op::Stream { login, .. } => *login,
        };
        model.logins.get(index).cloned()
    }

    fn count(&self, what: String) {
        *self.model.lock().unwrap().tally.entry(what).or_default() += 1;
    }

    /// A fact of the end state, for the summary.
    fn note(&self, what: &str, n: usize) {
        self.model
            .lock()
            .unwrap()
            .tally
            .insert(format!("(end) {what}"), n);
    }

    fn background_failures(&self) -> Result<(), String> {
        let failures = self.failures.lock().unwrap();
        ensure(failures.is_empty(), || {
            format!("background work failed:\n{}", failures.join("\n"))
        })
    }

    async fn perform(
        &self,
        client: usize,
        op: &Op,
        login: Option<&Login>,
        label: &str,
    ) -> Result<(), String> {
        match (op, login) {
            (
                &Op::Create {
                    on,
                    person,
                    lifetime,
                    stream_on,
                },
                _,
            ) => self.create(on, person, lifetime, stream_on, label).await,
            (
                &Op::NewCode {
                    on, from, burst, ..
                },
                Some(login),
            ) => {
                let answers = (0..burst).map(|i| self.new_code(login, (on + i) % 2, from));
                futures_util::future::try_join_all(answers).await.map(drop)
            }
            (&Op::Cancel { on, .. }, Some(login)) => self.cancel(login, on).await,
            (&Op::Redeem { on, burst, .. }, Some(login)) => {
                let answers = (0..burst).map(|i| self.redeem(login, (on + i) % 2, label));
                futures_util::future::try_join_all(answers).await.map(drop)
            }
            (
                &Op::Webhook {
                    on,
                    older,
                    status,
                    phone,
                    ..
                },
                Some(login),
            ) => self.webhook(login, on, older, status, phone).await,
            (&Op::Resend { body, on }, _) => self.resend(body, on).await,
            (
                &Op::Poll {
                    on,
                    side,
                    if_none_match,
                    ..
                },
                Some(login),
            ) => self.poll(client, login, on, side, if_none_match).await,
            (
                &Op::LongPoll {
                    on,
                    side,
                    wait,
                    stale,
                    background,
                    ..
                },
                Some(login),
            ) => {
                self.long_poll(login, on, side, wait, stale, background, label)
                    .await
            }
            (&Op::Stream { on, side, .. }, Some(login)) => {
                self.open_stream(login, on, side, label);
                Ok(())
            }
            (op, None) => Err(format!("no login for {op:?}")),
        }
    }

    async fn create(
        &self,
        on: usize,
        person: usize,
        lifetime: Option<u32>,
        stream_on: usize,
        label: &str,
    ) -> Result<(), String> {
        let scan_ref = format!("{}p{person}", self.people);
        let mut body =
            json!({ "scan_ref": scan_ref, "user_ref": "model-user", "client_ip": CLIENT_IP });
        if let Some(seconds) = lifetime {
            body["lifetime_seconds"] = json!(seconds);
        }
        let request = self.targets[on]
            .request(reqwest::Method::POST, "/v1/logins", Side::Platform)
            .json(&body);
        let created = answer(request).await?;
        self.count(format!("create {}", created.status));
        allowed(&created, &[(201, "")])?;
        let doc = &created.body;
        let id = doc["login_id"].as_str().unwrap_or_default().to_owned();
        check_document(doc, None, Side::Platform, &id)?;
        ensure(
            doc["status"] == "pending" && doc["attempt"]["number"] == 1,
            || format!("a new login that is not pending on its first code: {doc}"),
        )?;
        let login = Login {
            id,
            watch_token: doc["watch_token"].as_str().unwrap_or_default().to_owned(),
            scan_ref,
        };
        self.model.lock().unwrap().logins.push(login.clone());
        // every login is followed from its first event
        self.open_stream(&login, stream_on, Side::Platform, label);
        Ok(())
    }

    async fn new_code(&self, login: &Login, on: usize, from: Side) -> Result<(), String> {
        let (redeemed, canceled) = self.known_end(login);
        let path = match from {
            Side::Platform => format!("/v1/logins/{}/attempts", login.id),
            Side::Watch => format!("/v1/watch/{}/attempts", login.watch_token),
        };
        let issued = answer(self.targets[on].request(reqwest::Method::POST, &path, from)).await?;
        self.count(format!(
            "new code ({from:?}) {} {}",
            issued.status, issued.code
        ));
        allowed(&issued, NEW_CODE)?;
        if redeemed {
            ensure(issued.code == "already_redeemed", || {
                "a redeemed login was answered otherwise".into()
            })?;
        } else if canceled {
            ensure(issued.code == "login_canceled", || {
                "a canceled login was answered otherwise".into()
            })?;
        }
        if issued.status == 201 {
            let doc = &issued.body;
            check_document(doc, issued.etag.as_deref(), from, &login.id)?;
            ensure(
                doc["status"] == "pending" && doc["attempt"]["number"].as_i64() >= Some(2),
                || format!("a new code that is not pending: {doc}"),
            )?;
        }
        Ok(())
    }

    async fn cancel(&self, login: &Login, on: usize) -> Result<(), String> {
        let (redeemed, canceled) = self.known_end(login);
        let path = format!("/v1/logins/{}/cancel", login.id);
        let answered =
            answer(self.targets[on].request(reqwest::Method::POST, &path, Side::Platform)).await?;
        self.count(format!("cancel {} {}", answered.status, answered.code));
        allowed(&answered, CANCEL)?;
        if redeemed {
            ensure(answered.code == "already_redeemed", || {
                "a redeemed login was answered otherwise".into()
            })?;
        } else if canceled {
            ensure(answered.status == 200, || {
                "canceling twice was refused".into()
            })?;
        }
        if answered.status == 200 {
            check_document(
                &answered.body,
                answered.etag.as_deref(),
                Side::Platform,
                &login.id,
            )?;
            ensure(answered.body["status"] == "canceled", || {
                format!("canceled, yet: {}", answered.body)
            })?;
            self.model.lock().unwrap().canceled.insert(login.id.clone());
        }
        Ok(())
    }

    async fn redeem(&self, login: &Login, on: usize, label: &str) -> Result<(), String> {
        let (redeemed, canceled) = self.known_end(login);
        let path = format!("/v1/logins/{}/redeem", login.id);
        let answered =
            answer(self.targets[on].request(reqwest::Method::POST, &path, Side::Platform)).await?;
        self.count(format!("redeem {} {}", answered.status, answered.code));
        allowed(&answered, REDEEM)?;
        if redeemed {
            ensure(answered.code == "already_redeemed", || {
                "a redeemed login was answered otherwise".into()
            })?;
        } else if canceled {
            ensure(answered.code == "not_approved", || {
                "a canceled login was answered otherwise".into()
            })?;
        }
        if answered.status != 200 {
            return Ok(());
        }
        let who = &answered.body;
        ensure(
            who["login_id"] == login.id.as_str() && who["scan_ref"] == login.scan_ref.as_str(),
            || format!("redeemed someone else: {who}"),
        )?;
        let attempt = who["attempt_id"].as_str().unwrap_or_default();
        let status = self.attempt_status(attempt).await?;
        ensure(status == "succeeded", || {
            format!("redeemed on the attempt {attempt}, which is {status}")
        })?;
        if let Some(before) = self
            .model
            .lock()
            .unwrap()
            .redeemed
            .insert(login.id.clone(), label.to_owned())
        {
            return Err(format!("redeemed a second time; the first: {before}"));
        }
        Ok(())
    }

    async fn webhook(
        &self,
        login: &Login,
        on: usize,
        older: Option<usize>,
        status: &'static str,
        phone: Option<&'static str>,
    ) -> Result<(), String> {
        let attempts: Vec<(String, String, String)> = sqlx::query_as(
            "select id::text, idenfy_token, status from attempts
             where login_id = $1::uuid order by number",
        )
        .bind(&login.id)
        .fetch_all(&self.apps[0].pool)
        .await
        .map_err(|e| e.to_string())?;
        let pick = match older {
            Some(k) if attempts.len() > 1 => k % (attempts.len() - 1),
            _ => attempts.len() - 1,
        };
        let (attempt, token, before) = &attempts[pick];
        // known before sending: afterwards, another client's redeem may follow this approval
        let (redeemed, canceled) = self.known_end(login);
        let mut extra = json!({ "scanRef": login.scan_ref, "ipAddress": phone });
        if status == "FAILED" {
            extra["failReason"] = json!("FACE_MISMATCH");
        }
        let body = webhook_body(token, status, extra);
        let received = self.deliver(on, body.as_bytes()).await?;
        let verdict = received.body["verdict"].as_str().unwrap_or_default();
        self.count(format!("webhook {status} {} {verdict}", received.status));
        allowed(&received, &[(200, "")])?;
        let expected: &[&str] = if status == "PROCESSING" {
            &["unknown_status"]
        } else if before != "pending" || redeemed || canceled {
            &["late", "attempt_terminal"]
        } else {
            &["applied", "late", "attempt_terminal"]
        };
        ensure(expected.contains(&verdict), || {
            format!("verdict {verdict} for {status} on an attempt that was {before}")
        })?;
        // what the verdict says of the attempt is true afterwards, and for good
        let (after, source): (String, Option<String>) =
            sqlx::query_as("select status, outcome_source from attempts where id = $1::uuid")
                .bind(attempt)
                .fetch_one(&self.apps[0].pool)
                .await
                .map_err(|e| e.to_string())?;
        let source = source.unwrap_or_default();
        match verdict {
            "applied" => {
                let outcome = match status {
                    "SUCCESS" => "succeeded",
                    "FAILED" => "failed",
                    "CANCELED" => "canceled",
                    _ => "expired",
                };
                ensure(after == outcome && source == "webhook", || {
                    format!("applied {status}, yet the attempt is {after} from {source}")
                })?;
            }
            "attempt_terminal" => ensure(
                after != "pending" && matches!(source.as_str(), "webhook" | "reconciliation"),
                || format!("attempt_terminal, yet the attempt is {after} from {source:?}"),
            )?,
            "late" => ensure(
                after != "pending" && !matches!(source.as_str(), "webhook" | "reconciliation"),
                || format!("late, yet the attempt is {after} from {source:?}"),
            )?,
            _ => {}
        }
        self.model
            .lock()
            .unwrap()
            .bodies
            .push((login.id.clone(), body.into_bytes()));
        Ok(())
    }

    async fn resend(&self, body: usize, on: usize) -> Result<(), String> {
        let body = self.model.lock().unwrap().bodies[body].1.clone();
        let received = self.deliver(on, &body).await?;
        let verdict = received.body["verdict"].as_str().unwrap_or_default();
        self.count(format!("webhook again {} {verdict}", received.status));
        allowed(&received, &[(200, "")])?;
        ensure(verdict == "duplicate", || {
            format!("the same body again was judged {verdict}")
        })
    }

    async fn deliver(&self, on: usize, body: &[u8]) -> Result<Answer, String> {
        let signature = facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body);
        let request = self.targets[on]
            .request(reqwest::Method::POST, "/v1/webhooks/idenfy", Side::Watch)
            .header("content-type", "application/json")
            .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
            .header("idenfy-signature", signature)
            .body(body.to_vec());
        answer(request).await
    }

    async fn poll(
        &self,
        client: usize,
        login: &Login,
        on: usize,
        side: Side,
        if_none_match: bool,
    ) -> Result<(), String> {
        let key = (client, login.id.clone());
        let known = if_none_match
            .then(|| self.model.lock().unwrap().etags.get(&key).cloned())
            .flatten();
        let mut request =
            self.targets[on].request(reqwest::Method::GET, &document(login, side), side);
        if let Some(etag) = &known {
            request = request.header("if-none-match", etag);
        }
        let read = answer(request).await?;
        self.count(format!("poll ({side:?}) {} {}", read.status, read.code));
        allowed(
            &read,
            if side == Side::Platform {
                PLATFORM_READ
            } else {
                WATCH_READ
            },
        )?;
        check_read(&read, known.as_deref(), side, &login.id)?;
        if let Some(etag) = read.etag.filter(|_| read.status == 200) {
            self.model.lock().unwrap().etags.insert(key, etag);
        }
        Ok(())
    }

    /// A long poll with the login's current ETag (learnt from a platform read), or a stale
    /// one; in the foreground it is also what lets the clock run between a client's steps.
    #[allow(clippy::too_many_arguments)]
    async fn long_poll(
        &self,
        login: &Login,
        on: usize,
        side: Side,
        wait: u32,
        stale: bool,
        background: bool,
        label: &str,
    ) -> Result<(), String> {
        let etag = if stale {
            "\"0-pending\"".to_owned()
        } else {
            let path = format!("/v1/logins/{}", login.id);
            let read =
                answer(self.targets[on].request(reqwest::Method::GET, &path, Side::Platform))
                    .await?;
            allowed(&read, &[(200, "")])?;
            check_read(&read, None, Side::Platform, &login.id)?;
            read.etag.unwrap_or_default()
        };
        let request = self.targets[on]
            .request(
                reqwest::Method::GET,
                &format!("{}?wait={wait}", document(login, side)),
                side,
            )
            .header("if-none-match", &etag);
        let login_id = login.id.clone();
        let check = async move {
            let read = answer(request).await?;
            allowed(
                &read,
                if side == Side::Platform {
                    PLATFORM_READ
                } else {
                    WATCH_READ
                },
            )?;
            check_read(&read, Some(&etag), side, &login_id)?;
            ensure(
                read.status != 304 || read.elapsed >= Duration::from_secs(wait.into()),
                || format!("304 after {:?} of a {wait} s long poll", read.elapsed),
            )?;
            Ok::<_, String>(format!(
                "long poll ({side:?}) {} {}",
                read.status, read.code
            ))
        };
        if !background {
            let what = check.await?;
            self.count(what);
            return Ok(());
        }
        let failures = self.failures.clone();
        let label = format!("{label} (in the background)");
        let task = tokio::spawn(async move {
            if let Err(what) = check.await {
                failures.lock().unwrap().push(format!("{label}: {what}"));
            }
        });
        self.count(format!("long poll ({side:?}) in the background"));
        self.model.lock().unwrap().background.push(task);
        Ok(())
    }

    fn open_stream(&self, login: &Login, on: usize, side: Side, label: &str) {
        let path = match side {
            Side::Platform => format!("/v1/logins/{}/events", login.id),
            Side::Watch => format!("/v1/watch/{}/events", login.watch_token),
        };
        let delivered = Arc::<Mutex<Vec<Delivered>>>::default();
        let early_ends = Arc::new(AtomicUsize::new(0));
        let label = format!("{label}: the {side:?} stream on {}", INSTANCE[on]);
        let reader = tokio::spawn(follow(
            self.targets[on].clone(),
            path,
            side,
            login.id.clone(),
            delivered.clone(),
            early_ends.clone(),
            self.failures.clone(),
            label.clone(),
        ));
        self.count(format!("stream ({side:?}) opened"));
        self.model.lock().unwrap().streams.push(Stream {
            login: login.id.clone(),
            label,
            delivered,
            early_ends,
            reader,
        });
    }

    /// Whether the model has seen the login redeemed, or canceled.
    fn known_end(&self, login: &Login) -> (bool, bool) {
        let model = self.model.lock().unwrap();
        (
            model.redeemed.contains_key(&login.id),
            model.canceled.contains(&login.id),
        )
    }

    async fn attempt_status(&self, attempt: &str) -> Result<String, String> {
        sqlx::query_scalar("select status from attempts where id = $1::uuid")
            .bind(attempt)
            .fetch_one(&self.apps[0].pool)
            .await
            .map_err(|e| format!("attempt {attempt}: {e}"))
    }

    /// After every step: no attempt has left a terminal state, and no login was redeemed
    /// twice, as PostgreSQL records them.
    async fn check_store(&self) -> Result<(), String> {
        let _one_at_a_time = self.checking.lock().await;
        let pool = &self.apps[0].pool;
        let attempts: Vec<(String, String)> = sqlx::query_as(
            "select a.id::text, a.status from attempts a join logins l on l.id = a.login_id
             where l.scan_ref like $1 || '%'",
        )
        .bind(&self.people)
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
        {
            let mut model = self.model.lock().unwrap();
            for (id, status) in attempts {
                if let Some(first) = model.terminal.get(&id) {
                    ensure(*first == status, || {
                        format!("attempt {id} left its terminal state {first} for {status}")
                    })?;
                } else if status != "pending" {
                    model.terminal.insert(id, status);
                }
            }
        }
        let twice: Vec<String> = sqlx::query_scalar(
            "select e.login_id::text from events e join logins l on l.id = e.login_id
             where l.scan_ref like $1 || '%' and e.kind = 'login_redeemed'
             group by e.login_id having count(*) > 1",
        )
        .bind(&self.people)
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
        ensure(twice.is_empty(), || {
            format!("logins redeemed twice: {twice:?}")
        })
    }

    /// Once every client is done: the store, the instances and every stream agree, and
    /// nothing is left behind.
    async fn finish(&self) {
        let fail = |what: String| -> ! {
            panic!(
                "seed {}, at the end: {what}\nreplay: FACEPAIR_MODEL_SEED={} cargo nextest run model",
                self.seed, self.seed
            )
        };
        let background = std::mem::take(&mut self.model.lock().unwrap().background);
        for task in background {
            task.await.unwrap();
        }
        if let Err(what) = self.background_failures() {
            fail(what);
        }
        let logins = self.model.lock().unwrap().logins.clone();
        for login in &logins {
            let mut last = String::new();
            let deadline = Instant::now() + SETTLE_WITHIN;
            loop {
                match self.agree(login).await {
                    Ok(()) => break,
                    Err(what) if Instant::now() < deadline => last = what,
                    Err(what) => fail(format!(
                        "login {} never settled within {SETTLE_WITHIN:?}: {what} (before: {last})",
                        login.id
                    )),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let streams = std::mem::take(&mut self.model.lock().unwrap().streams);
        let early_ends: usize = streams
            .iter()
            .map(|s| s.early_ends.load(Ordering::Relaxed))
            .sum();
        for stream in streams {
            stream.reader.abort();
        }
        if let Err(what) = self.background_failures() {
            fail(what);
        }
        self.note("stream ends before a final status", early_ends);
        if let Err(what) = self.check_store().await {
            fail(what);
        }
        if let Err(what) = self.nothing_left_behind().await {
            fail(what);
        }
    }

    /// A login's GET on both instances, PostgreSQL's last event and the last event each of
    /// its streams delivered say the same; each stream delivered every event, in order.
    async fn agree(&self, login: &Login) -> Result<(), String> {
        let kinds: Vec<String> =
            sqlx::query_scalar("select kind from events where login_id = $1::uuid order by seq")
                .bind(&login.id)
                .fetch_all(&self.apps[0].pool)
                .await
                .map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        for (on, target) in self.targets.iter().enumerate() {
            let path = format!("/v1/logins/{}", login.id);
            let read = answer(target.request(reqwest::Method::GET, &path, Side::Platform)).await?;
            allowed(&read, &[(200, "")])?;
            check_read(&read, None, Side::Platform, &login.id)?;
            let doc = &read.body;
            seen.push((
                INSTANCE[on],
                doc["event_seq"].as_i64().unwrap_or_default(),
                doc["status"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        let (_, seq, status) = seen[0].clone();
        ensure(
            seen.iter().all(|(_, s, st)| (*s, st) == (seq, &status)) && seq == kinds.len() as i64,
            || format!("GETs {seen:?}, {} events stored", kinds.len()),
        )?;
        // every stream delivered the login's last event, the clock's included
        let model = self.model.lock().unwrap();
        for stream in model.streams.iter().filter(|s| s.login == login.id) {
            let delivered = stream.delivered.lock().unwrap();
            let last = delivered.last();
            ensure(
                last.is_some_and(|e| e.id == seq && e.status == status),
                || {
                    format!(
                        "{}: last delivered {last:?}, while GET says event {seq}, {status}",
                        stream.label
                    )
                },
            )?;
            let got: Vec<&str> = delivered.iter().map(|e| e.kind.as_str()).collect();
            ensure(got == kinds, || {
                format!("{}: delivered {got:?}, stored {kinds:?}", stream.label)
            })?;
        }
        Ok(())
    }

    /// Every outcome was recorded once, a webhook's by exactly one delivery; events run
    /// 1..event_seq; each redeem answered 200 redeemed a login, and no other was; iDenfy was
    /// paid for exactly the codes issued; no reservation and no open transaction remain.
    /// All are checked, and every one broken is named.
    async fn nothing_left_behind(&self) -> Result<(), String> {
        let pool = &self.apps[0].pool;
        let db = |e: sqlx::Error| e.to_string();
        let mut broken = Vec::new();

        type Outcome = (String, String, Option<String>, i64, i64, i64);
        let attempts: Vec<Outcome> = sqlx::query_as(
            "select a.id::text, a.status, a.outcome_source,
                    (select count(*) from events e where e.attempt_id = a.id
                      and e.kind in ('attempt_succeeded', 'attempt_failed', 'attempt_canceled',
                                     'attempt_expired', 'attempt_superseded')),
                    (select count(*) from events e where e.attempt_id = a.id
                      and e.kind = 'attempt_' || a.status),
                    (select count(*) from deliveries d where d.attempt_id = a.id
                      and d.verdict = 'applied')
             from attempts a join logins l on l.id = a.login_id
             where l.scan_ref like $1 || '%'",
        )
        .bind(&self.people)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        for (id, status, source, ended, as_status, applied) in &attempts {
            let by_webhook = source.as_deref() == Some("webhook");
            let once = if status == "pending" {
                (0, 0, 0)
            } else {
                (1, 1, i64::from(by_webhook))
            };
            if (*ended, *as_status, *applied) != once {
                broken.push(format!(
                    "attempt {id} ({status}, from {source:?}): {ended} events ended it \
                     ({as_status} as {status}), {applied} deliveries applied"
                ));
            }
        }
        for status in ["succeeded", "failed", "canceled", "expired", "superseded"] {
            let n = attempts.iter().filter(|a| a.1 == status).count();
            self.note(&format!("attempts {status}"), n);
        }

        let gaps: Vec<String> = sqlx::query_scalar(
            "select l.id::text from logins l left join events e on e.login_id = l.id
             where l.scan_ref like $1 || '%'
             group by l.id, l.event_seq
             having count(e.seq) <> l.event_seq or max(e.seq) <> l.event_seq",
        )
        .bind(&self.people)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        if !gaps.is_empty() {
            broken.push(format!(
                "logins whose events are not 1..event_seq: {gaps:?}"
            ));
        }

        let logins: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "select l.id::text, l.status,
                    (select count(*) from events e where e.login_id = l.id
                      and e.kind = 'login_redeemed'),
                    (select count(*) from events e where e.login_id = l.id
                      and e.kind = 'approval_expired')
             from logins l where l.scan_ref like $1 || '%'",
        )
        .bind(&self.people)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let answered: HashSet<String> = self
            .model
            .lock()
            .unwrap()
            .redeemed
            .keys()
            .cloned()
            .collect();
        for (id, status, redeemed, _) in &logins {
            let expected = i64::from(answered.contains(id));
            if *redeemed != expected || (status == "redeemed") != (expected == 1) {
                broken.push(format!(
                    "login {id} is {status} with {redeemed} login_redeemed events; \
                     {expected} redeems of it were answered 200"
                ));
            }
        }
        let mut by_status = BTreeMap::<&str, usize>::new();
        for (_, status, _, _) in &logins {
            *by_status.entry(status).or_default() += 1;
        }
        for (status, n) in by_status {
            self.note(&format!("logins {status}"), n);
        }
        let lapsed = logins.iter().filter(|l| l.3 > 0).count();
        self.note("approvals expired", lapsed);

        // every session iDenfy was asked for is a code, or, when the login changed while
        // iDenfy created it (approved, canceled), a spent reservation counted in the budgets
        let spent: i64 = sqlx::query_scalar(
            "select count(*) from code_reservations where spent and scan_ref like $1 || '%'",
        )
        .bind(&self.people)
        .fetch_one(pool)
        .await
        .map_err(db)?;
        let sessions = self.apps[0]
            .idenfy
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| {
                r.method.as_str() == "POST" && r.url.path() == "/partner/authentication-info"
            })
            .count();
        self.note("codes issued", attempts.len());
        self.note("iDenfy sessions created", sessions);
        self.note("sessions left unused, counted spent", spent as usize);
        if sessions != attempts.len() + spent as usize {
            broken.push(format!(
                "iDenfy created {sessions} sessions for {} codes issued and {spent} spent",
                attempts.len()
            ));
        }

        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (reservations, idle): (i64, i64) = sqlx::query_as(
                "select (select count(*) from code_reservations where not spent),
                        (select count(*) from pg_stat_activity
                          where datname = current_database() and pid <> pg_backend_pid()
                            and state like 'idle in transaction%')",
            )
            .fetch_one(pool)
            .await
            .map_err(db)?;
            if reservations == 0 && idle == 0 {
                break;
            }
            if Instant::now() >= deadline {
                broken.push(format!(
                    "{reservations} code reservations and {idle} connections idle in a \
                     transaction remain"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure(broken.is_empty(), || broken.join("\n"))
    }
}

fn document(login: &Login, side: Side) -> String {
    match side {
        Side::Platform => format!("/v1/logins/{}", login.id),
        Side::Watch => format!("/v1/watch/{}", login.watch_token),
    }
}

/// A read sent with `If-None-Match: sent` is 304 exactly when the ETag is still the one
/// sent; a 200 carries a consistent document.
fn check_read(read: &Answer, sent: Option<&str>, side: Side, login_id: &str) -> Result<(), String> {
    match read.status {
        304 => ensure(sent.is_some() && read.etag.as_deref() == sent, || {
            format!("304 with ETag {:?} for If-None-Match {sent:?}", read.etag)
        }),
        200 => {
            ensure(sent.is_none() || read.etag.as_deref() != sent, || {
                format!("200 with the ETag {sent:?} that was sent")
            })?;
            check_document(&read.body, read.etag.as_deref(), side, login_id)
        }
        _ => Ok(()),
    }
}

/// Reads a login's stream into `delivered` until it ends on a final status. A stream that
/// ends before (it may, when the login's status became final by the clock before the event
/// recording it) is reopened with `Last-Event-ID` once the login has a newer event, as an
/// `EventSource` would.
#[allow(clippy::too_many_arguments)]
async fn follow(
    target: Target,
    path: String,
    side: Side,
    login_id: String,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    early_ends: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    label: String,
) {
    let result: Result<(), String> = async {
        loop {
            let last = delivered.lock().unwrap().last().cloned();
            let mut request = target.request(reqwest::Method::GET, &path, side);
            if let Some(last) = &last {
                request = request.header("last-event-id", last.id.to_string());
            }
            let mut response = request
                .send()
                .await
                .map_err(|e| format!("could not open: {e}"))?;
            ensure(response.status() == 200, || {
                format!("opened with {}", response.status())
            })?;
            let mut buffer = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| format!("read failed: {e}"))?
            {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_event(&block)? {
                        receive(&delivered, event, side, &login_id)?;
                    }
                }
            }
            let last = delivered.lock().unwrap().last().cloned();
            if last
                .as_ref()
                .is_some_and(|e| FINAL.contains(&e.status.as_str()))
            {
                return Ok(());
            }
            early_ends.fetch_add(1, Ordering::Relaxed);
            newer_than(&target, &login_id, last.map_or(0, |e| e.id)).await?;
        }
    }
    .await;
    if let Err(what) = result {
        failures.lock().unwrap().push(format!("{label}: {what}"));
    }
}

/// One SSE block as (id, kind, data), or `None` for comments and hints.
fn parse_event(block: &[u8]) -> Result<Option<(i64, String, Value)>, String> {
    let text = std::str::from_utf8(block).map_err(|e| format!("not UTF-8: {e}"))?;
    let (mut id, mut kind, mut data) = (None, None, None);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().map_err(|_| format!("bad id line {line:?}"))?);
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(v).map_err(|e| format!("bad data: {e}"))?);
        }
    }
    Ok(match (id, kind, data) {
        (Some(id), Some(kind), Some(data)) => Some((id, kind, data)),
        (None, None, None) => None,
        other => return Err(format!("a partial event: {other:?}")),
    })
}

/// Events come one after another, none skipped or repeated, each with a consistent document
/// at least as new as itself.
fn receive(
    delivered: &Mutex<Vec<Delivered>>,
    (id, kind, data): (i64, String, Value),
    side: Side,
    login_id: &str,
) -> Result<(), String> {
    let mut delivered = delivered.lock().unwrap();
    let previous = delivered.last().map_or(0, |e| e.id);
    ensure(id == previous + 1, || {
        format!("event {id} ({kind}) after event {previous}")
    })?;
    ensure(data["event_seq"].as_i64() >= Some(id), || {
        format!("event {id} ({kind}) carries an older document: {data}")
    })?;
    check_document(&data, None, side, login_id)?;
    delivered.push(Delivered {
        id,
        kind,
        status: data["status"].as_str().unwrap_or_default().to_owned(),
    });
    Ok(())
}

/// Waits, by long-polling the login, until it has an event after `seen`.
async fn newer_than(target: &Target, login_id: &str, seen: i64) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    let mut etag = None;
    loop {
        let mut request = target.request(
            reqwest::Method::GET,
            &format!("/v1/logins/{login_id}?wait=5"),
            Side::Platform,
        );
        if let Some(etag) = &etag {
            request = request.header("if-none-match", etag);
        }
        let read = answer(request).await?;
        allowed(&read, PLATFORM_READ)?;
        if read.status == 200 && read.body["event_seq"].as_i64() > Some(seen) {
            return Ok(());
        }
        ensure(Instant::now() < deadline, || {
            format!("the stream ended after event {seen} and no newer event came")
        })?;
        etag = read.etag.or(etag);
    }
}
