//! Pins the simulator to idenfy-api.md: paths, field names and types, status codes, error
//! shapes, and the webhook signature, checked against an HMAC computed here independently.

use std::time::Duration;

use facepair::sim::state::Eligibility;
use facepair::sim::{SimConfig, Simulator};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "conf-key";
const SECRET: &str = "conf-secret";
const SIGNING: &str = "conf-signing-key";

struct Sim {
    base: String,
    http: reqwest::Client,
    _handle: actix_web::dev::ServerHandle,
}

async fn start(tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut config = SimConfig::for_tests(KEY, SECRET, SIGNING);
    config.webhook_retry_delay = Duration::from_millis(20);
    config.scan_refs = vec![
        ("ready".into(), Eligibility::Authentication),
        ("unverified".into(), Eligibility::Identification),
        ("legacy".into(), Eligibility::Enrollment),
    ];
    tweak(&mut config);
    let sim = Simulator::start(config).await.unwrap();
    let base = sim.base_url();
    let handle = sim.handle();
    tokio::spawn(sim.run_until_stopped());
    Sim {
        base,
        http: reqwest::Client::new(),
        _handle: handle,
    }
}

impl Sim {
    async fn check_status(&self, scan_ref: &str, method: Option<&str>) -> (u16, Value) {
        let mut url = format!(
            "{}/identification/facial-auth/{scan_ref}/check-status/",
            self.base
        );
        if let Some(m) = method {
            url.push_str(&format!("?method={m}"));
        }
        let r = self
            .http
            .get(url)
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn create(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/partner/authentication-info", self.base))
            .basic_auth(KEY, Some(SECRET))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn session_request() -> Value {
    json!({ "scanRef": "ready", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "generateDigitString": true })
}

#[tokio::test]
async fn check_status_answers_as_documented() {
    let sim = start(|_| {}).await;
    assert_eq!(
        sim.check_status("ready", Some("FACE_MATCHING")).await,
        (200, json!({ "type": "AUTHENTICATION" }))
    );
    assert_eq!(
        sim.check_status("unverified", Some("FACE_MATCHING")).await,
        (200, json!({ "type": "IDENTIFICATION" }))
    );
    // ENROLLMENT only with ACTIVE_LIVENESS (§3)
    assert_eq!(
        sim.check_status("legacy", Some("ACTIVE_LIVENESS")).await,
        (200, json!({ "type": "ENROLLMENT" }))
    );
    assert_eq!(
        sim.check_status("legacy", Some("FACE_MATCHING")).await,
        (200, json!({ "type": "AUTHENTICATION" }))
    );
    assert_eq!(
        sim.check_status("nobody", Some("FACE_MATCHING")).await.0,
        404
    );
    assert_eq!(
        sim.check_status("ready", Some("SELFIE")).await.1["identifier"],
        "BAD_VALUE"
    );
}

#[tokio::test]
async fn bad_credentials_are_401_without_identifier() {
    let sim = start(|_| {}).await;
    for (user, pass) in [(KEY, "wrong"), ("wrong", SECRET)] {
        let r = sim
            .http
            .post(format!("{}/partner/authentication-info", sim.base))
            .basic_auth(user, Some(pass))
            .json(&session_request())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({ "message": "Invalid authorization credentials" })
        );
    }
    let r = sim
        .http
        .get(format!(
            "{}/identification/facial-auth/ready/check-status/?method=FACE_MATCHING",
            sim.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn session_creation_fields_and_validation() {
    let sim = start(|_| {}).await;
    let (status, body) = sim.create(session_request()).await;
    assert_eq!(status, 200);
    let token = body["token"].as_str().unwrap();
    assert!(
        token.len() <= 40 && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{token}"
    );
    assert_eq!(body["maxAttemptCount"], 3);
    let digits = body["digitString"].as_str().unwrap();
    assert!(
        digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()),
        "{digits}"
    );

    // lifetime defaults to 1800 s
    let sessions: Vec<Value> = sim
        .http
        .get(format!("{}/_sim/sessions", sim.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created: chrono::DateTime<chrono::Utc> =
        sessions[0]["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        sessions[0]["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).num_seconds(), 1800);

    // no digitString unless asked for
    let (_, plain) = sim
        .create(json!({ "scanRef": "ready", "type": "AUTHENTICATION", "method": "FACE_MATCHING" }))
        .await;
    assert!(plain.get("digitString").is_none() && plain["token"].is_string());

    let cases = [
        (
            json!({ "type": "AUTHENTICATION", "method": "FACE_MATCHING" }),
            400,
            "MISSING_VALUE",
        ),
        (
            json!({ "scanRef": "ready", "method": "FACE_MATCHING" }),
            400,
            "MISSING_VALUE",
        ),
        (
            json!({ "scanRef": "ready", "type": "AUTHENTICATION" }),
            400,
            "MISSING_VALUE",
        ),
        (
            json!({ "scanRef": "ready", "type": "SELFIE", "method": "FACE_MATCHING" }),
            400,
            "BAD_VALUE",
        ),
        (
            json!({ "scanRef": "ready", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "lifetime": 0 }),
            400,
            "BAD_VALUE",
        ),
        (
            json!({ "scanRef": "ready", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "lifetime": 2_592_001 }),
            400,
            "BAD_VALUE",
        ),
        (
            json!({ "scanRef": "unverified", "type": "AUTHENTICATION", "method": "FACE_MATCHING" }),
            400,
            "BAD_VALUE",
        ),
    ];
    for (request, want_status, want_identifier) in cases {
        let (status, body) = sim.create(request.clone()).await;
        assert_eq!(
            (status, body["identifier"].as_str().unwrap_or_default()),
            (want_status, want_identifier),
            "{request}"
        );
        assert!(body["message"].is_string());
    }
    let (status, _) = sim
        .create(json!({ "scanRef": "nobody", "type": "AUTHENTICATION", "method": "FACE_MATCHING" }))
        .await;
    assert_eq!(status, 404);
    let r = sim
        .http
        .post(format!("{}/partner/authentication-info", sim.base))
        .basic_auth(KEY, Some(SECRET))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["identifier"], "JSON_ERROR");
}

#[tokio::test]
async fn digit_strings_are_unique_among_live_sessions() {
    let sim = start(|_| {}).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (_, body) = sim.create(session_request()).await;
        assert!(seen.insert(body["digitString"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn session_reader_fields() {
    let sim = start(|_| {}).await;
    let (_, created) = sim.create(session_request()).await;
    let token = created["token"].as_str().unwrap();
    let r = sim
        .http
        .get(format!(
            "{}/api/v2/facial-authentication-sessions/{token}/",
            sim.base
        ))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap();
    let session: Value = r.json().await.unwrap();
    let keys: Vec<&str> = session
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "id",
        "tokenString",
        "approved",
        "givenScanRef",
        "type",
        "authenticationMethod",
        "facePhoto",
    ] {
        assert!(keys.contains(&field), "{field} in {keys:?}");
    }
    assert!(session["approved"].is_null(), "null while pending");
    assert!(uuid::Uuid::parse_str(session["id"].as_str().unwrap()).is_ok());
    let r = sim
        .http
        .get(format!(
            "{}/api/v2/facial-authentication-sessions/",
            sim.base
        ))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn rate_limit_answers_too_many_requests() {
    let sim = start(|c| c.rate_limit_per_hour = 3).await;
    for _ in 0..3 {
        assert_eq!(
            sim.check_status("ready", Some("FACE_MATCHING")).await.0,
            200
        );
    }
    assert_eq!(
        sim.check_status("ready", Some("FACE_MATCHING")).await,
        (
            429,
            json!({ "identifier": "TOO_MANY_REQUESTS", "message": "Request limit exceeded." })
        )
    );
}

fn independent_signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One webhook per finished session, with iDenfy's headers, every documented field, and a
/// lower-case hex HMAC-SHA256 of the exact bytes; retried after a non-2xx.
#[tokio::test]
async fn webhooks_are_signed_shaped_and_retried_as_documented() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let sim = start(|c| c.webhook_url = Some(format!("{}/hook", receiver.uri()))).await;

    let (_, created) = sim.create(session_request()).await;
    let r = sim
        .http
        .post(format!("{}/_sim/app/enter", sim.base))
        .json(&json!({ "digitString": created["digitString"], "status": "FAILED", "failReason": "FAKE_FACE", "riskTags": ["UNTRUSTED_ENVIRONMENT"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let requests = loop {
        let requests = receiver.received_requests().await.unwrap();
        if requests.len() >= 3 || tokio::time::Instant::now() > deadline {
            break requests;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(requests.len(), 3, "two 500s, then delivered");
    for request in &requests {
        assert_eq!(
            request.body, requests[0].body,
            "retries send the same bytes"
        );
        assert_eq!(
            request.headers["idenfy-event-type"],
            "FACIAL_AUTHENTICATION"
        );
        let signature = request.headers["idenfy-signature"].to_str().unwrap();
        assert_eq!(signature, independent_signature(SIGNING, &request.body));
        assert!(
            signature.len() == 64
                && signature
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(
            request.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "id",
        "scanRef",
        "clientId",
        "token",
        "status",
        "type",
        "method",
        "facePhoto",
        "ipAddress",
        "failReason",
        "riskTags",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["failReason"], "FAKE_FACE");
    assert_eq!(body["token"], created["token"]);
    assert_eq!(body["scanRef"], "ready");
    assert_eq!(body["type"], "AUTHENTICATION");
    assert_eq!(body["method"], "FACE_MATCHING");
    assert_eq!(body["riskTags"], json!(["UNTRUSTED_ENVIRONMENT"]));
    assert!(body["facePhoto"].as_str().unwrap().starts_with("http"));
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());

    // EXPIRED: no photo, from the simulator's clock
    let (_, short) = sim.create(json!({ "scanRef": "ready", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "lifetime": 1 })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let expired = loop {
        let requests = receiver.received_requests().await.unwrap();
        if let Some(r) = requests
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .find(|b| b["token"] == short["token"])
        {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no EXPIRED webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(expired["status"], "EXPIRED");
    assert!(expired["facePhoto"].is_null());
}
