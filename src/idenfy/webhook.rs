//! The FACIAL_AUTHENTICATION webhook body (docs/idenfy-api.md §6.4). Every field but `status` is
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

    /// Whether the body reports the kind of session facepair creates. `type` and `method`
    /// are optional in iDenfy's schema (a body without them is judged as it always was);
    /// given, they must say so, in any casing as `status` may come in.
    pub fn is_face_matching_authentication(&self) -> bool {
        let is = |field: &Option<String>, want: &str| {
            field
                .as_deref()
                .is_none_or(|v| v.trim().eq_ignore_ascii_case(want))
        };
        is(&self.kind, "AUTHENTICATION") && is(&self.method, "FACE_MATCHING")
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
    fn only_face_matching_authentication_is_expected() {
        let body = |extra: &str| {
            WebhookBody::parse(format!(r#"{{"status":"SUCCESS"{extra}}}"#).as_bytes()).unwrap()
        };
        for ok in [
            "",
            r#","type":"AUTHENTICATION","method":"FACE_MATCHING""#,
            r#","type":"Authentication""#,
            r#","method":"face_matching","type":null"#,
        ] {
            assert!(body(ok).is_face_matching_authentication(), "{ok}");
        }
        for unexpected in [
            r#","type":"ENROLLMENT","method":"FACE_MATCHING""#,
            r#","type":"AUTHENTICATION","method":"ACTIVE_LIVENESS""#,
            r#","type":"""#,
            r#","method":"FACE_MATCHING_V2""#,
        ] {
            assert!(
                !body(unexpected).is_face_matching_authentication(),
                "{unexpected}"
            );
        }
    }

    #[test]
    fn status_is_required() {
        assert!(WebhookBody::parse(br#"{"token":"x"}"#).is_err());
        assert!(WebhookBody::parse(b"\xff\xfe").is_err());
    }

    /// The stored corpus (tests/corpus/webhooks), with placeholders filled in.
    fn corpus() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/webhooks");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let raw = std::fs::read(f).unwrap();
                String::from_utf8(raw)
                    .unwrap()
                    .replace("{{TOKEN}}", "UbYZnDdrTElsSDBQFeNkd8MxI9CpSEO0qR5jtRcz")
                    .replace("{{SCAN_REF}}", "8df398bb-7340-11ee-9aec-0221b1f59063")
                    .into_bytes()
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip { at: usize, bit: u8 },
        Truncate { at: usize },
        Insert { at: usize, byte: u8 },
        Splice { at: usize, from: usize, len: usize },
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
            any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
            (any::<usize>(), any::<usize>(), 1usize..40)
                .prop_map(|(at, from, len)| Mutation::Splice { at, from, len }),
        ]
    }

    fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for m in mutations {
            let n = body.len().max(1);
            match *m {
                Mutation::Flip { at, bit } if !body.is_empty() => body[at % n] ^= 1 << bit,
                Mutation::Truncate { at } => body.truncate(at % n),
                Mutation::Insert { at, byte } => body.insert(at % (body.len() + 1), byte),
                Mutation::Splice { at, from, len } if !body.is_empty() => {
                    let from = from % n;
                    let piece: Vec<u8> = body[from..(from + len).min(body.len())].to_vec();
                    let at = at % (body.len() + 1);
                    body.splice(at..at, piece);
                }
                _ => {}
            }
        }
        body
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Corpus bodies, mutated: the parser never panics, whatever it makes of them, and a
        /// mutated body never verifies under the original's signature.
        #[test]
        fn mutated_corpus(pick in any::<usize>(), mutations in proptest::collection::vec(mutation(), 1..6)) {
            let corpus = corpus();
            let original = corpus[pick % corpus.len()].clone();
            let body = mutate(original.clone(), &mutations);
            if let Ok(parsed) = WebhookBody::parse(&body) {
                let _ = WebhookStatus::parse(&parsed.status);
            }
            let keys = [secrecy::SecretString::from("k")];
            let signature = crate::idenfy::signature::sign(b"k", &original);
            let verified = crate::idenfy::signature::verify(&keys, Some(signature.as_bytes()), &body).is_ok();
            prop_assert_eq!(verified, body == original);
        }
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
