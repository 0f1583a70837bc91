//! The simulator's control API under `/_sim/` and the "phone" page that plays iDenfy's app.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::Sim;
use super::state::{Eligibility, Faults, Outcome};
use super::webhooks::{self, Finish};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/scan-refs", web::post().to(seed))
        .route("/_sim/scan-refs", web::get().to(list_scan_refs))
        .route("/_sim/app", web::get().to(phone_page))
        .route("/_sim/app/enter", web::post().to(enter))
        .route("/_sim/sessions", web::get().to(sessions))
        .route("/_sim/sessions/{token}/expire", web::post().to(expire_now))
        .route("/_sim/faults", web::get().to(get_faults))
        .route("/_sim/faults", web::post().to(set_faults))
        .route("/_sim/faults", web::delete().to(clear_faults))
        .route("/_sim/webhooks/release", web::post().to(release))
        .route("/_sim/photos/{name}", web::get().to(photo));
}

pub fn bad_request(message: String) -> actix_web::Error {
    actix_web::error::InternalError::from_response(
        message.clone(),
        HttpResponse::BadRequest().json(json!({ "error": message })),
    )
    .into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seed {
    scan_ref: String,
    #[serde(rename = "type", default = "authentication")]
    kind: String,
}

fn authentication() -> String {
    "AUTHENTICATION".into()
}

async fn seed(sim: web::Data<Sim>, body: web::Json<Seed>) -> HttpResponse {
    let Some(eligibility) = Eligibility::parse(&body.kind) else {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "type must be AUTHENTICATION, IDENTIFICATION or ENROLLMENT" }));
    };
    if body.scan_ref.is_empty() || body.scan_ref.len() > 40 {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "scanRef must be 1 to 40 characters" }));
    }
    let mut state = sim.state.lock().unwrap();
    state.seed(&body.scan_ref, eligibility);
    let entry = &state.scan_refs[&body.scan_ref];
    HttpResponse::Created().json(
        json!({ "scanRef": body.scan_ref, "type": entry.eligibility, "clientId": entry.client_id }),
    )
}

async fn list_scan_refs(sim: web::Data<Sim>) -> HttpResponse {
    let state = sim.state.lock().unwrap();
    let all: Vec<_> = state
        .scan_refs
        .iter()
        .map(|(scan_ref, e)| json!({ "scanRef": scan_ref, "type": e.eligibility, "clientId": e.client_id }))
        .collect();
    HttpResponse::Ok().json(all)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Enter {
    digit_string: String,
    status: String,
    fail_reason: Option<String>,
    ip_address: Option<String>,
    risk_tags: Option<Vec<String>>,
}

/// The person finishes the session in the app: SUCCESS, FAILED (with a failReason) or CANCELED.
async fn enter(sim: web::Data<Sim>, req: HttpRequest, body: web::Json<Enter>) -> HttpResponse {
    let outcome = match Outcome::parse(&body.status) {
        Some(o @ (Outcome::Success | Outcome::Failed | Outcome::Canceled)) => o,
        _ => {
            return HttpResponse::BadRequest().json(json!({
                "error": "status must be SUCCESS, FAILED or CANCELED (EXPIRED comes from the simulator's clock)"
            }));
        }
    };
    let fail_reason = match (outcome, body.fail_reason.as_deref()) {
        (Outcome::Failed, None | Some("")) => Some("FACE_MISMATCH".to_owned()),
        (_, reason) => reason.map(str::to_owned),
    };
    let token = {
        let mut state = sim.state.lock().unwrap();
        match state.pending_by_code(body.digit_string.trim()) {
            Some(session) => session.token.clone(),
            None => {
                return HttpResponse::NotFound()
                    .json(json!({ "error": "no pending session has this code" }));
            }
        }
    };
    let ip_address = body
        .ip_address
        .clone()
        .or_else(|| req.peer_addr().map(|a| a.ip().to_string()));
    let sim: Arc<Sim> = sim.into_inner();
    match webhooks::finish(
        &sim,
        &token,
        Finish {
            outcome,
            fail_reason,
            ip_address,
            risk_tags: body.risk_tags.clone(),
        },
    ) {
        Some(sent) => {
            // what facepair made of it, so the phone does not call a selfie for a sign-in that
            // had already ended a success (iDenfy's own app cannot know)
            let verdict = if sent {
                receiver_verdict(&sim, &token).await
            } else {
                None
            };
            let state = sim.state.lock().unwrap();
            let s = &state.sessions[&token];
            HttpResponse::Ok().json(json!({ "token": s.token, "scanRef": s.scan_ref, "status": s.status, "failReason": s.fail_reason, "receiverVerdict": verdict }))
        }
        None => {
            HttpResponse::NotFound().json(json!({ "error": "no pending session has this code" }))
        }
    }
}

/// The receiver's verdict on the session's first webhook delivery, waiting up to 5 s for it.
async fn receiver_verdict(sim: &Sim, token: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let notified = sim.delivered.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(first) = sim.state.lock().unwrap().sessions[token]
            .webhook_deliveries
            .first()
        {
            return first.verdict.clone();
        }
        tokio::time::timeout_at(deadline, notified).await.ok()?;
    }
}

async fn expire_now(sim: web::Data<Sim>, path: web::Path<String>) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let finished = webhooks::finish(
        &sim,
        &path,
        Finish {
            outcome: Outcome::Expired,
            fail_reason: None,
            ip_address: None,
            risk_tags: None,
        },
    );
    match finished {
        Some(_) => HttpResponse::Ok().json(json!({ "token": path.as_str(), "status": "EXPIRED" })),
        None => {
            HttpResponse::NotFound().json(json!({ "error": "no pending session has this token" }))
        }
    }
}

async fn sessions(sim: web::Data<Sim>) -> HttpResponse {
    let state = sim.state.lock().unwrap();
    let all: Vec<_> = state
        .order
        .iter()
        .filter_map(|t| state.sessions.get(t))
        .collect();
    HttpResponse::Ok().json(all)
}

async fn get_faults(sim: web::Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(&sim.state.lock().unwrap().faults)
}

async fn set_faults(sim: web::Data<Sim>, body: web::Json<Faults>) -> HttpResponse {
    let mut state = sim.state.lock().unwrap();
    state.faults = body.into_inner();
    HttpResponse::Ok().json(&state.faults)
}

async fn clear_faults(sim: web::Data<Sim>) -> HttpResponse {
    let mut state = sim.state.lock().unwrap();
    state.faults = Faults::default();
    HttpResponse::Ok().json(&state.faults)
}

#[derive(Deserialize, Default)]
struct Release {
    #[serde(default)]
    order: Option<String>,
}

async fn release(sim: web::Data<Sim>, body: Option<web::Json<Release>>) -> HttpResponse {
    let reverse = body.and_then(|b| b.into_inner().order).as_deref() == Some("reverse");
    let sim: Arc<Sim> = sim.into_inner();
    let sent = webhooks::release(&sim, reverse).await;
    HttpResponse::Ok().json(json!({ "released": sent }))
}

async fn phone_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("phone.html"))
}

/// A stand-in selfie for `facePhoto` URLs: a 1x1 grey PNG.
async fn photo() -> HttpResponse {
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3A,
        0x7E, 0x9B, 0x55, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x68,
        0x00, 0x00, 0x00, 0x82, 0x00, 0x81, 0x77, 0xCD, 0x72, 0xB6, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
    HttpResponse::Ok().content_type("image/png").body(PNG)
}
