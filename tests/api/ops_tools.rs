//! Ops: the views, the `facepair logins` CLI, metrics, retention and log hygiene, seeded through
//! the real API and the simulator.

use std::process::Command;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::e2e::Sandbox;
use crate::helpers::*;

/// A story with everything in it: a failed code, a duplicate webhook, a retry, a success
/// from another network, redemption; plus a second login that expires and an unknown token.
async fn seed(sb: &Sandbox) -> (String, String) {
    sb.faults(json!({ "duplicate_webhooks": 1 })).await;
    let r = sb
        .app
        .create_login(json!({ "scan_ref": SCAN_REF, "user_ref": "user-42", "client_ip": "198.51.100.7", "user_agent": "Desktop/1.0" }))
        .await;
    let login: Value = r.json().await.unwrap();
    let id = login["login_id"].as_str().unwrap().to_owned();
    sb.phone(
        login["attempt"]["digit_string"].as_str().unwrap(),
        "FAILED",
        Some("FACE_MISMATCH"),
    )
    .await;
    sb.wait_for(&id, "failed").await;
    sb.app
        .eventually(std::time::Duration::from_secs(5), || async {
            sb.app.count("select count(*) from deliveries").await == 2
        })
        .await;
    let second: Value = sb
        .app
        .post(&format!("/v1/logins/{id}/attempts"))
        .await
        .json()
        .await
        .unwrap();
    sb.phone(
        second["attempt"]["digit_string"].as_str().unwrap(),
        "SUCCESS",
        None,
    )
    .await;
    sb.wait_for(&id, "approved").await;
    assert_eq!(
        sb.app
            .post(&format!("/v1/logins/{id}/redeem"))
            .await
            .status(),
        200
    );

    let other: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "client_ip": "203.0.113.9" }))
        .await;
    let other_id = other["login_id"].as_str().unwrap().to_owned();
    let token = sb
        .app
        .token_of(other["attempt"]["id"].as_str().unwrap())
        .await;
    sb.app
        .http
        .post(format!("{}/_sim/sessions/{token}/expire", sb.sim_url))
        .send()
        .await
        .unwrap();
    sb.wait_for(&other_id, "expired").await;
    let unknown = webhook_body("NO-SUCH-TOKEN", "SUCCESS", json!({}));
    sb.app.send_webhook(unknown.as_bytes(), SIGNING_KEY).await;
    (id, other_id)
}

#[sqlx::test]
async fn the_views_answer_ops_questions(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let (id, _) = seed(&sb).await;

    let timeline: Vec<(String, String, String, Option<i32>, Value)> = sqlx::query_as(
        "select entry, what, source, attempt_number, detail from login_timeline where login_id = $1::uuid order by at, entry, event_seq",
    )
    .bind(&id)
    .fetch_all(&sb.app.pool)
    .await
    .unwrap();
    let whats: Vec<&str> = timeline.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(
        whats,
        [
            "login_created",
            "webhook_applied",
            "attempt_failed",
            "webhook_duplicate",
            "attempt_issued",
            "webhook_applied",
            "attempt_succeeded",
            "login_redeemed"
        ]
    );
    let created = &timeline[0];
    assert_eq!(created.1, "login_created");
    assert_eq!(created.4["desktop_ip"], "198.51.100.7");
    assert_eq!(created.4["desktop_user_agent"], "Desktop/1.0");
    assert!(created.4["code_expires_at"].is_string());
    let failed = timeline.iter().find(|t| t.1 == "attempt_failed").unwrap();
    assert_eq!(
        (
            failed.2.as_str(),
            failed.3,
            failed.4["fail_reason"].as_str()
        ),
        ("webhook", Some(1), Some("FACE_MISMATCH"))
    );
    let delivery = timeline.iter().find(|t| t.1 == "webhook_applied").unwrap();
    assert_eq!(delivery.4["signing_key_index"], 0);
    assert_eq!(
        timeline.iter().find(|t| t.1 == "attempt_issued").unwrap().2,
        "platform"
    );

    let outcomes: Vec<(String, Option<String>, String, i64)> =
        sqlx::query_as("select outcome, fail_reason, outcome_source, attempts from attempt_outcomes_hourly order by outcome")
            .fetch_all(&sb.app.pool)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        [
            ("expired".into(), None, "webhook".into(), 1),
            (
                "failed".into(),
                Some("FACE_MISMATCH".into()),
                "webhook".into(),
                1
            ),
            ("succeeded".into(), None, "webhook".into(), 1)
        ]
    );

    let no_effect: Vec<String> =
        sqlx::query_scalar("select verdict from deliveries_without_effect order by received_at")
            .fetch_all(&sb.app.pool)
            .await
            .unwrap();
    assert_eq!(no_effect, ["duplicate", "unknown_token"]);

    // both selfies came from another network than the desktop's; the expired login had no phone
    let mismatches: Vec<(String, String, String, String)> = sqlx::query_as(
        "select attempt_status, desktop_ip, phone_ip, network_match from network_mismatches order by attempt_number",
    )
    .fetch_all(&sb.app.pool)
    .await
    .unwrap();
    let row = |status: &str| {
        (
            status.to_owned(),
            "198.51.100.7".to_owned(),
            "203.0.113.50".to_owned(),
            "different".to_owned(),
        )
    };
    assert_eq!(mismatches, [row("failed"), row("succeeded")]);
}

pub(crate) fn cli(pool: &PgPool, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_facepair"))
        .args(args)
        .env("DATABASE_URL", database_url(pool))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Replaces what changes from run to run with placeholders of the same width, so the
/// table's alignment is part of the snapshot.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 36)].iter().collect();
        if rest.len() == 36 && uuid::Uuid::parse_str(&rest).is_ok() {
            out.push_str("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
            i += 36;
            continue;
        }
        let c = chars[i];
        let in_number = c.is_ascii_digit();
        out.push(if in_number { 'N' } else { c });
        i += 1;
    }
    out
}

fn snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_SNAPSHOTS=1", path.display()));
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

#[sqlx::test]
async fn the_logins_cli(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let (id, other) = seed(&sb).await;

    snapshot(
        "logins_list.txt",
        &normalise(&cli(&sb.app.pool, &["logins", "list"])),
    );
    snapshot(
        "logins_show.txt",
        &normalise(&cli(&sb.app.pool, &["logins", "show", &id])),
    );

    let json: Value = serde_json::from_str(&cli(
        &sb.app.pool,
        &["logins", "list", "--json", "--status", "expired"],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["login_id"], other);
    let json: Value = serde_json::from_str(&cli(
        &sb.app.pool,
        &["logins", "list", "--json", "--user-ref", "user-42"],
    ))
    .unwrap();
    assert_eq!(json[0]["login_id"], id.as_str());
    let json: Value = serde_json::from_str(&cli(
        &sb.app.pool,
        &["logins", "list", "--json", "--since", "1h", "--limit", "1"],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    let json: Value = serde_json::from_str(&cli(
        &sb.app.pool,
        &["logins", "list", "--json", "--until", "1h"],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 0);
    let shown: Value =
        serde_json::from_str(&cli(&sb.app.pool, &["logins", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["login"]["status"], "redeemed");
    assert!(shown["timeline"].as_array().unwrap().len() >= 8);

    let bad = Command::new(env!("CARGO_BIN_EXE_facepair"))
        .args(["logins", "list", "--status", "nonsense"])
        .env("DATABASE_URL", database_url(&sb.app.pool))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--status"));
}

#[sqlx::test]
async fn metrics_after_a_scripted_flow(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    seed(&sb).await;
    let bad = sb
        .app
        .http
        .post(sb.app.url("/v1/webhooks/idenfy"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let text = sb.app.metrics().await;
    for line in [
        "facepair_logins_created_total 2",
        "facepair_webhook_deliveries_total{verdict=\"applied\"} 3",
        "facepair_webhook_deliveries_total{verdict=\"duplicate\"} 1",
        "facepair_webhook_deliveries_total{verdict=\"unknown_token\"} 1",
        "facepair_webhook_deliveries_by_key_total{key_index=\"0\"} 5",
        "facepair_webhook_signature_rejections_total 1",
        "facepair_attempts_finished_total{outcome=\"failed\",fail_reason=\"FACE_MISMATCH\"} 1",
        "facepair_attempts_finished_total{outcome=\"succeeded\",fail_reason=\"\"} 1",
        "facepair_attempts_finished_total{outcome=\"expired\",fail_reason=\"\"} 1",
        "facepair_idenfy_calls_total{operation=\"check_status\",outcome=\"ok\"} 2",
        "facepair_idenfy_calls_total{operation=\"create_session\",outcome=\"ok\"} 3",
        "facepair_idenfy_call_duration_seconds_count{operation=\"create_session\"} 3",
        "facepair_idenfy_call_duration_seconds_bucket{operation=\"check_status\",le=\"+Inf\"} 2",
        "facepair_sse_streams_open 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(text.contains("# TYPE facepair_idenfy_call_duration_seconds histogram"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("facepair_expiry_runs_total "))
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("facepair_db_pool_connections{state=\"open\"}"))
    );
}

#[sqlx::test]
async fn retention_boundaries(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let (old_finished, expired) = seed(&sb).await;
    let young: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "user_ref": "young" }))
        .await;
    sb.app
        .webhook(
            young["attempt"]["id"].as_str().unwrap(),
            "FAILED",
            json!({ "failReason": "FAKE_FACE" }),
        )
        .await;
    let pending_old: Value = sb.app.login_with(json!({ "scan_ref": SCAN_REF, "user_ref": "still-waiting", "lifetime_seconds": 86400 * 30 })).await;
    // age everything but the young login by 40 days
    sqlx::query("update logins set created_at = created_at - interval '40 days' where user_ref is distinct from 'young'").execute(&sb.app.pool).await.unwrap();
    sqlx::query("update logins set desktop_place = 'Vilnius, Lithuania'")
        .execute(&sb.app.pool)
        .await
        .unwrap();
    sqlx::query("update deliveries set received_at = received_at - interval '40 days'")
        .execute(&sb.app.pool)
        .await
        .unwrap();

    let purged = facepair::ops::retention::purge(
        &sb.app.pool,
        chrono::Duration::days(30),
        chrono::Duration::days(35),
    )
    .await
    .unwrap();
    assert_eq!(purged.logins, 2, "the redeemed and the expired login");
    assert_eq!(
        purged.delivery_bodies,
        sb.app.count("select count(*) from deliveries").await as u64
    );

    // id, scan_ref, user_ref, purged, desktop_place
    type Row = (String, Option<String>, Option<String>, bool, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "select id::text, scan_ref, user_ref, purged_at is not null, desktop_place from logins",
    )
    .fetch_all(&sb.app.pool)
    .await
    .unwrap();
    for (id, scan_ref, user_ref, purged, place) in rows {
        let keep = id == young["login_id"].as_str().unwrap()
            || id == pending_old["login_id"].as_str().unwrap();
        assert_eq!(purged, !keep, "{id}");
        assert_eq!(scan_ref.is_some(), keep, "{id}");
        assert_eq!(
            place.is_some(),
            keep,
            "the desktop's place is identity data: {id}"
        );
        if id == pending_old["login_id"].as_str().unwrap() {
            assert_eq!(
                user_ref.as_deref(),
                Some("still-waiting"),
                "a pending login is never touched"
            );
        }
    }
    let leftover: i64 = sb
        .app
        .count(&format!(
            "select count(*) from attempts where login_id in ('{old_finished}', '{expired}') and (face_photo_url is not null or phone_ip is not null or client_id is not null)"
        ))
        .await;
    assert_eq!(leftover, 0);
    // outcomes stay for statistics
    assert_eq!(
        sb.app
            .count("select sum(attempts)::bigint from attempt_outcomes_hourly")
            .await,
        4
    );
    // the purged login still reads, without identity
    let state = sb.app.state(&old_finished).await;
    assert_eq!(state["status"], "redeemed");
    assert!(state.get("scan_ref").is_none());

    let again = facepair::ops::retention::purge(
        &sb.app.pool,
        chrono::Duration::days(30),
        chrono::Duration::days(35),
    )
    .await
    .unwrap();
    assert_eq!(again, Default::default(), "idempotent");

    let out = cli(&sb.app.pool, &["purge", "--older-than", "30d"]);
    assert!(out.contains("purged identity data of 0 logins"), "{out}");
}

/// One JSON line per request with id, route, status and latency, a request abandoned by its
/// client included; no secret in any line.
#[sqlx::test]
async fn logs_are_structured_and_carry_no_secrets(pool: PgPool) {
    let idenfy = wiremock::MockServer::start().await;
    mock_check_status(&idenfy, "AUTHENTICATION").await;
    mock_sessions(&idenfy).await;
    // event pushes that fail, to URLs carrying a token: one answers 500, one refuses
    let receiver = crate::outbound::Receiver::new(|_, _| wiremock::ResponseTemplate::new(500));
    let receiver_server = receiver.start().await;
    let endpoints = format!(
        "{}/hooks?token=URLTOKEN123,http://127.0.0.1:9/refused?token=URLTOKEN456",
        receiver_server.uri()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_facepair"))
        .arg("serve")
        .env("DATABASE_URL", database_url(&pool))
        .env("FACEPAIR_LISTEN", format!("127.0.0.1:{port}"))
        .env("FACEPAIR_API_KEYS", API_KEY)
        .env("FACEPAIR_IDENFY_BASE_URL", idenfy.uri())
        .env("FACEPAIR_IDENFY_API_KEY", "idenfy-key")
        .env("FACEPAIR_IDENFY_API_SECRET", "idenfy-secret")
        .env("FACEPAIR_IDENFY_SIGNING_KEYS", SIGNING_KEY)
        .env("FACEPAIR_EVENT_ENDPOINTS", &endpoints)
        .env("FACEPAIR_EVENT_SECRETS", crate::outbound::SECRET)
        .env("FACEPAIR_EVENT_ALLOW_PRIVATE_HTTP", "true")
        .env("FACEPAIR_EVENT_POLL_INTERVAL_MS", "50")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "facepair serve did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let login: Value = http
        .post(format!("{base}/v1/logins"))
        .bearer_auth(API_KEY)
        .json(&json!({ "scan_ref": SCAN_REF, "user_ref": "user-42" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let watch_token = login["watch_token"].as_str().unwrap().to_owned();
    let code = login["attempt"]["digit_string"]
        .as_str()
        .unwrap()
        .to_owned();
    let token: String = sqlx::query_scalar("select idenfy_token from attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    let photo = "https://s3.example.invalid/selfie.png?Signature=SECRETSIG";
    let body = webhook_body(&token, "SUCCESS", json!({ "facePhoto": photo }));
    let sig = facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
    http.post(format!("{base}/v1/webhooks/idenfy"))
        .header("idenfy-signature", &sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let etag = http
        .get(format!("{base}/v1/watch/{watch_token}"))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .clone();
    http.get(format!("{base}/pair/{watch_token}"))
        .send()
        .await
        .unwrap();
    // a long poll its client gives up on: the approved login will not change
    let gave_up = http
        .get(format!("{base}/v1/watch/{watch_token}?wait=20"))
        .header("if-none-match", etag)
        .timeout(std::time::Duration::from_millis(500))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    http.post(format!("{base}/v1/webhooks/idenfy"))
        .header("idenfy-signature", "0".repeat(64))
        .body("{}")
        .send()
        .await
        .unwrap();

    // both endpoints have been tried (and failed) before the stop
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let endpoints_tried: i64 =
            sqlx::query_scalar("select count(distinct endpoint_id) from event_delivery_attempts")
                .fetch_one(&pool)
                .await
                .unwrap();
        if endpoints_tried == 2 && !receiver.seen().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event push was tried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // stopped as an orchestrator stops it: every line is written before it exits
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("facepair stops on SIGTERM")
        .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let logs = String::from_utf8(output.stderr).unwrap();
    let mut requests = Vec::new();
    let mut recorded = Vec::new();
    let mut abandoned = Vec::new();
    for line in logs.lines() {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for field in ["timestamp", "level", "message", "target"] {
            assert!(entry[field].is_string(), "{field} missing: {line}");
        }
        if entry["message"] == "client closed the connection" {
            abandoned.push(entry);
        } else if entry["message"] == "request" {
            for field in ["request_id", "route", "status", "latency_ms", "method"] {
                assert!(!entry[field].is_null(), "{field} missing: {line}");
            }
            requests.push(entry);
        } else if entry["message"] == "webhook recorded" {
            recorded.push(entry);
        }
    }
    assert!(requests.len() >= 6, "{logs}");
    // the abandoned long poll: dropped when its client left, logged with nginx's 499
    assert_eq!(abandoned.len(), 1, "{logs}");
    assert_eq!(abandoned[0]["status"], 499, "{logs}");
    assert_eq!(abandoned[0]["route"], "/v1/watch/{watch_token}", "{logs}");
    let waited = abandoned[0]["latency_ms"].as_f64().unwrap();
    assert!((400.0..5_000.0).contains(&waited), "{logs}");
    // a line logged while a request is served carries that request's id
    assert_eq!(recorded.len(), 1, "{logs}");
    for line in &recorded {
        let id = line["request_id"].as_str().expect("request_id");
        let request = requests
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line with the id of {line}"));
        assert_eq!(request["route"], "/v1/webhooks/idenfy", "{request}");
    }
    let routes: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["route"].as_str())
        .collect();
    for route in [
        "/v1/logins",
        "/v1/watch/{watch_token}",
        "/pair/{watch_token}",
    ] {
        assert!(routes.contains(&route), "{route} not in {routes:?}");
    }
    for secret in [
        watch_token.as_str(),
        &watch_token[4..],
        code.as_str(),
        token.as_str(),
        "SECRETSIG",
        photo,
        API_KEY,
        SIGNING_KEY,
        sig.as_str(),
        "idenfy-secret",
        "URLTOKEN123",
        "URLTOKEN456",
        crate::outbound::SECRET,
        &crate::outbound::SECRET[6..],
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}

/// A log reader that stops reading holds up no request: once the pipe and the log buffer are
/// full, lines are dropped and counted on /metrics, and the count is logged once the reader
/// reads again.
#[sqlx::test]
async fn a_stalled_log_reader_holds_up_no_request(pool: PgPool) {
    use tokio::io::AsyncBufReadExt as _;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_facepair"))
        .arg("serve")
        .env("DATABASE_URL", database_url(&pool))
        .env("FACEPAIR_LISTEN", format!("127.0.0.1:{port}"))
        .env("FACEPAIR_API_KEYS", API_KEY)
        .env("FACEPAIR_IDENFY_BASE_URL", "http://127.0.0.1:9")
        .env("FACEPAIR_IDENFY_API_KEY", "idenfy-key")
        .env("FACEPAIR_IDENFY_API_SECRET", "idenfy-secret")
        .env("FACEPAIR_IDENFY_SIGNING_KEYS", SIGNING_KEY)
        // a pipe nobody reads until the end
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "facepair serve did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let dropped = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("facepair_log_lines_dropped_total "))
            .expect("the count is on /metrics")
            .parse()
            .unwrap()
    };

    // requests, each with its access line, until the pipe and the log buffer are full
    let load = tokio_util::sync::CancellationToken::new();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let (http, base, load) = (http.clone(), base.clone(), load.clone());
        clients.spawn(async move {
            let id = format!("{client}-{}", "r".repeat(60));
            let mut sent = 0;
            while !load.is_cancelled() {
                let response = http
                    .get(format!("{base}/health/live"))
                    .header("x-request-id", &id)
                    .send()
                    .await
                    .expect("answered within 2 s");
                assert_eq!(response.status(), 200);
                sent += 1;
            }
            sent
        });
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("/metrics answered within 2 s")
            .text()
            .await
            .unwrap();
        if dropped(&metrics) > 0 {
            break dropped(&metrics);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line dropped in 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    load.cancel();
    let mut requests = 0;
    while let Some(sent) = clients.join_next().await {
        requests += sent.unwrap();
    }
    assert!(requests > 0);

    // the reader reads again: the count is logged
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let logged = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("facepair is running");
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let message = entry["message"].as_str().unwrap_or_default();
            if message.ends_with(" log lines were dropped since the start") {
                assert_eq!(entry["level"], "WARN", "{line}");
                break entry["dropped"].as_u64().unwrap();
            }
        }
    })
    .await
    .expect("the count was logged once the reader read again");
    assert!(logged >= seen, "{logged} logged, {seen} seen on /metrics");

    // the reader stalls again until more lines are dropped: a stop does not wait on it
    let stalled_at = dropped(&metrics_text(&http, &base).await);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while dropped(&metrics_text(&http, &base).await) <= stalled_at {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line dropped in 60 s"
        );
        for _ in 0..200 {
            let _ = http.get(format!("{base}/health/live")).send().await;
        }
    }
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .expect("facepair stopped within 15 s with its log reader stalled");
    assert!(stopped.unwrap().success());
    drop(lines);
}

async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics answered within 2 s")
        .text()
        .await
        .unwrap()
}
