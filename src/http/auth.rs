//! The platform's API keys: `Authorization: Bearer <key>`, any configured key accepted so keys
//! can be rotated without downtime.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::http::Web;

/// The configured keys, each with its public id: a prefix of its SHA-256 digest, computed once.
pub struct ApiKeys(Vec<(SecretString, Arc<str>)>);

impl ApiKeys {
    pub fn new(keys: &[SecretString]) -> Self {
        Self(
            keys.iter()
                .map(|k| {
                    let digest = Sha256::digest(k.expose_secret().as_bytes());
                    (k.clone(), Arc::from(hex::encode(&digest[..6])))
                })
                .collect(),
        )
    }

    /// The matching key's id, or `None`. Every configured key is compared, each in time that
    /// depends only on the lengths: a key's length is no secret, its bytes are.
    fn check(&self, presented: &str) -> Option<Arc<str>> {
        let mut found = None;
        for (key, id) in &self.0 {
            let equal = presented.as_bytes().ct_eq(key.expose_secret().as_bytes());
            if bool::from(equal) && found.is_none() {
                found = Some(Arc::clone(id));
            }
        }
        found
    }
}

/// A request authorised by a platform API key; holds the key's id for the audit trail.
pub struct ApiKey(pub Arc<str>);

impl FromRequest for ApiKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let shared = req
            .app_data::<web::Data<Web>>()
            .expect("http::Web is registered");
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
                .and_then(|k| shared.api_keys.check(k))
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
        assert_eq!(keys.check("first-key-01234567890"), None);
        assert_eq!(keys.check("first-key-0123456788"), None);
        assert_eq!(keys.check(""), None);
    }

    /// Key ids are stored with what each key did, so they must not change between releases:
    /// the first 6 bytes of the key's SHA-256, in hex.
    #[test]
    fn a_key_id_is_its_digest_prefix() {
        let keys = ApiKeys::new(&[SecretString::from("first-key-0123456789")]);
        let id = keys.check("first-key-0123456789").unwrap();
        assert_eq!(&*id, "ed60d7524db2");
    }
}
