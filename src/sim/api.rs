//! The iDenfy API as the simulator plays it (docs/idenfy-api.md §2-4, §7, §9).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Sim;
use super::state::{Eligibility, Session};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/identification/facial-auth/{scan_ref}/check-status/",
        web::get().to(check_status),
    )
    .route(
        "/partner/authentication-info",
        web::post().to(create_session),
    )
    .route(
        "/api/v2/facial-authentication-sessions/",
        web::get().to(list_sessions),
    )
    .route(
        "/api/v2/facial-authentication-sessions/{token}/",
        web::get().to(get_session),
    );
}

/// iDenfy's standard error body.
fn error(status: StatusCode, identifier: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "identifier": identifier, "message": message }))
}

/// Latency and injected errors, then Basic auth (no identifier, as iDenfy's pre-processing
/// errors), then the hourly rate limit.
async fn gate(sim: &Sim, req: &HttpRequest) -> Option<HttpResponse> {
    let (latency, injected) = {
        let mut state = sim.state.lock().unwrap();
        let injected = match state.faults.api_error_status {
            Some(status) if state.faults.api_error_count > 0 => {
                state.faults.api_error_count -= 1;
                Some(status)
            }
            _ => None,
        };
        (state.faults.api_latency_ms, injected)
    };
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if let Some(status) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(if status == StatusCode::TOO_MANY_REQUESTS {
            error(status, "TOO_MANY_REQUESTS", "Too many requests.")
        } else {
            error(status, "INTERNAL_ERROR", "Internal error.")
        });
    }
    if !authorised(sim, req) {
        return Some(
            HttpResponse::Unauthorized()
                .json(json!({ "message": "Invalid authorization credentials" })),
        );
    }
    let mut state = sim.state.lock().unwrap();
    let now = Utc::now();
    if state
        .window_start
        .is_none_or(|start| now - start >= chrono::Duration::hours(1))
    {
        state.window_start = Some(now);
        state.window_calls = 0;
    }
    state.window_calls += 1;
    if state.window_calls > sim.config.rate_limit_per_hour {
        return Some(error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "Request limit exceeded.",
        ));
    }
    None
}

fn authorised(sim: &Sim, req: &HttpRequest) -> bool {
    use secrecy::ExposeSecret as _;
    let Some(encoded) = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!(
        "{}:{}",
        sim.config.api_key.expose_secret(),
        sim.config.api_secret.expose_secret()
    );
    decoded == expected.as_bytes()
}

#[derive(serde::Deserialize)]
struct MethodQuery {
    method: Option<String>,
}

async fn check_status(
    sim: web::Data<Sim>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<MethodQuery>,
) -> HttpResponse {
    if let Some(refused) = gate(&sim, &req).await {
        return refused;
    }
    // without `method`, iDenfy's legacy flow is assumed (docs/idenfy-api.md §3, INF)
    let method = query.method.as_deref().unwrap_or("ACTIVE_LIVENESS");
    if !matches!(method, "FACE_MATCHING" | "ACTIVE_LIVENESS") {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_VALUE",
            "method: not a valid choice.",
        );
    }
    let state = sim.state.lock().unwrap();
    let Some(entry) = state.scan_refs.get(path.as_str()) else {
        // the 404 body is undocumented; a framework default is the documented inference
        return HttpResponse::NotFound().json(json!({ "detail": "Not found." }));
    };
    let kind = match entry.eligibility {
        // ENROLLMENT is only ever answered for ACTIVE_LIVENESS (docs/idenfy-api.md §3)
        Eligibility::Enrollment if method == "FACE_MATCHING" => Eligibility::Authentication,
        other => other,
    };
    HttpResponse::Ok().json(json!({ "type": kind }))
}

async fn create_session(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Some(refused) = gate(&sim, &req).await {
        return refused;
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "JSON_ERROR",
            "Request body is not valid JSON.",
        );
    };
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    for required in ["scanRef", "type", "method"] {
        if body.get(required).is_none_or(Value::is_null) {
            return error(
                StatusCode::BAD_REQUEST,
                "MISSING_VALUE",
                &format!("{required}: This field is required."),
            );
        }
    }
    let (Some(scan_ref), Some(kind), Some(method)) =
        (text("scanRef"), text("type"), text("method"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_VALUE",
            "scanRef, type and method must be strings.",
        );
    };
    if !matches!(kind, "AUTHENTICATION" | "ENROLLMENT") {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_VALUE",
            "type: not a valid choice.",
        );
    }
    if !matches!(method, "FACE_MATCHING" | "ACTIVE_LIVENESS") {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_VALUE",
            "method: not a valid choice.",
        );
    }
    let lifetime = match body.get("lifetime") {
        None | Some(Value::Null) => 1800,
        Some(v) => match v.as_u64().filter(|n| (1..=2_592_000).contains(n)) {
            Some(n) => n as u32,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BAD_VALUE",
                    "lifetime: must be between 1 and 2592000.",
                );
            }
        },
    };
    let generate = match body.get("generateDigitString") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_VALUE",
                "generateDigitString: must be a boolean.",
            );
        }
    };
    let locale = match body.get("locale") {
        None | Some(Value::Null) => None,
        Some(Value::String(l))
            if crate::domain::locale::IDENFY_LOCALES.contains(&l.to_ascii_lowercase().as_str()) =>
        {
            Some(l.to_ascii_lowercase())
        }
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_VALUE",
                "locale: not a valid choice.",
            );
        }
    };

    let mut state = sim.state.lock().unwrap();
    let Some(entry) = state.scan_refs.get(scan_ref).cloned() else {
        return HttpResponse::NotFound().json(json!({ "detail": "Not found." }));
    };
    if entry.eligibility == Eligibility::Identification {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_VALUE",
            "Face authentication is not available for this verification.",
        );
    }
    let token = super::state::random_token();
    let digit_string = state.fresh_digit_string();
    let now = Utc::now();
    let session = Session {
        id: Uuid::new_v4(),
        token: token.clone(),
        scan_ref: scan_ref.to_owned(),
        client_id: entry.client_id,
        kind: kind.to_owned(),
        method: method.to_owned(),
        digit_string: Some(digit_string.clone()),
        max_attempt_count: 3,
        lifetime,
        locale,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(lifetime.into()),
        status: None,
        fail_reason: None,
        finished_at: None,
        face_photo: None,
        ip_address: None,
        risk_tags: None,
        webhook_deliveries: Vec::new(),
    };
    state.sessions.insert(token.clone(), session);
    state.order.push(token.clone());
    let mut reply = json!({ "token": token, "maxAttemptCount": 3 });
    if generate {
        reply["digitString"] = json!(digit_string);
    }
    HttpResponse::Ok().json(reply)
}

/// `FacialAuthenticationSession` (docs/idenfy-api.md §7).
fn session_json(s: &Session) -> Value {
    json!({
        "id": s.id,
        "tokenString": s.token,
        // true for SUCCESS, false for FAILED; null while pending and for sessions that never
        // got a verdict (EXPIRED, CANCELED): the reference leaves those open
        "approved": match s.status {
            Some(super::state::Outcome::Success) => Some(true),
            Some(super::state::Outcome::Failed) => Some(false),
            _ => None,
        },
        "givenScanRef": s.scan_ref,
        "type": s.kind,
        "authenticationMethod": s.method,
        "facePhoto": s.face_photo,
    })
}

async fn list_sessions(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = gate(&sim, &req).await {
        return refused;
    }
    let state = sim.state.lock().unwrap();
    let all: Vec<Value> = state
        .order
        .iter()
        .filter_map(|t| state.sessions.get(t))
        .map(session_json)
        .collect();
    HttpResponse::Ok().json(all)
}

async fn get_session(
    sim: web::Data<Sim>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = gate(&sim, &req).await {
        return refused;
    }
    let state = sim.state.lock().unwrap();
    match state.sessions.get(path.as_str()) {
        Some(s) => HttpResponse::Ok().json(session_json(s)),
        None => HttpResponse::NotFound().json(json!({ "detail": "Not found." })),
    }
}
