use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::matchers::{basic_auth, body_partial_json, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

async fn nothing_stored(app: &TestApp) {
    assert_eq!(app.count("select count(*) from logins").await, 0);
    assert_eq!(app.count("select count(*) from attempts").await, 0);
    assert_eq!(app.count("select count(*) from events").await, 0);
}

async fn error_code(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body,
    )
}

#[sqlx::test]
async fn creates_a_login_with_a_digit_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/identification/facial-auth/{SCAN_REF}/check-status/"
        )))
        .and(query_param("method", "FACE_MATCHING"))
        .and(basic_auth("idenfy-key", "idenfy-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "type": "AUTHENTICATION" })))
        .expect(1)
        .mount(&app.idenfy)
        .await;
    Mock::given(method("POST"))
        .and(path("/partner/authentication-info"))
        .and(basic_auth("idenfy-key", "idenfy-secret"))
        .and(body_partial_json(json!({
            "scanRef": SCAN_REF, "type": "AUTHENTICATION", "method": "FACE_MATCHING",
            "generateDigitString": true, "lifetime": 300, "locale": "lt"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token": "UbYZnDdrTElsSDBQFeNkd8MxI9CpSEO0qR5jtRcz", "maxAttemptCount": 3, "digitString": "04823657"
        })))
        .expect(1)
        .mount(&app.idenfy)
        .await;

    let response = app
        .create_login(json!({
            "scan_ref": SCAN_REF, "user_ref": "user-42", "locale": "LT", "lifetime_seconds": 300,
            "client_ip": "198.51.100.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"
        }))
        .await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("x-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["scan_ref"], SCAN_REF);
    assert_eq!(
        body["attempt"]["digit_string"], "04823657",
        "leading zero kept"
    );
    assert_eq!(body["attempt"]["status"], "pending");
    assert_eq!(body["attempt"]["number"], 1);
    assert_eq!(body["attempt"]["max_attempt_count"], 3);
    assert_eq!(body["poll_interval_seconds"], 2);
    assert!(body["watch_token"].as_str().unwrap().len() >= 40);
    assert!(
        body["watch_url"]
            .as_str()
            .unwrap()
            .ends_with(body["watch_token"].as_str().unwrap())
    );
    let expires: chrono::DateTime<chrono::Utc> = body["attempt"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let server_time: chrono::DateTime<chrono::Utc> =
        body["server_time"].as_str().unwrap().parse().unwrap();
    let lifetime = (expires - server_time).num_seconds();
    assert!((298..=300).contains(&lifetime), "lifetime {lifetime}");

    let (ip, agent, hash_len): (Option<String>, Option<String>, i32) =
        sqlx::query_as("select host(client_ip), user_agent, length(watch_token_hash) from logins")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ip.as_deref(), Some("198.51.100.7"));
    assert_eq!(agent.as_deref(), Some("Mozilla/5.0 (X11; Linux x86_64)"));
    assert_eq!(hash_len, 32, "only the watch token's hash is stored");
    let stored_token: i64 = sqlx::query_scalar("select count(*) from logins where encode(watch_token_hash, 'escape') like '%' || $1 || '%'")
        .bind(&body["watch_token"].as_str().unwrap()[4..20])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored_token, 0);
    assert_eq!(
        app.count("select count(*) from events where kind = 'login_created'")
            .await,
        1
    );
}

#[sqlx::test]
async fn default_lifetime_is_ten_minutes(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    Mock::given(method("POST"))
        .and(path("/partner/authentication-info"))
        .and(body_partial_json(json!({ "lifetime": 600 })))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "token": "T1", "maxAttemptCount": 3, "digitString": "12345678" }),
        ))
        .expect(1)
        .mount(&app.idenfy)
        .await;
    let response = app.create_login(json!({ "scan_ref": SCAN_REF })).await;
    assert_eq!(response.status(), 201);
}

/// JSON Schema counts `300.0` as an integer, and so does facepair.
#[sqlx::test]
async fn a_whole_float_lifetime_is_accepted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    Mock::given(method("POST"))
        .and(path("/partner/authentication-info"))
        .and(body_partial_json(json!({ "lifetime": 300 })))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "token": "T1", "maxAttemptCount": 3, "digitString": "12345678" }),
        ))
        .expect(1)
        .mount(&app.idenfy)
        .await;
    let response = app
        .create_login(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 300.0 }))
        .await;
    assert_eq!(response.status(), 201);
}

#[sqlx::test]
async fn identification_required_creates_no_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    mock_check_status(&app.idenfy, "IDENTIFICATION").await;
    Mock::given(method("POST"))
        .and(path("/partner/authentication-info"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&app.idenfy)
        .await;
    let (status, code, _) =
        error_code(app.create_login(json!({ "scan_ref": SCAN_REF })).await).await;
    assert_eq!((status, code.as_str()), (409, "identification_required"));
    nothing_stored(&app).await;
}

/// Only `AUTHENTICATION` may proceed. ENROLLMENT (which iDenfy documents only for the legacy
/// ACTIVE_LIVENESS method, never the FACE_MATCHING facepair asks about) or a type iDenfy has
/// not documented: 409 `face_auth_not_available` naming the type, and no session is created.
#[sqlx::test]
async fn any_other_eligibility_creates_no_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for kind in ["ENROLLMENT", "REENROLLMENT"] {
        app.idenfy.reset().await;
        mock_check_status(&app.idenfy, kind).await;
        Mock::given(method("POST"))
            .and(path("/partner/authentication-info"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&app.idenfy)
            .await;
        let (status, code, body) =
            error_code(app.create_login(json!({ "scan_ref": SCAN_REF })).await).await;
        assert_eq!((status, code.as_str()), (409, "face_auth_not_available"));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("\"{kind}\"")), "{message}");
        nothing_stored(&app).await;
        app.idenfy.verify().await;
    }
}

#[sqlx::test]
async fn unknown_scan_ref_is_404(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("<h1>Not Found</h1>"))
        .mount(&app.idenfy)
        .await;
    let (status, code, _) =
        error_code(app.create_login(json!({ "scan_ref": "no-such-ref" })).await).await;
    assert_eq!((status, code.as_str()), (404, "unknown_scan_ref"));
    nothing_stored(&app).await;
}

/// Every way iDenfy can fail at creation gives a distinct, documented error and writes nothing.
#[sqlx::test]
async fn idenfy_failures_at_creation(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.idenfy_timeout = Duration::from_millis(700)).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    let cases: Vec<(ResponseTemplate, u16, &str, Option<&str>)> = vec![
        (ResponseTemplate::new(401).set_body_json(json!({ "message": "Invalid authorization credentials" })), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(402).set_body_json(json!({ "message": "Action not allowed due to lack of funds or exceeded limit." })), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(403).set_body_json(json!({ "message": "Partner inactive" })), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(400).set_body_json(json!({ "identifier": "PERMISSIONS_ERROR", "message": "Partner reached token limit." })), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(429).set_body_json(json!({ "identifier": "TOO_MANY_REQUESTS", "message": "slow" })), 429, "idenfy_rate_limited", Some("30")),
        (ResponseTemplate::new(429).insert_header("retry-after", "7"), 429, "idenfy_rate_limited", Some("7")),
        (ResponseTemplate::new(500).set_body_string("boom"), 503, "idenfy_unavailable", Some("2")),
        (ResponseTemplate::new(503), 503, "idenfy_unavailable", Some("2")),
        (ResponseTemplate::new(200).set_body_string("<html>not json</html>"), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(200).set_body_json(json!({ "token": "T", "maxAttemptCount": 3 })), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(200).set_body_json(json!({ "token": "T", "digitString": "12ab" })), 502, "idenfy_rejected", None),
        (ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)).set_body_json(json!({ "token": "T", "digitString": "1" })), 504, "idenfy_timeout", None),
    ];
    for (template, want_status, want_code, want_retry_after) in cases {
        let session = Mock::given(method("POST"))
            .and(path("/partner/authentication-info"))
            .respond_with(template)
            .mount_as_scoped(&app.idenfy)
            .await;
        let response = app.create_login(json!({ "scan_ref": SCAN_REF })).await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, code, body) = error_code(response).await;
        assert_eq!((status, code.as_str()), (want_status, want_code), "{body}");
        assert_eq!(retry_after.as_deref(), want_retry_after, "{want_code}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("boom") && !message.contains("idenfy-secret"),
            "no internals: {message}"
        );
        assert!(body["error"]["request_id"].as_str().unwrap().len() > 10);
        drop(session);
        nothing_stored(&app).await;
    }
}

#[sqlx::test]
async fn check_status_is_retried_once_on_a_5xx(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.idenfy)
        .await;
    app.mock_eligible().await;
    let response = app.create_login(json!({ "scan_ref": SCAN_REF })).await;
    assert_eq!(response.status(), 201);
}

#[sqlx::test]
async fn session_creation_is_not_retried_after_a_5xx(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&app.idenfy)
        .await;
    let (status, code, _) =
        error_code(app.create_login(json!({ "scan_ref": SCAN_REF })).await).await;
    assert_eq!((status, code.as_str()), (503, "idenfy_unavailable"));
}

#[sqlx::test]
async fn idenfy_unreachable_is_503(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.idenfy_base_url = "http://127.0.0.1:9".parse().unwrap()
    })
    .await;
    let (status, code, _) =
        error_code(app.create_login(json!({ "scan_ref": SCAN_REF })).await).await;
    assert_eq!((status, code.as_str()), (503, "idenfy_unavailable"));
    nothing_stored(&app).await;
}

#[sqlx::test]
async fn bad_input_is_refused_before_idenfy_is_called(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&app.idenfy)
        .await;
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({}), 422, "invalid_field", Some("scan_ref")),
        (
            json!({ "scan_ref": "" }),
            422,
            "invalid_field",
            Some("scan_ref"),
        ),
        (
            json!({ "scan_ref": "../../admin" }),
            422,
            "invalid_field",
            Some("scan_ref"),
        ),
        (
            json!({ "scan_ref": "a".repeat(41) }),
            422,
            "invalid_field",
            Some("scan_ref"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 0 }),
            422,
            "invalid_field",
            Some("lifetime_seconds"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 2_592_001 }),
            422,
            "invalid_field",
            Some("lifetime_seconds"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "locale": "english" }),
            422,
            "invalid_field",
            Some("locale"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "client_ip": "300.1.1.1" }),
            422,
            "invalid_field",
            Some("client_ip"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "user_ref": "" }),
            422,
            "invalid_field",
            Some("user_ref"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "user_agent": "x".repeat(1025) }),
            422,
            "invalid_field",
            Some("user_agent"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 60.5 }),
            422,
            "invalid_field",
            Some("lifetime_seconds"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "locale": "de-" }),
            422,
            "invalid_field",
            Some("locale"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "platform_name": "  " }),
            422,
            "invalid_field",
            Some("platform_name"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "platform_name": "x".repeat(61) }),
            422,
            "invalid_field",
            Some("platform_name"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "desktop_place": "Vilnius\nclick here" }),
            422,
            "invalid_field",
            Some("desktop_place"),
        ),
        (
            json!({ "scan_ref": SCAN_REF, "desktop_place": "x".repeat(81) }),
            422,
            "invalid_field",
            Some("desktop_place"),
        ),
        (json!({ "scan_ref": 42 }), 400, "malformed_json", None),
        (json!({ "scanRef": SCAN_REF }), 400, "malformed_json", None),
        (json!([1, 2]), 400, "malformed_json", None),
    ];
    for (body, want_status, want_code, want_field) in cases {
        let (status, code, error) = error_code(app.create_login(body.clone()).await).await;
        assert_eq!(
            (status, code.as_str()),
            (want_status, want_code),
            "{body} -> {error}"
        );
        assert_eq!(error["error"]["field"].as_str(), want_field, "{body}");
    }
    let raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(app.url("/v1/logins"))
            .bearer_auth(API_KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, code, _) =
        error_code(raw("{\"scan_ref\": ", "application/json").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "malformed_json"));
    let (status, code, _) = error_code(
        raw("scan_ref=x", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    let big = Box::leak(format!("{{\"scan_ref\": \"{}\"}}", "a".repeat(20_000)).into_boxed_str());
    let (status, code, _) = error_code(raw(big, "application/json").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    nothing_stored(&app).await;
}

/// A body that is JSON but does not fit says which field is wrong and what was expected;
/// only a body that is not JSON at all says so.
#[sqlx::test]
async fn malformed_json_names_the_field_that_does_not_fit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let cases = [
        (
            json!({ "scan_ref": 5 }),
            "the request body's field `scan_ref`: invalid type: integer `5`, expected a string",
        ),
        (
            json!({ "scan_ref": SCAN_REF, "user_ref": ["u"] }),
            "the request body's field `user_ref`: invalid type: sequence, expected a string",
        ),
        (
            json!({ "scanRef": SCAN_REF }),
            "the request body's field `scanRef`: unknown field `scanRef`, expected one of",
        ),
        (
            json!("scan_ref"),
            "the request body: invalid type: string \"scan_ref\", expected",
        ),
    ];
    for (body, want) in cases {
        let (status, code, error) = error_code(app.create_login(body.clone()).await).await;
        assert_eq!((status, code.as_str()), (400, "malformed_json"), "{body}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(want), "{body}: {message}");
        assert!(!message.contains("not valid JSON"), "{body}: {message}");
    }
    let response = app
        .http
        .post(app.url("/v1/logins"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{\"scan_ref\": ")
        .send()
        .await
        .unwrap();
    let (status, code, error) = error_code(response).await;
    assert_eq!((status, code.as_str()), (400, "malformed_json"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the request body is not valid JSON: EOF while parsing"),
        "{message}"
    );
    nothing_stored(&app).await;
}

#[sqlx::test]
async fn api_keys(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let body = json!({ "scan_ref": SCAN_REF });
    let post = |key: Option<&'static str>| {
        let mut request = app.http.post(app.url("/v1/logins")).json(&body);
        if let Some(k) = key {
            request = request.header("authorization", k);
        }
        request.send()
    };
    for key in [
        None,
        Some("Bearer wrong-key-00000000000"),
        Some("Basic dGVzdDp0ZXN0"),
        Some("Bearer "),
    ] {
        let (status, code, _) = error_code(post(key).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{key:?}");
    }
    nothing_stored(&app).await;
    // both configured keys work on their own (rotation)
    assert_eq!(
        post(Some("Bearer test-platform-key-0001"))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        post(Some("Bearer test-platform-key-0002"))
            .await
            .unwrap()
            .status(),
        201
    );
    let key_ids: i64 = app
        .count("select count(distinct api_key_id) from logins")
        .await;
    assert_eq!(key_ids, 2, "the creating key is recorded by id");
}

#[sqlx::test]
async fn scan_ref_hourly_budget(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.max_attempts_per_scan_ref_hour = 2).await;
    app.mock_eligible().await;
    for _ in 0..2 {
        assert_eq!(
            app.create_login(json!({ "scan_ref": SCAN_REF }))
                .await
                .status(),
            201
        );
    }
    let response = app.create_login(json!({ "scan_ref": SCAN_REF })).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    let (status, code, body) = error_code(response).await;
    assert_eq!((status, code.as_str()), (429, "attempt_budget_exhausted"));
    assert_eq!(body["error"]["budget"], "scan_ref_hourly");
    assert_eq!(app.count("select count(*) from logins").await, 2);
    // another person is not affected
    assert_eq!(
        app.create_login(json!({ "scan_ref": "another-ref" }))
            .await
            .status(),
        201
    );
}

/// With more codes in the hour than the budget allows (the budget was lowered), the budget
/// has room again when the oldest of the newest `budget` codes leaves the hour, not the
/// oldest of all.
#[sqlx::test]
async fn the_scan_ref_budget_frees_when_enough_codes_left_the_hour(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |s| s.max_attempts_per_scan_ref_hour = 3).await;
    app.mock_eligible().await;
    for _ in 0..3 {
        app.login().await;
    }
    // issued 50, 40 and 30 minutes ago
    sqlx::query(
        "update attempts a set created_at = now() - interval '10 minutes' * (6 - r.n)
         from (select id, row_number() over (order by created_at) as n from attempts) r
         where a.id = r.id",
    )
    .execute(&pool)
    .await
    .unwrap();
    let frees_in = |budget: i64| {
        let pool = pool.clone();
        async move {
            // counted as a new code's reservation counts them, then rolled back
            let mut tx = pool.begin().await.unwrap();
            let reservation = facepair::store::reservations::NewReservation {
                id: uuid::Uuid::now_v7(),
                login_id: uuid::Uuid::now_v7(),
                scan_ref: SCAN_REF,
                requested_from: "198.51.100.7",
                lease_secs: 60.0,
            };
            let used = facepair::store::reservations::reserve(&mut tx, &reservation, budget, 100)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            assert_eq!(used.reserved, used.address_frees_at.is_none());
            used.address_frees_at
                .map(|at| (at - chrono::Utc::now()).num_seconds())
        }
    };
    let in_20_minutes = frees_in(2).await.expect("over a budget of 2");
    assert!((1190..=1200).contains(&in_20_minutes), "{in_20_minutes}");
    let in_10_minutes = frees_in(3).await.expect("at a budget of 3");
    assert!((590..=600).contains(&in_10_minutes), "{in_10_minutes}");
    assert_eq!(frees_in(4).await, None, "a budget of 4 has room");
}
