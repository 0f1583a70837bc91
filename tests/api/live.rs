//! Server-Sent Events: live delivery, resume with Last-Event-ID, fan-out across instances.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

#[derive(Debug)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

/// Reads an event stream chunk by chunk, on a connection of its own (as a browser's
/// EventSource often has): one served by `http::server` itself.
pub struct Sse {
    response: reqwest::Response,
    buffer: String,
    pub comments: usize,
    pub retry_hints: Vec<u64>,
}

impl Sse {
    pub async fn open(app: &TestApp, path: &str, last_event_id: Option<i64>, auth: bool) -> Sse {
        let mut request = reqwest::Client::new().get(app.url(path));
        if auth {
            request = request.bearer_auth(API_KEY);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        Sse {
            response,
            buffer: String::new(),
            comments: 0,
            retry_hints: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends; fails after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, None);
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("retry: ") {
                        self.retry_hints.push(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let (Some(id), Some(kind), Some(data)) = (id, kind, data) {
                    return Some(Event { id, kind, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("no event in time")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[sqlx::test]
async fn events_arrive_live_and_the_stream_ends_with_the_login(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    let mut sse = Sse::open(&app, &format!("/v1/logins/{id}/events"), None, true).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!((first.id, first.kind.as_str()), (1, "login_created"));
    assert_eq!(first.data["status"], "pending");
    assert_eq!(first.data["scan_ref"], SCAN_REF);
    // one hint, spread over 1-5 s so the streams of a failed instance come back apart
    assert!(
        matches!(sse.retry_hints[..], [hint] if (1000..5000).contains(&hint)),
        "{:?}",
        sse.retry_hints
    );

    app.webhook(
        login["attempt"]["id"].as_str().unwrap(),
        "SUCCESS",
        json!({}),
    )
    .await;
    let approved = sse.next(WAIT).await.unwrap();
    assert_eq!(
        (approved.id, approved.kind.as_str()),
        (2, "attempt_succeeded")
    );
    assert_eq!(approved.data["status"], "approved");
    assert_eq!(approved.data["event_seq"], 2);

    app.post(&format!("/v1/logins/{id}/redeem")).await;
    let redeemed = sse.next(WAIT).await.unwrap();
    assert_eq!((redeemed.id, redeemed.kind.as_str()), (3, "login_redeemed"));
    assert!(
        sse.next(WAIT).await.is_none(),
        "the stream ends once the login can no longer change"
    );
}

#[sqlx::test]
async fn last_event_id_replays_what_was_missed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    app.webhook(
        login["attempt"]["id"].as_str().unwrap(),
        "FAILED",
        json!({ "failReason": "FACE_MISMATCH" }),
    )
    .await;
    app.post(&format!("/v1/logins/{id}/attempts")).await;

    let mut sse = Sse::open(&app, &format!("/v1/logins/{id}/events"), Some(1), true).await;
    let missed: Vec<(i64, String)> = [sse.next(WAIT).await.unwrap(), sse.next(WAIT).await.unwrap()]
        .into_iter()
        .map(|e| (e.id, e.kind))
        .collect();
    assert_eq!(
        missed,
        [
            (2, "attempt_failed".to_owned()),
            (3, "attempt_issued".to_owned())
        ]
    );

    // the query parameter works too, for clients that cannot set headers
    let mut sse = Sse::open(
        &app,
        &format!("/v1/logins/{id}/events?last_event_id=2"),
        None,
        true,
    )
    .await;
    assert_eq!(sse.next(WAIT).await.unwrap().id, 3);
}

#[sqlx::test]
async fn the_watch_stream_shows_no_identity_data(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = login["watch_token"].as_str().unwrap();
    let mut sse = Sse::open(&app, &format!("/v1/watch/{token}/events"), None, false).await;
    let event = sse.next(WAIT).await.unwrap();
    assert!(event.data.get("scan_ref").is_none() && event.data.get("user_ref").is_none());
    assert!(!event.data.to_string().contains(SCAN_REF));
    let response = app
        .http
        .get(app.url("/v1/watch/fpw_nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .http
        .get(app.url(&format!(
            "/v1/logins/{}/events",
            login["login_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// A webhook delivered to instance A reaches a stream held by instance B; when B goes away
/// mid-stream the client resumes on A with Last-Event-ID and misses nothing.
#[sqlx::test]
async fn fan_out_across_instances_and_resume_after_one_dies(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    a.mock_eligible().await;
    let mut b = a.second_instance().await;
    let login = a.login().await;
    let id = login["login_id"].as_str().unwrap().to_owned();
    let mut on_b = Sse::open(&b, &format!("/v1/logins/{id}/events"), None, true).await;
    assert_eq!(on_b.next(WAIT).await.unwrap().kind, "login_created");

    a.webhook(
        login["attempt"]["id"].as_str().unwrap(),
        "FAILED",
        json!({ "failReason": "EYES_CLOSED" }),
    )
    .await;
    let failed = on_b.next(WAIT).await.unwrap();
    assert_eq!((failed.id, failed.kind.as_str()), (2, "attempt_failed"));
    let last_seen = failed.id;

    // B stops: its stream closes with a reconnect hint
    b.stop().await;
    assert!(on_b.next(WAIT).await.is_none());
    let hint = *on_b.retry_hints.last().unwrap();
    assert!((1000..5000).contains(&hint), "{hint}");

    // meanwhile more happens, on A
    let second: Value = a
        .post(&format!("/v1/logins/{id}/attempts"))
        .await
        .json()
        .await
        .unwrap();
    a.webhook(
        second["attempt"]["id"].as_str().unwrap(),
        "SUCCESS",
        json!({}),
    )
    .await;

    let mut on_a = Sse::open(
        &a,
        &format!("/v1/logins/{id}/events"),
        Some(last_seen),
        true,
    )
    .await;
    let resumed: Vec<String> = [
        on_a.next(WAIT).await.unwrap(),
        on_a.next(WAIT).await.unwrap(),
    ]
    .into_iter()
    .map(|e| e.kind)
    .collect();
    assert_eq!(resumed, ["attempt_issued", "attempt_succeeded"]);
}

/// A stream whose read fails ends rather than stay open without the change that woke it; the
/// client reconnects with Last-Event-ID and gets that change. The read fails because every
/// connection of the stream's instance but its listener was terminated (as a failover or a
/// proxy would), while the change lands on another instance.
#[sqlx::test]
async fn a_stream_whose_read_fails_ends_and_its_reconnect_misses_nothing(pool: PgPool) {
    let other = TestApp::spawn(pool.clone()).await;
    other.mock_eligible().await;
    // the stream's instance with facepair's own pool (no ping before use), its connections
    // named so that the test can find them
    let database = facepair::config::DatabaseArgs {
        database_url: secrecy::SecretString::from("unused"),
        direct_database_url: None,
        db_max_connections: 5,
        db_acquire_timeout: Duration::from_secs(5),
    };
    let named = facepair::store::pool_options(&database)
        .connect_with(
            (*pool.connect_options())
                .clone()
                .application_name("facepair-stream"),
        )
        .await
        .unwrap();
    let app = TestApp::spawn_with(named, |s| s.workers = Some(1)).await;
    let login = other.login().await;
    let id = login["login_id"].as_str().unwrap().to_owned();
    let mut sse = Sse::open(&app, &format!("/v1/logins/{id}/events"), None, true).await;
    assert_eq!(sse.next(WAIT).await.unwrap().id, 1);

    let terminated: Vec<i32> = sqlx::query_scalar(
        "with doomed as materialized (
             select pid from pg_stat_activity
             where application_name = 'facepair-stream' and datname = current_database()
               and query not like 'LISTEN %'
         )
         select pid from doomed where pg_terminate_backend(pid)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!terminated.is_empty());
    other
        .eventually(WAIT, || async {
            let alive: i64 =
                sqlx::query_scalar("select count(*) from pg_stat_activity where pid = any($1)")
                    .bind(&terminated)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            alive == 0
        })
        .await;

    let (status, _) = other
        .webhook(
            login["attempt"]["id"].as_str().unwrap(),
            "SUCCESS",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    // woken by the change, the stream's read fails on its dead connection: it ends, and the
    // reconnect (the load balancer may send it anywhere: here, where the change landed) gets
    // what it missed. If the pool had already replaced the dead connection, the read goes
    // through and the stream sends the change itself. Either way nothing is missed.
    match sse.next(WAIT).await {
        None => {
            let hint = *sse.retry_hints.last().unwrap();
            assert!((1000..5000).contains(&hint), "{hint}");
            let mut resumed =
                Sse::open(&other, &format!("/v1/logins/{id}/events"), Some(1), true).await;
            let missed = resumed.next(WAIT).await.unwrap();
            assert_eq!((missed.id, missed.kind.as_str()), (2, "attempt_succeeded"));
            assert_eq!(missed.data["status"], "approved");
        }
        Some(sent) => assert_eq!((sent.id, sent.kind.as_str()), (2, "attempt_succeeded")),
    }
}

#[sqlx::test]
async fn every_open_stream_of_a_login_is_woken(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let other = app.second_instance().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    let mut streams = Vec::new();
    for i in 0..10 {
        let target = if i % 2 == 0 { &app } else { &other };
        let mut sse = Sse::open(target, &format!("/v1/logins/{id}/events"), Some(1), true).await;
        // nothing pending: the first read would block, so only the opening chunk is consumed later
        streams.push(async move {
            let e = sse.next(WAIT).await.unwrap();
            (e.id, e.kind)
        });
    }
    let waiting = tokio::spawn(futures_util::future::join_all(streams));
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.webhook(
        login["attempt"]["id"].as_str().unwrap(),
        "SUCCESS",
        json!({}),
    )
    .await;
    let got = waiting.await.unwrap();
    assert!(
        got.iter()
            .all(|(id, kind)| *id == 2 && kind == "attempt_succeeded"),
        "{got:?}"
    );
}

/// Unchanged logins are answered from the instance's cache; a change made on another instance
/// is visible as soon as its notification arrives: for a platform's request, before that
/// instance answered; for a webhook, which is answered before its NOTIFY goes out, within
/// `notify::GATHER` and a NOTIFY's round trip of the answer.
#[sqlx::test]
async fn cached_reads_see_changes_from_other_instances(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    // the listener must be up before the cache is used
    b.eventually(WAIT, || async {
        let login = b.login().await;
        let id = login["login_id"].as_str().unwrap();
        b.state(id).await;
        b.state(id).await;
        b.metric("facepair_login_cache_hits_total").await > 0.0
    })
    .await;

    for _ in 0..20 {
        let login = a.login().await;
        let id = login["login_id"].as_str().unwrap();
        assert_eq!(b.state(id).await["status"], "pending");
        assert_eq!(b.state(id).await["status"], "pending");
        let (status, _) = a
            .webhook(
                login["attempt"]["id"].as_str().unwrap(),
                "SUCCESS",
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
        let answered = std::time::Instant::now();
        let mut reads = 0;
        b.eventually(Duration::from_millis(250), || {
            reads += 1;
            async { b.state(id).await["status"] == "approved" }
        })
        .await;
        assert!(answered.elapsed() < Duration::from_millis(250));
        assert!(reads <= 3, "took {reads} reads");
    }
    assert!(b.metric("facepair_login_cache_hits_total").await >= 20.0);
}

/// A client that goes away is noticed at once and its stream's resources freed, long before
/// a keep-alive write could fail.
#[sqlx::test]
async fn a_departed_client_is_noticed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let open = || app.metric("facepair_sse_streams_open");
    let mut sse = Sse::open(
        &app,
        &format!("/v1/logins/{}/events", login["login_id"].as_str().unwrap()),
        None,
        true,
    )
    .await;
    sse.next(WAIT).await.unwrap();
    assert_eq!(open().await, 1.0);
    drop(sse);
    // the server reads the client's end of the connection while it streams; a keep-alive
    // write would notice only after KEEP_ALIVE, when the first write after the close usually
    // still reaches the kernel, or after two
    assert!(facepair::http::sse::KEEP_ALIVE >= Duration::from_secs(10));
    app.eventually(Duration::from_secs(3), || async { open().await == 0.0 })
        .await;
}

/// A change whose request was dropped between its `COMMIT` and its NOTIFY (its client closed
/// the connection, which stops the request at the await it is in) is still announced: this
/// instance's subscribers are woken at once, other instances by the NOTIFY, without waiting
/// for the backstop's pass.
#[sqlx::test]
async fn a_change_whose_request_was_dropped_is_still_announced(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id: uuid::Uuid = login["login_id"].as_str().unwrap().parse().unwrap();
    let mut other_instance = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    other_instance
        .listen(facepair::live::CHANNEL)
        .await
        .unwrap();
    let mut subscriber = app.state.hub.subscribe(id);

    drop(facepair::service::Announcement::new(&app.state, id, 1));

    tokio::time::timeout(Duration::from_millis(100), subscriber.changed())
        .await
        .expect("this instance's subscriber is woken at once");
    let heard = tokio::time::timeout(Duration::from_secs(2), other_instance.recv())
        .await
        .expect("the NOTIFY goes out")
        .unwrap();
    // dropped unsent (its commit failed or was abandoned): the id alone, without the event
    // number the change may never have reached
    assert_eq!(heard.payload(), id.to_string());
}

/// A login just created, and an instance that hears no NOTIFY at all (a hub without a
/// listener) holding its row in cache.
async fn deaf_instance_with_a_login(pool: &PgPool) -> (TestApp, uuid::Uuid, facepair::live::Hub) {
    let app = TestApp::spawn(pool.clone()).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id: uuid::Uuid = login["login_id"].as_str().unwrap().parse().unwrap();
    let hub = facepair::live::Hub::default();
    hub.cache.reset(true);
    let row = facepair::store::logins::find(pool, id)
        .await
        .unwrap()
        .unwrap();
    hub.cache
        .store(id, hub.cache.version(&id), std::sync::Arc::new(row));
    assert!(hub.cache.get(&id).is_some());
    (app, id, hub)
}

/// Runs the hub's backstop every `period` until the guard is dropped.
fn start_backstop(
    hub: &facepair::live::Hub,
    pool: &PgPool,
    period: Duration,
) -> tokio_util::sync::DropGuard {
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(facepair::live::backstop(
        hub.clone(),
        pool.clone(),
        period,
        stop.clone(),
    ));
    stop.drop_guard()
}

/// How long a test waits for the backstop to act, many of its periods.
const BACKSTOP_WAIT: Duration = Duration::from_secs(3);

/// The backstop's first pass wakes a login newly followed (nothing tells it what its
/// subscriber read).
async fn first_pass_wakes(subscription: &mut facepair::live::Subscription) {
    woken(
        subscription,
        BACKSTOP_WAIT,
        "the first pass wakes a login newly followed",
    )
    .await;
}

/// Cancels the login through the API (a deaf instance hears no NOTIFY of it).
async fn cancel(app: &TestApp, id: impl std::fmt::Display) {
    assert_eq!(
        app.post(&format!("/v1/logins/{id}/cancel")).await.status(),
        200
    );
}

/// Waits for the subscription's next wake-up, for at most `within`.
async fn woken(subscription: &mut facepair::live::Subscription, within: Duration, what: &str) {
    if tokio::time::timeout(within, subscription.changed())
        .await
        .is_err()
    {
        panic!("{what}");
    }
}

/// The subscription is not woken within `within`.
async fn not_woken(subscription: &mut facepair::live::Subscription, within: Duration, what: &str) {
    let woken = tokio::time::timeout(within, subscription.changed()).await;
    assert!(woken.is_err(), "{what}");
}

/// A change whose NOTIFY never reached an instance (its writer died between commit and NOTIFY,
/// or the batch was lost) still reaches the instance's waiting readers and cached rows through
/// the backstop, found by the login's event sequence, and is announced once.
#[sqlx::test]
async fn the_backstop_announces_a_change_without_notify_once(pool: PgPool) {
    let (app, id, hub) = deaf_instance_with_a_login(&pool).await;
    let mut subscription = hub.subscribe(id);
    let period = Duration::from_millis(100);
    let _backstop = start_backstop(&hub, &pool, period);
    // a login newly followed is woken once by the first pass (nothing tells it what its
    // subscriber read); after that, an unchanged login is left alone
    first_pass_wakes(&mut subscription).await;
    not_woken(
        &mut subscription,
        period * 6,
        "an unchanged login was announced",
    )
    .await;

    // the hub hears of no NOTIFY: only the backstop can tell it
    cancel(&app, id).await;
    woken(
        &mut subscription,
        BACKSTOP_WAIT,
        "the backstop announces the change",
    )
    .await;
    assert!(hub.cache.get(&id).is_none(), "the cached row is dropped");
    not_woken(
        &mut subscription,
        period * 6,
        "one change, announced more than once",
    )
    .await;
}

/// A change whose NOTIFY came, naming the event it reached, is not announced again by the
/// backstop: its readers already re-read it, and a second wake-up of every stream of every
/// changed login would come in a burst each period.
#[sqlx::test]
async fn the_backstop_leaves_alone_a_change_whose_notify_came(pool: PgPool) {
    let (app, id, hub) = deaf_instance_with_a_login(&pool).await;
    let mut subscription = hub.subscribe(id);
    let period = Duration::from_millis(100);
    let backstop = start_backstop(&hub, &pool, period);
    // the backstop's first pass: it wakes the new subscriber once, then knows the login
    first_pass_wakes(&mut subscription).await;
    // stopped while the change and its NOTIFY happen, so that no pass runs between the two
    drop(backstop);
    cancel(&app, id).await;
    let seq: i32 = sqlx::query_scalar("select event_seq from logins where id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    // what the listener does with the NOTIFY `<id> <seq>`
    hub.changed(id, Some(seq));
    woken(&mut subscription, period, "the NOTIFY wakes the subscriber").await;
    // a backstop that starts afresh, with no pass of its own before: the announced number
    // alone tells it the subscriber was woken
    let _backstop = start_backstop(&hub, &pool, period);
    not_woken(
        &mut subscription,
        period * 6,
        "the backstop announced a change its NOTIFY had announced",
    )
    .await;
}

/// A number announced that the database never reached (a forged NOTIFY, or transactions a
/// failover lost) does not blind the backstop to the real change that reaches it.
#[sqlx::test]
async fn the_backstop_forgets_a_number_the_database_has_not_reached(pool: PgPool) {
    let (app, id, hub) = deaf_instance_with_a_login(&pool).await;
    let mut subscription = hub.subscribe(id);
    let period = Duration::from_millis(100);
    hub.changed(id, Some(99));
    woken(
        &mut subscription,
        period,
        "the announcement wakes the subscriber",
    )
    .await;
    let _backstop = start_backstop(&hub, &pool, period);
    // the first pass forgets 99, which the database never reached, and wakes the subscriber
    first_pass_wakes(&mut subscription).await;
    // the hub hears of no NOTIFY for the real change
    cancel(&app, id).await;
    woken(
        &mut subscription,
        BACKSTOP_WAIT,
        "the backstop announces the change",
    )
    .await;
}

/// With no one waiting, a cached row is still dropped when its NOTIFY never came: plain polls
/// would otherwise be answered from it until the cache fills.
#[sqlx::test]
async fn the_backstop_drops_cached_rows_without_subscribers(pool: PgPool) {
    let (app, id, hub) = deaf_instance_with_a_login(&pool).await;
    let _backstop = start_backstop(&hub, &pool, Duration::from_millis(100));
    cancel(&app, id).await;
    app.eventually(Duration::from_secs(3), || async {
        hub.cache.get(&id).is_none()
    })
    .await;
}

/// An event never travels with a document older than itself: a change committed but not yet
/// announced to this instance (its cached row is still the one before) is sent once the
/// announcement comes, with the new document. Here the announcement is the backstop's, as
/// for a writer that died between its commit and its NOTIFY.
#[sqlx::test]
async fn an_event_is_sent_with_a_document_that_includes_it(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    // the instance caches the login as created
    assert_eq!(app.get_login(id).await.status(), 200);
    // canceled in the database alone: no NOTIFY reaches the instance
    let seq: i32 = sqlx::query_scalar(
        "update logins set status = 'canceled', canceled_at = now(), event_seq = event_seq + 1
         where id = $1::uuid returning event_seq",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into events (login_id, seq, kind, source, login_status)
         values ($1::uuid, $2, 'login_canceled', 'platform', 'canceled')",
    )
    .bind(id)
    .bind(seq)
    .execute(&pool)
    .await
    .unwrap();

    let mut sse = Sse::open(&app, &format!("/v1/logins/{id}/events"), None, true).await;
    let mut kinds = Vec::new();
    // the backstop runs every 5 s
    while let Some(event) = sse.next(Duration::from_secs(12)).await {
        assert!(
            event.data["event_seq"].as_i64().unwrap() >= event.id,
            "event {} ({}) sent with the document of event {}",
            event.id,
            event.kind,
            event.data["event_seq"]
        );
        kinds.push(event.kind.clone());
        if event.kind == "login_canceled" {
            assert_eq!(event.data["status"], "canceled");
        }
    }
    assert_eq!(kinds, ["login_created", "login_canceled"]);
}

/// A notifier that gathers for an hour, and a listener standing for other instances.
struct Gathering {
    notifier: std::sync::Arc<facepair::live::notify::Notifier>,
    metrics: std::sync::Arc<facepair::metrics::Metrics>,
    /// The instance is stopping.
    hurry: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    listener: sqlx::postgres::PgListener,
}

async fn gathering_notifier(pool: &PgPool) -> Gathering {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener.listen(facepair::live::CHANNEL).await.unwrap();
    let metrics = std::sync::Arc::new(facepair::metrics::Metrics::default());
    let hurry = tokio_util::sync::CancellationToken::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let (notifier, task) = facepair::live::notify::Notifier::start(
        (*pool.connect_options()).clone(),
        Duration::from_secs(3600),
        hurry.clone(),
        metrics.clone(),
        stop.clone(),
    );
    Gathering {
        notifier,
        metrics,
        hurry,
        stop,
        task: tokio::spawn(task),
        listener,
    }
}

async fn heard(listener: &mut sqlx::postgres::PgListener, n: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    for _ in 0..n {
        let notification = tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("the NOTIFY goes out")
            .unwrap();
        payloads.push(notification.payload().to_owned());
    }
    payloads
}

/// What a NOTIFY says of a change of `id` that reached event 1.
fn payload(id: uuid::Uuid) -> String {
    format!("{id} 1")
}

impl Gathering {
    /// Sends a first batch, which has nothing to gather after, then queues a change, which
    /// gathers; returns that change.
    async fn queue_behind_a_batch(&mut self) -> uuid::Uuid {
        let first = uuid::Uuid::now_v7();
        assert!(self.notifier.notify(first, Some(1)).await);
        assert_eq!(heard(&mut self.listener, 1).await, [payload(first)]);
        let queued = uuid::Uuid::now_v7();
        self.notifier.enqueue(queued, Some(1));
        let early = tokio::time::timeout(Duration::from_millis(300), self.listener.recv()).await;
        assert!(
            early.is_err(),
            "a queued change went out before the gathering ended"
        );
        queued
    }
}

/// Changes nobody waits for (webhooks') gather after a batch went out, and ride with the next
/// batch someone waits for (a platform request's), which goes out at once: its caller is not
/// held up by the gathering, and nothing gathered is lost.
#[sqlx::test]
async fn queued_changes_gather_until_a_change_is_awaited(pool: PgPool) {
    let mut g = gathering_notifier(&pool).await;
    let queued = g.queue_behind_a_batch().await;

    // answered as sent, not after notify() gives up waiting
    let awaited = uuid::Uuid::now_v7();
    assert!(g.notifier.notify(awaited, Some(1)).await);
    assert_eq!(
        heard(&mut g.listener, 2).await,
        [payload(queued), payload(awaited)]
    );
    assert_eq!(g.metrics.notify_batches.get(), 2);
    assert_eq!(g.metrics.notify_logins.get(), 3);

    // a notifier stopping while changes gather sends them before it ends
    let gathering = uuid::Uuid::now_v7();
    g.notifier.enqueue(gathering, Some(1));
    g.stop.cancel();
    tokio::time::timeout(WAIT, g.task)
        .await
        .expect("the notifier ends at once")
        .unwrap();
    assert_eq!(heard(&mut g.listener, 1).await, [payload(gathering)]);
}

/// Once the instance is stopping, nothing gathers: a worker's notifier ends with the worker,
/// and what it held would be lost. What had gathered goes out at once, and so does every
/// later change.
#[sqlx::test]
async fn a_stopping_instance_sends_what_it_gathered(pool: PgPool) {
    let mut g = gathering_notifier(&pool).await;
    let gathered = g.queue_behind_a_batch().await;

    g.hurry.cancel();
    assert_eq!(heard(&mut g.listener, 1).await, [payload(gathered)]);
    let later = uuid::Uuid::now_v7();
    g.notifier.enqueue(later, Some(1));
    assert_eq!(heard(&mut g.listener, 1).await, [payload(later)]);
    // the listener may hear a batch before its sender has read PostgreSQL's answer and
    // counted it: the counters are read once the sender ended
    g.stop.cancel();
    g.task.await.unwrap();
    assert_eq!(g.metrics.notify_batches.get(), 3);
    assert_eq!(g.metrics.notify_logins.get(), 3);
}

/// A client that already has every event of a login that can no longer change is told to
/// stop with 204 (EventSource reconnects after a stream that ends, not after a 204); without
/// them it gets the stream.
#[sqlx::test]
async fn a_settled_login_tells_a_caught_up_client_to_stop(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    cancel(&app, id).await;
    let open = |last: Option<&str>| {
        let mut request = app
            .http
            .get(app.url(&format!("/v1/logins/{id}/events")))
            .bearer_auth(API_KEY);
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.send()
    };
    let last = app.state(id).await["event_seq"].as_i64().unwrap();
    assert_eq!(open(Some(&last.to_string())).await.unwrap().status(), 204);
    let replay = open(Some(&(last - 1).to_string())).await.unwrap();
    assert_eq!(replay.status(), 200);
    assert!(
        replay
            .text()
            .await
            .unwrap()
            .contains("event: login_canceled")
    );
    assert_eq!(open(None).await.unwrap().status(), 200);
}

/// A raw HTTP/1.1 connection: what a test writes is sent as it is, and what comes back is read
/// as bytes, framing included.
struct Raw(tokio::net::TcpStream);

impl Raw {
    async fn connect(app: &TestApp) -> Raw {
        let address = app.base.trim_start_matches("http://");
        Raw(tokio::net::TcpStream::connect(address).await.unwrap())
    }

    async fn send(&mut self, bytes: &str) {
        use tokio::io::AsyncWriteExt;
        self.0.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads until `seen` holds what was read so far, or the server closes or resets the
    /// connection (`true` then).
    async fn read_until(&mut self, text: &mut String, seen: impl Fn(&str) -> bool) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !seen(text) {
            let within = facepair::http::server::HEAD_TIMEOUT + WAIT;
            let n = tokio::time::timeout(within, self.0.read(&mut buf))
                .await
                .expect("an answer in time");
            // a close with bytes of ours unread resets the connection
            let n = match n {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                n => n.unwrap(),
            };
            if n == 0 {
                return true;
            }
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        false
    }

    /// Whether the server closes the connection within `within`, having sent nothing more.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        let read = tokio::io::AsyncReadExt::read(&mut self.0, &mut buf);
        matches!(tokio::time::timeout(within, read).await, Ok(Ok(0)))
    }
}

/// A stream request for the platform, as a first request or after others.
fn stream_request(id: &str) -> String {
    format!(
        "GET /v1/logins/{id}/events HTTP/1.1\r\nHost: f\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
    )
}

/// Waits until this instance has no stream open, for 3 s at most.
async fn every_stream_closed(app: &TestApp) {
    app.eventually(Duration::from_secs(3), || async {
        app.metric("facepair_sse_streams_open").await == 0.0
    })
    .await;
}

/// A chunked body's data, checking every chunk's length; `None` until its last chunk.
fn dechunk(mut body: &str) -> Option<String> {
    let mut data = String::new();
    loop {
        let (length, rest) = body.split_once("\r\n")?;
        let length = usize::from_str_radix(length, 16).unwrap();
        if length == 0 {
            assert_eq!(rest, "\r\n", "nothing after the last chunk");
            return Some(data);
        }
        let chunk = rest.get(..length)?;
        assert_eq!(
            rest.get(length..length + 2)?,
            "\r\n",
            "a chunk is its length"
        );
        data.push_str(chunk);
        body = &rest[length + 2..];
    }
}

/// A stream whose request is the connection's first, its head sent in pieces, is written
/// with chunked framing and the route table's headers, and the connection closes once the
/// login has ended and its last event is sent.
#[sqlx::test]
async fn a_stream_on_a_fresh_connection_is_framed_and_closed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    let mut raw = Raw::connect(&app).await;
    raw.send("GET /v1/lo").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&format!("gins/{id}/events HTTP/1.1\r\nHost: facepair\r\n"))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&format!(
        "Authorization: Bearer {API_KEY}\r\nX-Request-Id: raw-1\r\n\r\n"
    ))
    .await;
    let mut text = String::new();
    raw.read_until(&mut text, |t| t.contains("event: login_created"))
        .await;
    let head = text.split_once("\r\n\r\n").unwrap().0.to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "cache-control: no-store",
        "x-accel-buffering: no",
        "x-request-id: raw-1",
        "transfer-encoding: chunked",
        "connection: close",
        "date: ",
    ] {
        assert!(head.contains(line), "{line} in {head}");
    }
    assert!(!head.contains("content-length"), "{head}");

    let canceled = app
        .http
        .post(app.url(&format!("/v1/logins/{id}/cancel")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    assert!(raw.read_until(&mut text, |_| false).await);
    let body = dechunk(text.split_once("\r\n\r\n").unwrap().1).expect("a whole body");
    assert!(body.starts_with("retry: "), "{body}");
    let kinds: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        kinds,
        ["login_created", "attempt_canceled", "login_canceled"],
        "{body}"
    );
    assert!(
        body.contains("id: 1\nevent: login_created\ndata: {"),
        "{body}"
    );
    assert!(body.ends_with("}\n\n"), "{body}");
    every_stream_closed(&app).await;
}

/// A stream request the route table refuses is answered with its error, framed by its
/// length, and the connection closes.
#[sqlx::test]
async fn a_refused_stream_request_gets_its_error_on_a_fresh_connection(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut raw = Raw::connect(&app).await;
    let id = uuid::Uuid::new_v4();
    raw.send(&format!(
        "GET /v1/logins/{id}/events HTTP/1.1\r\nHost: facepair\r\nAuthorization: Bearer wrong\r\n\r\n"
    ))
    .await;
    let mut text = String::new();
    assert!(raw.read_until(&mut text, |_| false).await);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_lowercase();
    assert!(head.starts_with("http/1.1 401 unauthorized\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
}

/// A first request that only looks like one opening a stream is served as every other
/// request, and the connection stays open for the next; so does a stream opened on a
/// connection that served another request first.
#[sqlx::test]
async fn look_alikes_and_streams_on_kept_alive_connections_are_served_as_before(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    let padding = "x".repeat(9 * 1024);
    let look_alikes = [
        (
            format!("GET /v1/logins/{id}/events/ HTTP/1.1\r\nHost: f\r\n\r\n"),
            "404",
        ),
        (
            format!("HEAD /v1/logins/{id}/events HTTP/1.1\r\nHost: f\r\n\r\n"),
            "405",
        ),
        (
            format!(
                "GET /v1/logins/{id}/events HTTP/1.1\r\nHost: f\r\nX-Padding: {padding}\r\n\r\n"
            ),
            "401",
        ),
        // sent in two pieces, the first a stream request's start
        ("GE".to_owned(), "200"),
    ];
    for (request, status) in look_alikes {
        let mut raw = Raw::connect(&app).await;
        raw.send(&request).await;
        if request == "GE" {
            tokio::time::sleep(Duration::from_millis(50)).await;
            raw.send("T /health/live HTTP/1.1\r\nHost: f\r\n\r\n").await;
        }
        let mut text = String::new();
        let whole = |t: &str| {
            t.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                let length = head.lines().find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|n| n.parse::<usize>().unwrap())
                });
                length.is_some_and(|n| body.len() >= n) || head.starts_with("HTTP/1.1 405")
            })
        };
        raw.read_until(&mut text, whole).await;
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:.60}: {text}"
        );
        assert!(!text.to_lowercase().contains("connection: close"), "{text}");
        raw.send("GET /health/live HTTP/1.1\r\nHost: f\r\n\r\n")
            .await;
        let mut next = String::new();
        raw.read_until(&mut next, |t| t.contains("\"ok\"")).await;
        assert!(
            next.starts_with("HTTP/1.1 200"),
            "{request:.60}: then {next}"
        );
    }

    // a stream request with a request pipelined behind it in the same packet: actix-http
    // serves it, and keeps the connection
    let mut raw = Raw::connect(&app).await;
    raw.send(&format!(
        "GET /v1/logins/{id}/events HTTP/1.1\r\nHost: f\r\nAuthorization: Bearer {API_KEY}\r\n\r\nGET /health/live HTTP/1.1\r\nHost: f\r\n\r\n"
    ))
    .await;
    let mut text = String::new();
    raw.read_until(&mut text, |t| t.contains("event: login_created"))
        .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.to_lowercase().contains("connection: close"), "{text}");
    drop(raw);

    let mut raw = Raw::connect(&app).await;
    raw.send("GET /health/live HTTP/1.1\r\nHost: f\r\n\r\n")
        .await;
    let mut text = String::new();
    raw.read_until(&mut text, |t| t.contains("\"ok\"")).await;
    raw.send(&stream_request(id)).await;
    let mut text = String::new();
    raw.read_until(&mut text, |t| t.contains("event: login_created"))
        .await;
    let text = text.to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(!text.contains("connection: close"), "{text}");
    // a client that leaves a stream actix-http serves is noticed too
    drop(raw);
    every_stream_closed(&app).await;
}

/// A connection that has not completed a request within
/// [`facepair::http::server::HEAD_TIMEOUT`] is answered 408 and closed, whether it sent part
/// of a stream request or nothing.
#[sqlx::test]
async fn a_head_that_never_ends_is_answered_408(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut partial, mut silent) = (Raw::connect(&app).await, Raw::connect(&app).await);
    partial
        .send("GET /v1/watch/abc/events HTTP/1.1\r\nHost: fa")
        .await;
    let started = tokio::time::Instant::now();
    for raw in [&mut partial, &mut silent] {
        let mut text = String::new();
        assert!(raw.read_until(&mut text, |_| false).await);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        // as actix-http answers it: an empty body of stated length
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= facepair::http::server::HEAD_TIMEOUT - Duration::from_millis(100),
        "{waited:?}"
    );
}

/// A stream's client that sends anything after its request is let go: nothing it sends is
/// read as another request, and a flood of bytes costs one read.
#[sqlx::test]
async fn bytes_after_a_stream_request_end_the_stream(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    let mut raw = Raw::connect(&app).await;
    raw.send(&stream_request(id)).await;
    let mut text = String::new();
    raw.read_until(&mut text, |t| t.contains("event: login_created"))
        .await;
    assert_eq!(app.metric("facepair_sse_streams_open").await, 1.0);
    raw.send("GET /health/live HTTP/1.1\r\nHost: f\r\n\r\n")
        .await;
    assert!(raw.read_until(&mut text, |_| false).await, "closed");
    assert!(!text.contains("\"ok\""), "{text}");
    every_stream_closed(&app).await;
}

/// A connection that has sent nothing yet when the instance begins to stop is closed at once,
/// not after the head timeout: stopping does not wait for it.
#[sqlx::test]
async fn a_silent_connection_is_closed_when_the_instance_stops(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let mut raw = Raw::connect(&app).await;
    // the connection is accepted and waiting for its first bytes
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = tokio::time::Instant::now();
    app.stop().await;
    assert!(raw.closed_within(Duration::from_secs(1)).await);
    assert!(
        started.elapsed() < facepair::http::server::HEAD_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
}
