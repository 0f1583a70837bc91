//! What the simulated iDenfy knows: seeded scanRefs, sessions, faults, webhook logs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// check-status's answer for a seeded scanRef.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Eligibility {
    Authentication,
    Identification,
    Enrollment,
}

impl Eligibility {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "AUTHENTICATION" => Some(Self::Authentication),
            "IDENTIFICATION" => Some(Self::Identification),
            "ENROLLMENT" => Some(Self::Enrollment),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanRefEntry {
    pub eligibility: Eligibility,
    /// The original verification's clientId, echoed in webhooks.
    pub client_id: String,
}

/// The terminal statuses a session can end with (webhook `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Success,
    Failed,
    Canceled,
    Expired,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => Some(Self::Success),
            "FAILED" => Some(Self::Failed),
            "CANCELED" => Some(Self::Canceled),
            "EXPIRED" => Some(Self::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryLog {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// What fault, if any, shaped this delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'static str>,
    /// The receiver's `verdict` (facepair answers one), if its answer had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: Uuid,
    pub token: String,
    pub scan_ref: String,
    pub client_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub method: String,
    /// Present only while the session is pending.
    pub digit_string: Option<String>,
    pub max_attempt_count: u32,
    pub lifetime: u32,
    pub locale: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: Option<Outcome>,
    pub fail_reason: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub face_photo: Option<String>,
    pub ip_address: Option<String>,
    pub risk_tags: Option<Vec<String>>,
    pub webhook_deliveries: Vec<DeliveryLog>,
}

/// Faults switched on through `POST /_sim/faults`. Counters count down as they fire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every iDenfy API answer.
    pub api_latency_ms: u64,
    /// Answer the next `api_error_count` API calls with this status (500, 503, 429, ...).
    pub api_error_status: Option<u16>,
    pub api_error_count: u32,
    /// Send each of the next N webhooks twice.
    pub duplicate_webhooks: u32,
    /// Never send the next N webhooks.
    pub drop_webhooks: u32,
    /// Sign the next N webhooks with a wrong key.
    pub wrong_signature_webhooks: u32,
    /// Queue webhooks instead of sending them, until `POST /_sim/webhooks/release`.
    pub hold_webhooks: bool,
}

#[derive(Default)]
pub struct SimState {
    pub scan_refs: HashMap<String, ScanRefEntry>,
    pub sessions: HashMap<String, Session>,
    /// Tokens in creation order, for listings.
    pub order: Vec<String>,
    pub faults: Faults,
    /// Webhooks waiting for release while `hold_webhooks` is on: (token, body).
    pub held: Vec<String>,
    /// API calls in the current rate-limit window.
    pub window_start: Option<DateTime<Utc>>,
    pub window_calls: u64,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn random_token() -> String {
    let mut rng = rand::rng();
    (0..40)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

pub fn random_client_id() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| ALNUM[rng.random_range(0..26)] as char)
        .collect()
}

impl SimState {
    pub fn seed(&mut self, scan_ref: &str, eligibility: Eligibility) {
        let client_id = self
            .scan_refs
            .get(scan_ref)
            .map(|e| e.client_id.clone())
            .unwrap_or_else(random_client_id);
        self.scan_refs.insert(
            scan_ref.to_owned(),
            ScanRefEntry {
                eligibility,
                client_id,
            },
        );
    }

    /// 8 random digits, unique among pending sessions.
    pub fn fresh_digit_string(&self) -> String {
        let mut rng = rand::rng();
        loop {
            let candidate = format!("{:08}", rng.random_range(0..100_000_000u32));
            let taken = self
                .sessions
                .values()
                .any(|s| s.digit_string.as_deref() == Some(candidate.as_str()));
            if !taken {
                return candidate;
            }
        }
    }

    pub fn pending_by_code(&mut self, code: &str) -> Option<&mut Session> {
        let now = Utc::now();
        self.sessions.values_mut().find(|s| {
            s.status.is_none() && s.expires_at > now && s.digit_string.as_deref() == Some(code)
        })
    }
}
