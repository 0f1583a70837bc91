//! The platform's API keys: `Authorization: Bearer <key>`, any configured key accepted so keys
//! can be rotated without downtime.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// The configured keys, kept only as SHA-256 digests so every comparison has equal length.
pub struct ApiKeys(Vec<[u8; 32]>);

impl ApiKeys {
    pub fn new(keys: &[SecretString]) -> Self {
        Self(
            keys.iter()
                .map(|k| Sha256::digest(k.expose_secret().as_bytes()).into())
                .collect(),
        )
    }

    /// The matching key's public id (a prefix of its digest), or `None`.
    fn check(&self, presented: &str) -> Option<String> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.0 {
            if bool::from(key.ct_eq(&digest)) && found.is_none() {
                found = Some(hex::encode(&key[..6]));
            }
        }
        found
    }
}

/// A request authorised by a platform API key; holds the key's id for the audit trail.
pub struct ApiKey(pub String);

impl FromRequest for ApiKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered");
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        ready(
            presented
                .and_then(|k| state.api_keys.check(k))
                .map(ApiKey)
                .ok_or(ApiError::Unauthorized),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_key_works_alone() {
        let keys = ApiKeys::new(&[
            SecretString::from("first-key-0123456789"),
            SecretString::from("second-key-0123456789"),
        ]);
        let a = keys.check("first-key-0123456789").unwrap();
        let b = keys.check("second-key-0123456789").unwrap();
        assert_ne!(a, b);
        assert_eq!(keys.check("first-key-012345678"), None);
        assert_eq!(keys.check(""), None);
    }
}
