//! The FACIAL_AUTHENTICATION webhook body (idenfy-api.md §6.4). Every field but `status` is
//! optional here: a body that lacks one is still stored and judged, never dropped.

use serde::{Deserialize, Serialize};

use crate::domain::IdenfyOutcome;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub scan_ref: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    pub status: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub face_photo: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub fail_reason: Option<String>,
    #[serde(default)]
    pub risk_tags: Option<Vec<String>>,
}

/// iDenfy's `status`, parsed case-insensitively (examples use `SUCCESS`, its OpenAPI file
/// `Success`); anything else is kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookStatus {
    Outcome(IdenfyOutcome),
    Unknown(String),
}

impl WebhookStatus {
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => Self::Outcome(IdenfyOutcome::Success),
            "FAILED" => Self::Outcome(IdenfyOutcome::Failed),
            "CANCELED" | "CANCELLED" => Self::Outcome(IdenfyOutcome::Canceled),
            "EXPIRED" => Self::Outcome(IdenfyOutcome::Expired),
            _ => Self::Unknown(s.to_owned()),
        }
    }
}

impl WebhookBody {
    pub fn parse(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_success_example_parses() {
        let raw = br#"{
          "id": "8d471b4c-3822-4547-aec5-a9d0cc0aa105",
          "scanRef": "8df398bb-7340-11ee-9aec-0221b1f59063",
          "clientId": "FD155HLZ5Z",
          "token": "UbYZnDdrTElsSDBQFeNkd8MxI9CpSEO0qR5jtRcz",
          "status": "SUCCESS",
          "type": "AUTHENTICATION",
          "method": "FACE_MATCHING",
          "facePhoto": "https://example.invalid/FRONT.png",
          "ipAddress": "203.0.113.7",
          "failReason": null,
          "riskTags": []
        }"#;
        let body = WebhookBody::parse(raw).unwrap();
        assert_eq!(body.client_id.as_deref(), Some("FD155HLZ5Z"));
        assert_eq!(body.kind.as_deref(), Some("AUTHENTICATION"));
        assert_eq!(body.risk_tags, Some(vec![]));
        assert_eq!(
            WebhookStatus::parse(&body.status),
            WebhookStatus::Outcome(IdenfyOutcome::Success)
        );
    }

    #[test]
    fn statuses_are_case_insensitive_and_unknowns_kept() {
        assert_eq!(
            WebhookStatus::parse("Canceled"),
            WebhookStatus::Outcome(IdenfyOutcome::Canceled)
        );
        assert_eq!(
            WebhookStatus::parse("expired"),
            WebhookStatus::Outcome(IdenfyOutcome::Expired)
        );
        assert_eq!(
            WebhookStatus::parse("Pending"),
            WebhookStatus::Unknown("Pending".into())
        );
    }

    #[test]
    fn status_is_required() {
        assert!(WebhookBody::parse(br#"{"token":"x"}"#).is_err());
        assert!(WebhookBody::parse(b"\xff\xfe").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = WebhookBody::parse(&raw);
        }

        #[test]
        fn status_parse_never_panics(s in "\\PC{0,20}") {
            let _ = WebhookStatus::parse(&s);
        }
    }
}
