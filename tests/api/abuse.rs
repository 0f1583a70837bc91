//! Abuse limits kept in PostgreSQL (they hold across instances), griefing, webhook replays.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::e2e::Sandbox;
use crate::helpers::*;

async fn code_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[sqlx::test]
async fn login_creation_is_limited_per_api_key_across_instances(pool: PgPool) {
    let a = TestApp::spawn_with(pool, |s| s.limits.logins_per_api_key_per_minute = 3).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    let statuses = [
        a.create_login(json!({ "scan_ref": SCAN_REF }))
            .await
            .status()
            .as_u16(),
        b.create_login(json!({ "scan_ref": SCAN_REF }))
            .await
            .status()
            .as_u16(),
        a.create_login(json!({ "scan_ref": SCAN_REF }))
            .await
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, [201, 201, 201]);
    // the fourth, on either instance, is over the key's limit
    let fourth = b.create_login(json!({ "scan_ref": SCAN_REF })).await;
    let retry_after: u64 = fourth.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let (status, body) = code_of(fourth).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(body["error"]["limit"], "logins_per_api_key");
    assert_eq!(a.count("select count(*) from logins").await, 3);
    // the other key has its own window
    let other = a
        .http
        .post(a.url("/v1/logins"))
        .bearer_auth(API_KEY_2)
        .json(&json!({ "scan_ref": SCAN_REF }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
}

#[sqlx::test]
async fn login_creation_is_limited_per_desktop_address(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.limits.logins_per_client_ip_per_hour = 2).await;
    app.mock_eligible().await;
    let create =
        |ip: &'static str| app.create_login(json!({ "scan_ref": SCAN_REF, "client_ip": ip }));
    assert_eq!(create("198.51.100.7").await.status(), 201);
    assert_eq!(create("198.51.100.7").await.status(), 201);
    let (status, body) = code_of(create("198.51.100.7").await).await;
    assert_eq!(
        (status, body["error"]["limit"].as_str()),
        (429, Some("logins_per_client_ip"))
    );
    // IPv6 addresses count by /64
    assert_eq!(create("2001:db8:1:2::1").await.status(), 201);
    assert_eq!(create("2001:db8:1:2::99").await.status(), 201);
    assert_eq!(create("2001:db8:1:2:ffff::1").await.status(), 429);
    assert_eq!(create("198.51.100.8").await.status(), 201);
}

/// A desktop address hammering at its own limit must not use up its platform's key: a refused
/// creation counts in no window.
#[sqlx::test]
async fn creations_refused_by_one_limit_do_not_count_against_another(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.limits.logins_per_client_ip_per_hour = 2;
        s.limits.logins_per_api_key_per_minute = 4;
    })
    .await;
    app.mock_eligible().await;
    let create =
        |ip: &'static str| app.create_login(json!({ "scan_ref": SCAN_REF, "client_ip": ip }));
    let limit_of =
        |(status, body): (u16, Value)| (status, body["error"]["limit"].as_str().map(str::to_owned));
    assert_eq!(create("198.51.100.7").await.status(), 201);
    assert_eq!(create("198.51.100.7").await.status(), 201);
    for _ in 0..6 {
        assert_eq!(
            limit_of(code_of(create("198.51.100.7").await).await),
            (429, Some("logins_per_client_ip".into()))
        );
    }
    // the key has counted 2 creations, not 8: another desktop still gets its 2
    assert_eq!(create("198.51.100.8").await.status(), 201);
    assert_eq!(create("198.51.100.9").await.status(), 201);
    assert_eq!(
        limit_of(code_of(create("198.51.100.10").await).await),
        (429, Some("logins_per_api_key".into()))
    );
    // and the refusals by the key's limit did not count against that address either
    assert_eq!(
        app.count(
            "select coalesce(sum(hits), 0)::int8 from rate_limits where bucket like '%198.51.100.10%'"
        )
            .await,
        0,
        "a refused creation counted in the address's window"
    );
    assert_eq!(app.count("select count(*) from logins").await, 4);
}

/// A window's cap holds from its very first hits: 50 creations from one desktop arriving
/// together, on two instances, while the address has no window yet, and exactly the cap's
/// worth get through. Refused ones count in no window: the key counted only those 5.
#[sqlx::test]
async fn concurrent_first_hits_never_pass_the_cap(pool: PgPool) {
    let a = TestApp::spawn_with(pool, |s| s.limits.logins_per_client_ip_per_hour = 5).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    // a first hit in flight (uncommitted) holds the others at the window's row until more
    // than the cap's worth wait there; it then gives up, and they find the window empty
    let mut gate = a.pool.begin().await.unwrap();
    let first = facepair::store::limits::Limit {
        bucket: "client_ip:198.51.100.7".into(),
        window_secs: 3600.0,
        limit: 5,
    };
    let counted = facepair::store::limits::hit(&mut gate, &[first]).await;
    assert!(counted.unwrap().is_none());
    let creations = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            let response = app
                .create_login(json!({ "scan_ref": SCAN_REF, "client_ip": "198.51.100.7" }))
                .await;
            let (status, body) = code_of(response).await;
            (status, body["error"]["code"].as_str().map(str::to_owned))
        }
    });
    let release = async {
        lock_waiters(&a, "rate_limits", 8).await;
        gate.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(futures_util::future::join_all(creations), release);
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let limited = answers
        .iter()
        .filter(|(s, c)| *s == 429 && c.as_deref() == Some("rate_limited"))
        .count();
    assert_eq!((created, limited), (5, 45), "{answers:?}");
    assert_eq!(a.count("select count(*) from logins").await, 5);
    assert_eq!(
        a.count("select hits::int8 from rate_limits where bucket like 'client_ip:%'")
            .await,
        5
    );
    assert_eq!(
        a.count("select hits::int8 from rate_limits where bucket like 'api_key:%'")
            .await,
        5,
        "refused creations counted against the key"
    );
}

/// Hits arriving together on two limits at once (in either order of naming them) queue on
/// the windows' rows: exactly the limit's worth get through, and none deadlocks.
#[sqlx::test]
async fn concurrent_hits_never_pass_a_full_window(pool: PgPool) {
    use facepair::store::limits::{Limit, hit};
    let limit = |bucket: &str, limit| Limit {
        bucket: bucket.into(),
        window_secs: 60.0,
        limit,
    };
    let hits = (0..40).map(|i| {
        let pool = pool.clone();
        let mut limits = vec![limit("key", 7), limit(&format!("ip:{}", i % 2), 100)];
        if i % 3 == 0 {
            limits.reverse();
        }
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            hit(&mut conn, &limits).await.unwrap().is_none()
        })
    });
    let mut passed = 0;
    for h in hits {
        passed += usize::from(h.await.unwrap());
    }
    assert_eq!(passed, 7);
    let counted: Vec<(String, i32)> =
        sqlx::query_as("select bucket, hits from rate_limits order by bucket")
            .fetch_all(&pool)
            .await
            .unwrap();
    let ips: i32 = counted
        .iter()
        .filter(|(b, _)| b.starts_with("ip:"))
        .map(|(_, h)| h)
        .sum();
    assert_eq!(
        ips, 7,
        "refused hits counted in the addresses' windows: {counted:?}"
    );
    assert!(counted.contains(&("key".into(), 7)), "{counted:?}");
}

/// Guessing watch tokens: 404s until the limit, then 429 for every unknown token from that
/// address, so guessing cannot go on; the count is shared by instances.
#[sqlx::test]
async fn watch_token_guessing_is_refused(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.limits.watch_misses_per_ip = 5).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let valid = login["watch_token"].as_str().unwrap().to_owned();
    let b = app.second_instance().await;
    let guess = |target: &TestApp, i: usize| {
        let url = target.url(&format!("/v1/watch/fpw_{:0>43}", i));
        target.http.get(url).send()
    };
    for i in 0..3 {
        assert_eq!(guess(&app, i).await.unwrap().status(), 404);
    }
    for i in 3..5 {
        assert_eq!(guess(&b, i).await.unwrap().status(), 404);
    }
    let refused = guess(&app, 5).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    let (_, body) = code_of(refused).await;
    assert_eq!(body["error"]["limit"], "watch_misses_per_ip");
    // a block refuses unknown tokens only: the address's own logins are still served
    let valid_now = app
        .http
        .get(app.url(&format!("/v1/watch/{valid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(valid_now.status(), 200);
    // malformed tokens count too
    let malformed = b
        .http
        .get(b.url("/v1/watch/not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 429);
}

/// A stranger who types the victim's code on another network and fails does not use up the
/// victim's codes; the victim's own failures do.
#[sqlx::test]
async fn a_stranger_cannot_lock_the_victim_out(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "client_ip": "198.51.100.7" }))
        .await;
    let id = login["login_id"].as_str().unwrap().to_owned();
    let stranger = |code: String| {
        let http = sb.app.http.clone();
        let url = format!("{}/_sim/app/enter", sb.sim_url);
        async move {
            http.post(url)
                .json(&json!({ "digitString": code, "status": "FAILED", "failReason": "FACE_MISMATCH", "ipAddress": "203.0.113.66" }))
                .send()
                .await
                .unwrap()
        }
    };
    let mut current = login;
    for round in 0..5 {
        stranger(
            current["attempt"]["digit_string"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
        .await;
        let state = sb.wait_for(&id, "failed").await;
        assert_eq!(
            state["attempts_used"], 0,
            "round {round}: a stranger's failure is not counted"
        );
        assert_eq!(state["can_request_new_code"], true);
        let r = sb.app.post(&format!("/v1/logins/{id}/attempts")).await;
        assert_eq!(r.status(), 201, "round {round}");
        current = r.json().await.unwrap();
    }
    // the victim, on the desktop's network, finally gets through
    let r = sb
        .app
        .http
        .post(format!("{}/_sim/app/enter", sb.sim_url))
        .json(&json!({ "digitString": current["attempt"]["digit_string"], "status": "SUCCESS", "ipAddress": "198.51.100.20" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state = sb.wait_for(&id, "approved").await;
    assert_eq!(state["attempt"]["number"], 6);
    let who: Value = sb
        .app
        .post(&format!("/v1/logins/{id}/redeem"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["network_match"], "same_network");

    // the victim's own failures on their network do count
    let own: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "client_ip": "198.51.100.7" }))
        .await;
    let own_id = own["login_id"].as_str().unwrap().to_owned();
    sb.app
        .http
        .post(format!("{}/_sim/app/enter", sb.sim_url))
        .json(&json!({ "digitString": own["attempt"]["digit_string"], "status": "FAILED", "ipAddress": "198.51.100.7" }))
        .send()
        .await
        .unwrap();
    assert_eq!(sb.wait_for(&own_id, "failed").await["attempts_used"], 1);
}

#[sqlx::test]
async fn webhook_replays_and_odd_requests(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = app.token_of(login["attempt"]["id"].as_str().unwrap()).await;
    let body = webhook_body(&token, "SUCCESS", json!({}));
    let sig = facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
    let send = |content_type: &'static str, body: String, sig: String| {
        app.http
            .post(app.url("/v1/webhooks/idenfy"))
            .header("content-type", content_type)
            .header("idenfy-signature", sig)
            .body(body)
            .send()
    };
    // a verified body is judged by its bytes, whatever content type it was labelled with
    let r = send("text/plain", body.clone(), sig.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["verdict"], "applied");
    let stored: Option<String> = sqlx::query_scalar("select content_type from deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("text/plain"));
    // the same valid body replayed later is stored as a duplicate and changes nothing
    app.post(&format!(
        "/v1/logins/{}/redeem",
        login["login_id"].as_str().unwrap()
    ))
    .await;
    let r = send("application/json", body.clone(), sig).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["verdict"], "duplicate");
    assert_eq!(
        app.state(login["login_id"].as_str().unwrap()).await["status"],
        "redeemed"
    );
    // an empty body with a valid signature is stored as unparseable
    let empty_sig = facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), b"");
    let r = send("application/json", String::new(), empty_sig)
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["verdict"], "unparseable");
    assert_eq!(app.count("select count(*) from deliveries").await, 3);
    assert_eq!(
        app.count("select count(*) from events where kind = 'attempt_succeeded'")
            .await,
        1
    );
}

/// The rate limits and the scan_ref budget are checked at once; when both refuse, the answer
/// is the rate limit's, and the person's budget is left as it was.
#[sqlx::test]
async fn a_creation_both_limits_refuse_is_answered_by_the_rate_limit(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.limits.logins_per_api_key_per_minute = 2;
        s.max_attempts_per_scan_ref_hour = 2;
    })
    .await;
    app.mock_eligible().await;
    for _ in 0..2 {
        app.login_with(json!({ "scan_ref": SCAN_REF })).await;
    }
    for _ in 0..3 {
        let (status, body) = code_of(app.create_login(json!({ "scan_ref": SCAN_REF })).await).await;
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                body["error"]["limit"].as_str()
            ),
            (429, Some("rate_limited"), Some("logins_per_api_key"))
        );
    }
    assert_eq!(app.count("select count(*) from attempts").await, 2);
}

/// An unknown watch token from a browser, through the proxy `X-Forwarded-For` lines given.
async fn guess(app: &TestApp, forwarded_for: &[&str]) -> (u16, Value) {
    let token = format!("fpw_{}", uuid::Uuid::new_v4().simple()) + "AAAAAAAAAAA";
    let mut request = app.http.get(app.url(&format!("/v1/watch/{token}")));
    for line in forwarded_for {
        request = request.header("x-forwarded-for", *line);
    }
    code_of(request.send().await.unwrap()).await
}

async fn misses_counted(app: &TestApp, bucket: &str) -> i64 {
    sqlx::query_scalar::<_, i32>("select hits from rate_limits where bucket = $1")
        .bind(format!("watch_miss:{bucket}"))
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .map_or(0, i64::from)
}

/// Header spoofing: behind a trusted proxy (here the test's own 127.0.0.1), only the entry the
/// proxy appended counts. Whatever the client writes before it (another address each time, a
/// victim's address, something unparsable) neither escapes the limit nor blocks anyone else.
#[sqlx::test]
async fn a_forged_forwarded_for_neither_escapes_nor_redirects_the_watch_limit(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.limits.watch_misses_per_ip = 3;
        s.trusted_proxies =
            facepair::domain::network::TrustedProxies::parse(["127.0.0.1/32"]).unwrap();
    })
    .await;
    let attacker = "198.51.100.9";
    let victim = "198.51.100.10";
    // the proxy appends the address it saw; the client wrote the rest
    let forged = [
        format!("1.2.3.4, {attacker}"),
        format!("{victim}, {attacker}"),
        format!("not-an-address, {attacker}"),
    ];
    for line in &forged {
        assert_eq!(guess(&app, &[line]).await.0, 404, "{line}");
    }
    for line in [
        format!("1.2.3.5, {attacker}"),
        format!("garbage, {attacker}"),
    ] {
        let (status, body) = guess(&app, &[&line]).await;
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                body["error"]["limit"].as_str()
            ),
            (429, Some("rate_limited"), Some("watch_misses_per_ip")),
            "{line}"
        );
    }
    // the refusals counted nowhere; only the attacker's real address was ever counted
    assert_eq!(misses_counted(&app, attacker).await, 3);
    assert_eq!(
        app.count("select count(*) from rate_limits").await,
        1,
        "a client-written entry was counted"
    );
    // the victim, whose address the attacker wrote, is not blocked
    assert_eq!(guess(&app, &[victim]).await.0, 404);
    // on its own line, as some proxies add it, the forged entry is still the client's
    assert_eq!(guess(&app, &["203.0.113.1", attacker]).await.0, 429);
}

/// Only a trusted peer's header is read: from any other peer the header is ignored, and the
/// peer's own address is counted however the header changes.
#[sqlx::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.limits.watch_misses_per_ip = 3;
        s.trusted_proxies =
            facepair::domain::network::TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
    })
    .await;
    for i in 0..3 {
        assert_eq!(guess(&app, &[&format!("203.0.113.{i}")]).await.0, 404);
    }
    assert_eq!(guess(&app, &["203.0.113.99"]).await.0, 429);
    assert_eq!(misses_counted(&app, "127.0.0.1").await, 3);
    assert_eq!(app.count("select count(*) from rate_limits").await, 1);
}

/// Lockout by unknown-token blocks: an address blocked for guessing (perhaps a NAT shared with
/// the guesser) still follows its own logins on every instance, while its unknown tokens stay
/// refused. IPv6 addresses are counted and blocked by /64, on both instances alike.
#[sqlx::test]
async fn a_blocked_address_still_follows_its_own_logins(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.limits.watch_misses_per_ip = 3;
        s.trusted_proxies =
            facepair::domain::network::TrustedProxies::parse(["127.0.0.1/32"]).unwrap();
    })
    .await;
    app.mock_eligible().await;
    let other = app.second_instance().await;
    let subnet = "2001:db8:1:2::/64";
    assert_eq!(guess(&app, &["2001:db8:1:2::1"]).await.0, 404);
    assert_eq!(guess(&other, &["2001:db8:1:2::2"]).await.0, 404);
    assert_eq!(guess(&app, &["2001:db8:1:2:ffff::3"]).await.0, 404);
    // another address of the /64, on each instance: the same block
    assert_eq!(guess(&other, &["2001:db8:1:2::4"]).await.0, 429);
    assert_eq!(guess(&app, &["2001:db8:1:2:aaaa::5"]).await.0, 429);
    assert_eq!(misses_counted(&app, subnet).await, 3);
    // another /64 is not blocked
    assert_eq!(guess(&app, &["2001:db8:1:3::1"]).await.0, 404);

    for instance in [&app, &other] {
        let token = instance.login().await["watch_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let from_blocked = |path: String| {
            instance
                .http
                .get(instance.url(&path))
                .header("x-forwarded-for", "2001:db8:1:2::1")
                .send()
        };
        let watch = from_blocked(format!("/v1/watch/{token}")).await.unwrap();
        assert_eq!(watch.status(), 200);
        let events = from_blocked(format!("/v1/watch/{token}/events"))
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        assert_eq!(
            events.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
    }
    assert_eq!(misses_counted(&app, subnet).await, 3);
}
