//! The outbound iDenfy client: check-status, session creation, session lookup.
//! Calls are bounded by a timeout; only calls that are safe to repeat are retried.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::{DigitString, Lifetime, Locale, ScanRef};

#[derive(Debug, thiserror::Error)]
pub enum IdenfyError {
    #[error("iDenfy does not know this scanRef or session")]
    NotFound,
    #[error("iDenfy refused facepair's credentials or account (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("iDenfy reports no funds or an exceeded limit: {message}")]
    PaymentRequired { message: String },
    #[error("iDenfy rate-limited facepair")]
    RateLimited { retry_after: Option<u64> },
    #[error("iDenfy rejected the request (HTTP {status}, {identifier:?}): {message}")]
    Rejected {
        status: u16,
        identifier: Option<String>,
        message: String,
    },
    #[error("iDenfy failed (HTTP {status})")]
    Server { status: u16 },
    #[error("iDenfy did not answer in time")]
    Timeout,
    #[error("iDenfy could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("iDenfy answered something facepair cannot read: {0}")]
    BadResponse(String),
    #[error("iDenfy failed repeatedly; calls are paused for a moment")]
    CircuitOpen,
}

impl IdenfyError {
    /// Whether iDenfy may have created a session (and billed for it) although facepair did not
    /// get one back: it answered 5xx or something unreadable, or stopped answering once the
    /// request was sent. A refusal, or a connection that was never made, created nothing.
    pub fn may_have_created_a_session(&self) -> bool {
        match self {
            Self::Server { .. } | Self::Timeout | Self::BadResponse(_) => true,
            Self::Unreachable(e) => !e.is_connect(),
            Self::NotFound
            | Self::Unauthorized { .. }
            | Self::PaymentRequired { .. }
            | Self::RateLimited { .. }
            | Self::Rejected { .. }
            | Self::CircuitOpen => false,
        }
    }

    /// The `outcome` label of `facepair_idenfy_calls_total` for this error.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::PaymentRequired { .. } => "payment_required",
            Self::RateLimited { .. } => "rate_limited",
            Self::Rejected { .. } => "rejected",
            Self::Server { .. } => "server_error",
            Self::Timeout => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::BadResponse(_) => "bad_response",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// A call's `outcome` label: `ok`, or the error's.
pub fn outcome<T>(result: &Result<T, IdenfyError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    }
}

/// check-status's answer (docs/idenfy-api.md §3). Only `AUTHENTICATION` lets facepair create a
/// session: it asks about FACE_MATCHING, and sessions are created with that type alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    Authentication,
    /// A full identity verification must come first.
    Identification,
    /// Any other type, as iDenfy named it (at most 64 characters): `ENROLLMENT`, documented
    /// only for the ACTIVE_LIVENESS method, or one not documented at all.
    Other(String),
}

/// The session type facepair creates: the one check-status must answer.
const SESSION_TYPE: &str = "AUTHENTICATION";

#[derive(Debug)]
pub struct SessionRequest<'a> {
    pub scan_ref: &'a ScanRef,
    pub lifetime: Lifetime,
    pub locale: Option<&'a Locale>,
}

#[derive(Debug)]
pub struct CreatedSession {
    pub token: String,
    pub max_attempt_count: Option<i32>,
    pub digit_string: DigitString,
}

/// `GET /api/v2/facial-authentication-sessions/{token}/` (docs/idenfy-api.md §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    pub id: Option<String>,
    pub token_string: Option<String>,
    pub approved: Option<bool>,
    pub face_photo: Option<String>,
}

#[derive(Clone)]
pub struct IdenfyClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    api_secret: SecretString,
    circuit: std::sync::Arc<super::circuit::Circuit>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    scan_ref: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    method: &'a str,
    generate_digit_string: bool,
    lifetime: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateReply {
    token: String,
    #[serde(default)]
    max_attempt_count: Option<i32>,
    #[serde(default)]
    digit_string: Option<String>,
}

#[derive(Deserialize)]
struct CheckStatusReply {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct ErrorReply {
    identifier: Option<String>,
    message: Option<String>,
}

const METHOD: &str = "FACE_MATCHING";

impl IdenfyClient {
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        api_secret: SecretString,
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .user_agent(concat!("facepair/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            api_secret,
            // five failures in a row pause calls for five seconds
            circuit: std::sync::Arc::new(super::circuit::Circuit::new(5, Duration::from_secs(5))),
        }
    }

    /// Whether calls are being refused because iDenfy kept failing.
    pub fn circuit_phase(&self) -> super::circuit::Phase {
        self.circuit.phase()
    }

    /// Asks whether the person behind `scan_ref` may authenticate by face. Safe to repeat, so
    /// one retry covers a dropped connection or a passing 5xx.
    #[tracing::instrument(skip_all, name = "idenfy.check_status")]
    pub async fn check_status(&self, scan_ref: &ScanRef) -> Result<Eligibility, IdenfyError> {
        let url = format!(
            "{}/identification/facial-auth/{}/check-status/?method={METHOD}",
            self.base_url,
            scan_ref.as_str()
        );
        let mut result = self.check_status_once(&url).await;
        if matches!(
            result,
            Err(IdenfyError::Unreachable(_) | IdenfyError::Server { .. } | IdenfyError::Timeout)
        ) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            result = self.check_status_once(&url).await;
        }
        result
    }

    async fn check_status_once(&self, url: &str) -> Result<Eligibility, IdenfyError> {
        let response = self.send(self.http.get(url)).await?;
        let reply: CheckStatusReply = read_json(response).await?;
        Ok(match reply.kind.as_str() {
            SESSION_TYPE => Eligibility::Authentication,
            "IDENTIFICATION" => Eligibility::Identification,
            other => Eligibility::Other(other.chars().take(64).collect()),
        })
    }

    /// Creates the face-auth session with a digit code. Not idempotent at iDenfy (each call
    /// may cost a credit), so it is repeated only when the connection failed before the
    /// request could be sent.
    #[tracing::instrument(skip_all, name = "idenfy.create_session")]
    pub async fn create_session(
        &self,
        req: &SessionRequest<'_>,
    ) -> Result<CreatedSession, IdenfyError> {
        let url = format!("{}/partner/authentication-info", self.base_url);
        let body = CreateBody {
            scan_ref: req.scan_ref.as_str(),
            kind: SESSION_TYPE,
            method: METHOD,
            generate_digit_string: true,
            lifetime: req.lifetime.seconds(),
            locale: req.locale.and_then(Locale::idenfy),
        };
        let mut result = self.send(self.http.post(&url).json(&body)).await;
        if let Err(IdenfyError::Unreachable(e)) = &result
            && e.is_connect()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            result = self.send(self.http.post(&url).json(&body)).await;
        }
        let reply: CreateReply = read_json(result?).await?;
        if reply.token.is_empty() || reply.token.len() > 40 {
            return Err(IdenfyError::BadResponse(
                "session token missing or longer than 40 characters".into(),
            ));
        }
        let digit_string = reply
            .digit_string
            .as_deref()
            .and_then(DigitString::parse)
            .ok_or_else(|| IdenfyError::BadResponse("digitString missing or not digits".into()))?;
        Ok(CreatedSession {
            token: reply.token,
            max_attempt_count: reply.max_attempt_count,
            digit_string,
        })
    }

    /// Reads one session's state; used to settle attempts whose webhook never came.
    #[tracing::instrument(skip_all, name = "idenfy.get_session")]
    pub async fn get_session(&self, token: &str) -> Result<SessionState, IdenfyError> {
        let url = format!(
            "{}/api/v2/facial-authentication-sessions/{token}/",
            self.base_url
        );
        let response = self.send(self.http.get(url)).await?;
        read_json(response).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, IdenfyError> {
        let permit = self.circuit.allow().ok_or(IdenfyError::CircuitOpen)?;
        let result = self.send_once(request).await;
        match &result {
            Err(
                IdenfyError::Unreachable(_) | IdenfyError::Timeout | IdenfyError::Server { .. },
            ) => permit.failed(),
            _ => permit.succeeded(),
        }
        result
    }

    async fn send_once(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, IdenfyError> {
        let response = request
            .basic_auth(
                self.api_key.expose_secret(),
                Some(self.api_secret.expose_secret()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response.text().await.unwrap_or_default();
        let reply: ErrorReply = serde_json::from_str(&text).unwrap_or_default();
        let message = reply
            .message
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(match status {
            StatusCode::NOT_FOUND => IdenfyError::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => IdenfyError::Unauthorized {
                status: status.as_u16(),
                message,
            },
            StatusCode::PAYMENT_REQUIRED => IdenfyError::PaymentRequired { message },
            StatusCode::TOO_MANY_REQUESTS => IdenfyError::RateLimited { retry_after },
            s if s.is_server_error() => IdenfyError::Server { status: s.as_u16() },
            s if reply.identifier.as_deref() == Some("TOO_MANY_REQUESTS") => {
                let _ = s;
                IdenfyError::RateLimited { retry_after }
            }
            s => IdenfyError::Rejected {
                status: s.as_u16(),
                identifier: reply.identifier,
                message,
            },
        })
    }
}

fn transport_error(e: reqwest::Error) -> IdenfyError {
    if e.is_timeout() {
        IdenfyError::Timeout
    } else {
        IdenfyError::Unreachable(e.without_url())
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, IdenfyError> {
    let bytes = response.bytes().await.map_err(transport_error)?;
    serde_json::from_slice(&bytes).map_err(|e| IdenfyError::BadResponse(e.to_string()))
}
