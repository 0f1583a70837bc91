//! Ending sessions and delivering their one FACIAL_AUTHENTICATION webhook, signed and retried
//! as iDenfy does (docs/idenfy-api.md §6), with faults on request.

use std::sync::Arc;

use chrono::Utc;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Sim;
use super::state::{DeliveryLog, Outcome};
use crate::idenfy::signature;

/// The webhook body, every documented field present (null where it has no value).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    id: String,
    scan_ref: &'a str,
    client_id: &'a str,
    token: &'a str,
    status: Outcome,
    #[serde(rename = "type")]
    kind: &'a str,
    method: &'a str,
    face_photo: Option<&'a str>,
    ip_address: Option<&'a str>,
    fail_reason: Option<&'a str>,
    risk_tags: Option<&'a [String]>,
}

pub struct Finish {
    pub outcome: Outcome,
    pub fail_reason: Option<String>,
    pub ip_address: Option<String>,
    pub risk_tags: Option<Vec<String>>,
}

/// Ends a pending session and sends its webhook: `Some(true)` if it is on its way now,
/// `Some(false)` if a fault held or dropped it, `None` if there is no such pending session.
pub fn finish(sim: &Arc<Sim>, token: &str, finish: Finish) -> Option<bool> {
    {
        let mut state = sim.state.lock().unwrap();
        let session = state
            .sessions
            .get_mut(token)
            .filter(|s| s.status.is_none())?;
        let with_photo = matches!(finish.outcome, Outcome::Success | Outcome::Failed);
        session.status = Some(finish.outcome);
        session.finished_at = Some(Utc::now());
        session.digit_string = None;
        session.fail_reason = if finish.outcome == Outcome::Failed {
            finish.fail_reason
        } else {
            None
        };
        session.ip_address = if finish.outcome == Outcome::Expired {
            None
        } else {
            finish.ip_address
        };
        session.risk_tags = finish.risk_tags;
        session.face_photo = with_photo.then(|| {
            format!(
                "{}/_sim/photos/{}.png?Signature=simulated",
                sim.base_url, session.id
            )
        });
    }
    Some(dispatch(sim, token))
}

fn body_for(sim: &Sim, token: &str) -> Option<Vec<u8>> {
    let state = sim.state.lock().unwrap();
    let s = state.sessions.get(token)?;
    let payload = Payload {
        id: s.id.to_string(),
        scan_ref: &s.scan_ref,
        client_id: &s.client_id,
        token: &s.token,
        status: s.status?,
        kind: &s.kind,
        method: &s.method,
        face_photo: s.face_photo.as_deref(),
        ip_address: s.ip_address.as_deref(),
        fail_reason: s.fail_reason.as_deref(),
        risk_tags: s.risk_tags.as_deref(),
    };
    // serialised once: these exact bytes are signed and sent
    serde_json::to_vec(&payload).ok()
}

fn log(sim: &Sim, token: &str, entry: DeliveryLog) {
    if let Some(s) = sim.state.lock().unwrap().sessions.get_mut(token) {
        s.webhook_deliveries.push(entry);
    }
    sim.delivered.notify_waiters();
}

/// Applies the delivery faults, then sends (in the background): whether it sends.
fn dispatch(sim: &Arc<Sim>, token: &str) -> bool {
    let (drop, hold, duplicate, wrong_signature) = {
        let mut state = sim.state.lock().unwrap();
        let f = &mut state.faults;
        let take = |n: &mut u32| {
            let fire = *n > 0;
            if fire {
                *n -= 1;
            }
            fire
        };
        let drop = take(&mut f.drop_webhooks);
        let hold = !drop && f.hold_webhooks;
        let duplicate = !drop && take(&mut f.duplicate_webhooks);
        let wrong = !drop && take(&mut f.wrong_signature_webhooks);
        if hold {
            state.held.push(token.to_owned());
        }
        (drop, hold, duplicate, wrong)
    };
    if drop {
        log(
            sim,
            token,
            DeliveryLog {
                attempt: 0,
                at: Utc::now(),
                status: None,
                error: None,
                fault: Some("dropped"),
                verdict: None,
            },
        );
        return false;
    }
    if hold {
        return false;
    }
    let sim = sim.clone();
    let token = token.to_owned();
    tokio::spawn(async move { send(&sim, &token, duplicate, wrong_signature).await });
    true
}

/// Sends the held webhooks one after another, newest first when `reverse`.
pub async fn release(sim: &Arc<Sim>, reverse: bool) -> usize {
    let mut held = std::mem::take(&mut sim.state.lock().unwrap().held);
    if reverse {
        held.reverse();
    }
    for token in &held {
        send(sim, token, false, false).await;
    }
    held.len()
}

/// One webhook: up to 1 + `webhook_retries` tries until a 2xx, `webhook_retry_delay` apart.
async fn send(sim: &Sim, token: &str, duplicate: bool, wrong_signature: bool) {
    let Some(url) = sim.webhook_url.lock().unwrap().clone() else {
        log(
            sim,
            token,
            DeliveryLog {
                attempt: 0,
                at: Utc::now(),
                status: None,
                error: Some("no webhook URL configured".into()),
                fault: None,
                verdict: None,
            },
        );
        return;
    };
    let Some(body) = body_for(sim, token) else {
        return;
    };
    let key = if wrong_signature {
        b"not-the-signing-key".to_vec()
    } else {
        sim.config.signing_key.expose_secret().as_bytes().to_vec()
    };
    let signature = signature::sign(&key, &body);
    let fault = wrong_signature.then_some("wrong_signature");
    let copies = if duplicate { 2 } else { 1 };
    for copy in 0..copies {
        for attempt in 1..=sim.config.webhook_retries + 1 {
            let result = sim
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
                .header("idenfy-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let (status, error, verdict) = match result {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let answer = r.json::<serde_json::Value>().await.ok();
                    let verdict = answer.and_then(|a| a["verdict"].as_str().map(str::to_owned));
                    (Some(status), None, verdict)
                }
                Err(e) => (
                    None,
                    Some(if e.is_timeout() {
                        "timed out".to_owned()
                    } else {
                        e.without_url().to_string()
                    }),
                    None,
                ),
            };
            let delivered = status.is_some_and(|s| (200..300).contains(&s));
            let fault = if copy > 0 { Some("duplicate") } else { fault };
            log(
                sim,
                token,
                DeliveryLog {
                    attempt,
                    at: Utc::now(),
                    status,
                    error,
                    fault,
                    verdict,
                },
            );
            if delivered {
                break;
            }
            if attempt <= sim.config.webhook_retries {
                tokio::time::sleep(sim.config.webhook_retry_delay).await;
            }
        }
    }
}

/// The simulator's clock: a session whose lifetime ends unused is EXPIRED, with a webhook.
pub async fn expiry_clock(sim: Arc<Sim>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(sim.config.expiry_tick);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let due: Vec<String> = {
            let state = sim.state.lock().unwrap();
            state
                .sessions
                .values()
                .filter(|s| s.status.is_none() && s.expires_at <= now)
                .map(|s| s.token.clone())
                .collect()
        };
        for token in due {
            finish(
                &sim,
                &token,
                Finish {
                    outcome: Outcome::Expired,
                    fail_reason: None,
                    ip_address: None,
                    risk_tags: None,
                },
            );
        }
    }
}
