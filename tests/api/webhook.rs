use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

fn attempt_id(login: &Value) -> String {
    login["attempt"]["id"].as_str().unwrap().to_owned()
}

fn login_id(login: &Value) -> String {
    login["login_id"].as_str().unwrap().to_owned()
}

#[sqlx::test]
async fn success_approves_and_keeps_what_idenfy_said(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let extra = json!({
        "id": "8d471b4c-3822-4547-aec5-a9d0cc0aa105", "ipAddress": "203.0.113.7",
        "riskTags": ["UNTRUSTED_ENVIRONMENT"], "facePhoto": "https://s3.example.invalid/FRONT.png?Signature=x"
    });
    assert_eq!(
        app.webhook(&attempt_id(&login), "SUCCESS", extra).await,
        (200, "applied".into())
    );
    let state = app.state(&login_id(&login)).await;
    assert_eq!(state["status"], "approved");
    assert_eq!(state["attempt"]["status"], "succeeded");
    assert!(
        state["attempt"].get("digit_string").is_none(),
        "the code is gone once the attempt ends"
    );
    type Kept = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<String>>,
        Option<String>,
        Option<String>,
    );
    let row: Kept = sqlx::query_as(
        "select digit_string, client_id, idenfy_session_id, risk_tags, phone_ip, outcome_source from attempts",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row.0, None, "digit code dropped from the database");
    assert_eq!(row.1.as_deref(), Some("FD155HLZ5Z"));
    assert_eq!(
        row.2.as_deref(),
        Some("8d471b4c-3822-4547-aec5-a9d0cc0aa105")
    );
    assert_eq!(row.3, Some(vec!["UNTRUSTED_ENVIRONMENT".to_owned()]));
    assert_eq!(row.4.as_deref(), Some("203.0.113.7"));
    assert_eq!(row.5.as_deref(), Some("webhook"));
    let (verdict, key, event_type, raw): (String, i32, Option<String>, Vec<u8>) =
        sqlx::query_as("select verdict, signing_key_index, event_type, body from deliveries")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((verdict.as_str(), key), ("applied", 0));
    assert_eq!(event_type.as_deref(), Some("FACIAL_AUTHENTICATION"));
    assert!(
        String::from_utf8(raw)
            .unwrap()
            .contains("UNTRUSTED_ENVIRONMENT"),
        "raw body kept"
    );
}

#[sqlx::test]
async fn failed_keeps_the_reason_and_allows_a_new_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let (code, verdict) = app
        .webhook(
            &attempt_id(&login),
            "FAILED",
            json!({ "failReason": "FACE_MISMATCH" }),
        )
        .await;
    assert_eq!((code, verdict.as_str()), (200, "applied"));
    let state = app.state(&login_id(&login)).await;
    assert_eq!(state["status"], "failed");
    assert_eq!(state["attempt"]["fail_reason"], "FACE_MISMATCH");
    assert_eq!(state["can_request_new_code"], true);
}

#[sqlx::test]
async fn statuses_are_read_case_insensitively(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    assert_eq!(
        app.webhook(&attempt_id(&login), "Canceled", json!({}))
            .await,
        (200, "applied".into())
    );
    let state = app.state(&login_id(&login)).await;
    assert_eq!(state["attempt"]["status"], "canceled");
    assert_eq!(
        state["status"], "failed",
        "a person canceling in the app may ask for a new code"
    );
}

#[sqlx::test]
async fn idenfy_expired_expires_the_attempt(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    assert_eq!(
        app.webhook(&attempt_id(&login), "EXPIRED", json!({})).await,
        (200, "applied".into())
    );
    let state = app.state(&login_id(&login)).await;
    assert_eq!(
        (
            state["status"].as_str(),
            state["attempt"]["status"].as_str()
        ),
        (Some("expired"), Some("expired"))
    );
}

/// Duplicates, unknown tokens, terminal attempts and unknown statuses are stored with their
/// verdict, answered 2xx, and change nothing.
#[sqlx::test]
async fn deliveries_that_change_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = app.token_of(&attempt_id(&login)).await;

    let unknown = webhook_body("NO-SUCH-TOKEN", "SUCCESS", json!({}));
    let response = app.send_webhook(unknown.as_bytes(), SIGNING_KEY).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["verdict"],
        "unknown_token"
    );

    let pending_status = webhook_body(&token, "Pending", json!({}));
    let response = app
        .send_webhook(pending_status.as_bytes(), SIGNING_KEY)
        .await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["verdict"],
        "unknown_status"
    );
    assert_eq!(app.state(&login_id(&login)).await["status"], "pending");

    let other_person = webhook_body(&token, "SUCCESS", json!({ "scanRef": "someone-else" }));
    let response = app.send_webhook(other_person.as_bytes(), SIGNING_KEY).await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["verdict"],
        "scan_ref_mismatch"
    );
    assert_eq!(app.state(&login_id(&login)).await["status"], "pending");

    let failed = webhook_body(&token, "FAILED", json!({ "failReason": "FAKE_FACE" }));
    assert_eq!(
        app.send_webhook(failed.as_bytes(), SIGNING_KEY)
            .await
            .json::<Value>()
            .await
            .unwrap()["verdict"],
        "applied"
    );
    assert_eq!(
        app.send_webhook(failed.as_bytes(), SIGNING_KEY)
            .await
            .json::<Value>()
            .await
            .unwrap()["verdict"],
        "duplicate"
    );
    // a different body for the same, already settled session
    let success = webhook_body(&token, "SUCCESS", json!({}));
    assert_eq!(
        app.send_webhook(success.as_bytes(), SIGNING_KEY)
            .await
            .json::<Value>()
            .await
            .unwrap()["verdict"],
        "attempt_terminal"
    );

    let garbage = b"{\"status\": \"SUCCESS\", \"token\": ";
    let response = app.send_webhook(garbage, SIGNING_KEY).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["verdict"],
        "unparseable"
    );
    let invalid_utf8 = b"\xff\xfe{\"status\":\"SUCCESS\"}";
    assert_eq!(
        app.send_webhook(invalid_utf8, SIGNING_KEY)
            .await
            .json::<Value>()
            .await
            .unwrap()["verdict"],
        "unparseable"
    );

    let state = app.state(&login_id(&login)).await;
    assert_eq!(state["status"], "failed");
    assert_eq!(state["attempt"]["fail_reason"], "FAKE_FACE");
    assert_eq!(
        app.count("select count(*) from deliveries").await,
        8,
        "every verified delivery stored"
    );
    assert_eq!(
        app.count("select count(*) from deliveries where verdict = 'applied'")
            .await,
        1
    );
    assert_eq!(
        app.count("select count(*) from events where kind like 'attempt_%'")
            .await,
        1
    );
}

#[sqlx::test]
async fn bad_signatures_store_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = app.token_of(&attempt_id(&login)).await;
    let body = webhook_body(&token, "SUCCESS", json!({}));
    let good = facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
    let send = |signature: Option<String>, body: Vec<u8>| {
        let mut request = app
            .http
            .post(app.url("/v1/webhooks/idenfy"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            request = request.header("idenfy-signature", s);
        }
        request.send()
    };
    let cases = vec![
        (None, body.clone().into_bytes()),
        (Some(String::new()), body.clone().into_bytes()),
        (Some(good[..63].to_owned()), body.clone().into_bytes()),
        (
            Some(facepair::idenfy::signature::sign(
                b"some-other-key",
                body.as_bytes(),
            )),
            body.clone().into_bytes(),
        ),
        (
            Some(good.clone()),
            body.replace("SUCCESS", "SUCCESs").into_bytes(),
        ),
        (
            Some(good.clone()),
            body.as_bytes()[..body.len() - 1].to_vec(),
        ),
        (Some(format!("sha256={good}")), body.clone().into_bytes()),
    ];
    for (signature, body) in cases {
        let response = send(signature.clone(), body).await.unwrap();
        assert_eq!(response.status(), 401, "{signature:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_signature"
        );
    }
    assert_eq!(app.count("select count(*) from deliveries").await, 0);
    assert_eq!(app.state(&login_id(&login)).await["status"], "pending");

    // upper-case hex is the same signature
    let response = send(Some(good.to_uppercase()), body.clone().into_bytes())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.state(&login_id(&login)).await["status"], "approved");
}

#[sqlx::test]
async fn the_previous_signing_key_still_works_and_is_recorded(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = app.token_of(&attempt_id(&login)).await;
    let body = webhook_body(&token, "SUCCESS", json!({}));
    assert_eq!(
        app.send_webhook(body.as_bytes(), OLD_SIGNING_KEY)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.count("select signing_key_index::bigint from deliveries")
            .await,
        1
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("facepair_webhook_deliveries_by_key_total{key_index=\"1\"} 1"),
        "{metrics}"
    );
}

#[sqlx::test]
async fn oversized_bodies_are_refused(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.webhook_max_bytes = 2048).await;
    let body = format!(
        "{{\"status\":\"SUCCESS\",\"pad\":\"{}\"}}",
        "x".repeat(4096)
    );
    let response = app.send_webhook(body.as_bytes(), SIGNING_KEY).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    assert_eq!(app.count("select count(*) from deliveries").await, 0);
}

/// The same delivery many times at once: exactly one state change, every copy accounted for.
#[sqlx::test]
async fn concurrent_duplicates_change_state_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = app.token_of(&attempt_id(&login)).await;
    let body = webhook_body(&token, "SUCCESS", json!({}));
    let sends = (0..100).map(|_| app.send_webhook(body.as_bytes(), SIGNING_KEY));
    let responses = futures_util::future::join_all(sends).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(app.count("select count(*) from deliveries").await, 100);
    assert_eq!(
        app.count("select count(*) from deliveries where verdict = 'applied'")
            .await,
        1
    );
    assert_eq!(
        app.count("select count(*) from deliveries where verdict = 'duplicate'")
            .await,
        99
    );
    assert_eq!(
        app.count("select count(*) from events where kind = 'attempt_succeeded'")
            .await,
        1
    );
}

/// The stored corpus (tests/corpus/webhooks): documented bodies, odd casings, missing and
/// extra fields, wrong types, truncation, a BOM, nesting. Each goes through the real endpoint
/// against a fresh login: never a 5xx, always stored, and the verdict expected for it.
#[sqlx::test]
async fn the_webhook_corpus(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let expected = [
        (
            "active-liveness-method.json",
            "unexpected_type",
            Some("pending"),
        ),
        ("bom-prefixed.json", "unparseable", None),
        ("deeply-nested.json", "unparseable", None),
        ("empty.json", "unparseable", None),
        ("enrollment-type.json", "unexpected_type", Some("pending")),
        ("expired-documented.json", "applied", Some("expired")),
        ("failed-title-case.json", "applied", Some("failed")),
        ("minimal-status-only.json", "applied", Some("approved")),
        ("not-an-object.json", "unparseable", None),
        ("pending-status.json", "unknown_status", Some("pending")),
        ("success-documented.json", "applied", Some("approved")),
        ("truncated.json", "unparseable", None),
        ("unknown-fields-and-nulls.json", "applied", Some("failed")),
        ("wrong-types.json", "unparseable", None),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/webhooks");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        expected
            .iter()
            .map(|(f, _, _)| f.to_string())
            .collect::<Vec<_>>(),
        "every corpus file has an expectation"
    );
    for (file, want_verdict, want_status) in expected {
        let login = app.login().await;
        let token = app.token_of(&attempt_id(&login)).await;
        let raw = std::fs::read(dir.join(file)).unwrap();
        // a BOM, if present, survives: U+FEFF is valid UTF-8
        let body = String::from_utf8(raw)
            .unwrap()
            .replace("{{TOKEN}}", &token)
            .replace("{{SCAN_REF}}", SCAN_REF)
            .into_bytes();
        let response = app.send_webhook(&body, SIGNING_KEY).await;
        assert_eq!(response.status(), 200, "{file}");
        let verdict: Value = response.json().await.unwrap();
        assert_eq!(verdict["verdict"], want_verdict, "{file}");
        if let Some(status) = want_status {
            assert_eq!(
                app.state(&login_id(&login)).await["status"],
                status,
                "{file}"
            );
        }
    }
    assert_eq!(app.count("select count(*) from deliveries").await, 14);
}

/// A signed webhook of another kind of session (an enrollment, the legacy liveness method) is
/// kept with the verdict `unexpected_type`, answered 2xx so iDenfy stops, and changes nothing:
/// the code stays pending and a proper outcome still applies. Casing is iDenfy's to choose.
#[sqlx::test]
async fn a_webhook_of_another_kind_of_session_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let attempt = attempt_id(&login);
    let events = || app.count("select count(*) from events");
    let before = events().await;
    for (kind, method) in [
        ("ENROLLMENT", "FACE_MATCHING"),
        ("AUTHENTICATION", "ACTIVE_LIVENESS"),
        ("IDENTIFICATION", "FACE_MATCHING"),
    ] {
        assert_eq!(
            app.webhook(
                &attempt,
                "SUCCESS",
                json!({ "type": kind, "method": method })
            )
            .await,
            (200, "unexpected_type".into()),
            "{kind} {method}"
        );
    }
    assert_eq!(events().await, before, "an event was written");
    let state = app.state(&login_id(&login)).await;
    assert_eq!(
        (
            state["status"].as_str(),
            state["attempt"]["status"].as_str()
        ),
        (Some("pending"), Some("pending"))
    );
    assert_eq!(
        state["attempt"]["digit_string"],
        login["attempt"]["digit_string"]
    );
    let stored: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "select verdict, attempt_id::text, detail from deliveries order by received_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 3);
    for (verdict, attempt_id, detail) in &stored {
        assert_eq!(verdict, "unexpected_type");
        assert_eq!(attempt_id.as_deref(), Some(attempt.as_str()));
        assert!(
            detail.as_deref().is_some_and(|d| d.contains("type")),
            "{detail:?}"
        );
    }
    assert_eq!(
        app.metric("facepair_webhook_deliveries_total{verdict=\"unexpected_type\"}")
            .await,
        3.0
    );
    // the expected kind, in any case, still applies
    assert_eq!(
        app.webhook(
            &attempt,
            "SUCCESS",
            json!({ "type": "authentication", "method": "Face_Matching" })
        )
        .await,
        (200, "applied".into())
    );
    assert_eq!(app.state(&login_id(&login)).await["status"], "approved");
}

/// A webhook's change is made only if its login is still as the webhook read it: one read
/// before another change committed changes nothing at all (no attempt, event or delivery
/// row) and says so (`RowNotFound`, on which the webhook path reads again); a delivery read
/// afresh is applied.
#[sqlx::test]
async fn a_change_from_a_stale_read_changes_nothing(pool: PgPool) {
    use facepair::domain::{AttemptStatus, EventKind, LoginStatus, Source};
    use facepair::store::attempts::IdenfyReport;
    use facepair::store::changes::{Change, Finish, NewEvent, StatusChange, apply};
    use facepair::store::deliveries::NewDelivery;

    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id: uuid::Uuid = login_id(&login).parse().unwrap();
    let attempt: uuid::Uuid = attempt_id(&login).parse().unwrap();
    let row = facepair::store::logins::find(&app.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.event_seq, 1);
    let mut conn = app.pool.acquire().await.unwrap();
    let event = |kind| NewEvent {
        kind,
        source: Source::Webhook,
        attempt_id: Some(attempt),
        detail: json!({}),
    };
    // another change commits after the read
    let other = Change {
        login_id: id,
        status: LoginStatus::Pending,
        flags: StatusChange::default(),
        finish: None,
        event: event(EventKind::AttemptIssued),
        delivery: None,
        read_at_seq: Some(1),
    };
    assert_eq!(apply(&mut conn, other).await.unwrap(), 2);
    let report = IdenfyReport::default();
    let delivery = NewDelivery {
        id: uuid::Uuid::now_v7(),
        body: b"{}",
        body_sha256: &[7; 32],
        content_type: None,
        event_type: None,
        signing_key_index: 0,
        token: None,
        idenfy_status: None,
        verdict: facepair::domain::Verdict::Applied,
        attempt_id: Some(attempt),
        login_id: Some(id),
        detail: None,
    };
    let stale = Change {
        login_id: id,
        status: LoginStatus::Approved,
        flags: StatusChange::default(),
        finish: Some(Finish {
            attempt_id: attempt,
            status: AttemptStatus::Succeeded,
            source: Source::Webhook,
            report: &report,
        }),
        event: event(EventKind::AttemptSucceeded),
        delivery: Some(&delivery),
        read_at_seq: Some(1),
    };
    let refused = apply(&mut conn, stale).await.unwrap_err();
    assert!(matches!(refused, sqlx::Error::RowNotFound), "{refused:?}");
    assert_eq!(
        app.state(&login_id(&login)).await["attempt"]["status"],
        "pending"
    );
    assert_eq!(app.count("select count(*) from deliveries").await, 0);
    assert_eq!(app.count("select count(*) from events").await, 2);
    drop(conn);

    // through the endpoint, from a fresh read
    assert_eq!(
        app.webhook(&attempt_id(&login), "SUCCESS", json!({})).await,
        (200, "applied".into())
    );
    assert_eq!(app.state(&login_id(&login)).await["status"], "approved");
}

/// A webhook whose write waits while another transaction changes its login (a cancel, held
/// open) is judged again after that change: `late`, and the login is never approved.
#[sqlx::test]
async fn a_webhook_waiting_on_a_change_of_its_login_is_judged_after_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login_id(&login);
    let holder = hold_login(&app, &id, &A_CANCEL).await;
    let attempt = attempt_id(&login);
    let (answer, ()) = tokio::join!(
        app.webhook(&attempt, "SUCCESS", json!({})),
        end_once_waited_on(&app, holder, 1, "commit")
    );
    assert_eq!(answer, (200, "late".into()));
    assert_eq!(app.state(&id).await["status"], "canceled");
    assert_eq!(
        app.count("select count(*) from events where kind = 'attempt_succeeded'")
            .await,
        0
    );
    assert_eq!(app.count("select count(*) from deliveries").await, 1);
}

/// Two copies of one body whose writes both wait for the login's row (held by another
/// transaction), then race: one is applied, the other, read again, is a duplicate.
#[sqlx::test]
async fn two_copies_waiting_on_the_same_login_apply_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = app.token_of(&attempt_id(&login)).await;
    let body = webhook_body(&token, "SUCCESS", json!({}));
    let holder = hold_login(&app, &login_id(&login), &[]).await;
    let send = || async {
        let response = app.send_webhook(body.as_bytes(), SIGNING_KEY).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        answer["verdict"].as_str().unwrap().to_owned()
    };
    let (first, second, ()) = tokio::join!(
        send(),
        send(),
        end_once_waited_on(&app, holder, 2, "rollback")
    );
    let mut verdicts = [first, second];
    verdicts.sort();
    assert_eq!(verdicts, ["applied", "duplicate"]);
    assert_eq!(
        app.count("select count(*) from events where kind = 'attempt_succeeded'")
            .await,
        1
    );
    assert_eq!(app.state(&login_id(&login)).await["status"], "approved");
}
