//! `POST /v1/webhooks/idenfy`: verify, then store and apply (one read, one write), then 2xx.
//! A verified webhook is either committed or answered non-2xx so iDenfy retries.

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::idenfy::signature::{self, SignatureError};
use crate::service::webhook::{self, Received, Verdict};
use crate::service::{self, Context};

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryReceipt {
    pub delivery_id: Uuid,
    pub verdict: Verdict,
}

/// Receive iDenfy's FACIAL_AUTHENTICATION webhook.
#[utoipa::path(
    post, path = "/v1/webhooks/idenfy", operation_id = "receiveIdenfyWebhook", tag = "idenfy",
    request_body(content = serde_json::Value, content_type = "application/json", description = "iDenfy's webhook body, signed with `Idenfy-Signature`: any body whose signature holds is stored, and what it changes is in `verdict`"),
    params(("Idenfy-Signature" = String, Header, description = "hex HMAC-SHA256 of the raw body")),
    responses(
        (status = 200, body = DeliveryReceipt, description = "stored; `verdict` says what it changed"),
        (status = 401, body = ErrorBody, description = "invalid_signature: nothing stored"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 503, body = ErrorBody, description = "database_unavailable: not stored, iDenfy retries"),
    )
)]
pub async fn receive(
    state: web::Data<Context>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let limit = state.settings.webhook_max_bytes;
    let body = read_limited(&req, payload, limit).await?;
    let header = req.headers().get("idenfy-signature").map(|v| v.as_bytes());
    let key_index = match signature::verify(&state.settings.idenfy_signing_keys, header, &body) {
        Ok(index) => index,
        Err(e) => {
            state.metrics.webhook_rejected_signature.inc();
            tracing::warn!(reason = %e, body_bytes = body.len(), "webhook refused");
            return Err(ApiError::InvalidSignature(match e {
                SignatureError::Missing => "the Idenfy-Signature header is missing",
                SignatureError::Malformed => "the Idenfy-Signature header is not 64 hex characters",
                SignatureError::Mismatch => "the signature matches no configured signing key",
            }));
        }
    };
    let text = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, event_type) = (text(CONTENT_TYPE.as_str()), text("idenfy-event-type"));
    // to its end even if iDenfy hangs up: a write that commits after the sender left is
    // still announced, counted and logged
    let recorded = service::detached(async move {
        let received = Received {
            body: &body,
            signing_key_index: key_index,
            content_type: content_type.as_deref(),
            event_type: event_type.as_deref(),
        };
        webhook::record(&state, received).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(DeliveryReceipt {
        delivery_id: recorded.delivery_id,
        verdict: recorded.verdict,
    }))
}

async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::MalformedJson(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
