//! `Idenfy-Signature`: hex HMAC-SHA256 of the raw body, keyed with the notification's
//! signing key (docs/idenfy-api.md §6.3). Several keys may be configured at once so a key
//! can be rotated without dropping a webhook.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lower-case hex HMAC-SHA256 of `body`, exactly as iDenfy sends it.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Idenfy-Signature header is missing")]
    Missing,
    #[error("the Idenfy-Signature header is not 64 hex characters")]
    Malformed,
    #[error("the signature matches no configured signing key")]
    Mismatch,
}

/// Checks `header` against every key, in constant time per key, and returns the index of the
/// key that matched. Hex letter case does not matter.
pub fn verify(
    keys: &[SecretString],
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<usize, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = header.trim_ascii();
    if header.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(header).map_err(|_| SignatureError::Malformed)?;
    // every key is tried even after a match, so timing says nothing about which key matched
    let mut matched = None;
    for (index, key) in keys.iter().enumerate() {
        let mut mac = HmacSha256::new_from_slice(key.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() && matched.is_none() {
            matched = Some(index);
        }
    }
    matched.ok_or(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(k: &[&str]) -> Vec<SecretString> {
        k.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rotation_reports_the_matching_key() {
        let body = br#"{"status":"SUCCESS"}"#;
        let ks = keys(&["old", "new"]);
        let sig = sign(b"new", body);
        assert_eq!(verify(&ks, Some(sig.as_bytes()), body), Ok(1));
        assert_eq!(
            verify(&ks, Some(sig.to_uppercase().as_bytes()), body),
            Ok(1)
        );
        assert_eq!(
            verify(&keys(&["other"]), Some(sig.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(&ks, None, body), Err(SignatureError::Missing));
        assert_eq!(
            verify(&ks, Some(&sig.as_bytes()[..63]), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&ks, Some(b"zz".repeat(32).as_slice()), body),
            Err(SignatureError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn any_change_to_the_body_breaks_the_signature(body in proptest::collection::vec(any::<u8>(), 1..512), flip in any::<usize>(), bit in 0u8..8) {
            let ks = keys(&["k"]);
            let sig = sign(b"k", &body);
            prop_assert_eq!(verify(&ks, Some(sig.as_bytes()), &body), Ok(0));
            let mut tampered = body.clone();
            let i = flip % tampered.len();
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(verify(&ks, Some(sig.as_bytes()), &tampered), Err(SignatureError::Mismatch));
        }

        #[test]
        fn arbitrary_headers_never_verify(header in proptest::collection::vec(any::<u8>(), 0..100), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ks = keys(&["k"]);
            prop_assume!(header != sign(b"k", &body).as_bytes());
            prop_assume!(!header.eq_ignore_ascii_case(sign(b"k", &body).as_bytes()));
            prop_assert!(verify(&ks, Some(&header), &body).is_err());
        }
    }
}
