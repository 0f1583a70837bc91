//! Values parsed once at the edge; inner code only ever sees these.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// A field that failed validation, with the reason in words a platform engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The scanRef of an earlier, approved iDenfy verification. It travels in a URL path to
/// iDenfy, so only the characters iDenfy uses are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRef(String);

impl ScanRef {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if s.is_empty() || s.len() > 40 {
            return Err(Invalid::new("scan_ref", "must be 1 to 40 characters"));
        }
        if !s.chars().all(ok_char) {
            return Err(Invalid::new(
                "scan_ref",
                "may contain only letters, digits, '-' and '_'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScanRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The platform's own reference for the person, echoed back on redeem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef(String);

impl UserRef {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() || s.chars().count() > 200 {
            return Err(Invalid::new("user_ref", "must be 1 to 200 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(Invalid::new(
                "user_ref",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long a code lives, in seconds; iDenfy accepts 1 to 2,592,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(u32);

impl Lifetime {
    pub const MAX_SECONDS: i64 = 2_592_000;

    pub fn from_seconds(s: i64) -> Result<Self, Invalid> {
        if (1..=Self::MAX_SECONDS).contains(&s) {
            Ok(Self(s as u32))
        } else {
            Err(Invalid::new(
                "lifetime_seconds",
                format!("must be between 1 and {}", Self::MAX_SECONDS),
            ))
        }
    }

    pub fn seconds(self) -> u32 {
        self.0
    }
}

/// The desktop's address, as the platform saw it.
pub fn parse_client_ip(s: &str) -> Result<IpAddr, Invalid> {
    s.parse()
        .map_err(|_| Invalid::new("client_ip", "must be an IPv4 or IPv6 address"))
}

/// The desktop's user agent, kept for the audit trail.
pub fn parse_user_agent(s: &str) -> Result<String, Invalid> {
    if s.chars().count() > 1024 {
        return Err(Invalid::new(
            "user_agent",
            "must be at most 1024 characters",
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new(
            "user_agent",
            "must not contain control characters",
        ));
    }
    Ok(s.to_owned())
}

/// The platform's opaque `state`: at most 256 characters, none of them control characters
/// (it travels in a URL's query and a `postMessage`).
pub fn parse_state(s: String) -> Result<String, Invalid> {
    if s.chars().count() > 256 {
        return Err(Invalid::new("state", "must be at most 256 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("state", "must not contain control characters"));
    }
    Ok(s)
}

/// Words the pairing page shows a person (`platform_name`, `desktop_place`): trimmed, 1 to
/// `max` characters, none of them control characters.
pub fn parse_display_text(field: &'static str, s: &str, max: usize) -> Result<String, Invalid> {
    let s = s.trim();
    if !(1..=max).contains(&s.chars().count()) {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(s.to_owned())
}

/// The code iDenfy generated for the person to type into its app. Its format is not
/// documented for face authentication (8 digits for KYC), so any short run of digits is taken.
#[derive(Clone, PartialEq, Eq)]
pub struct DigitString(String);

impl DigitString {
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DigitString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigitString(<redacted>)")
    }
}

const WATCH_TOKEN_PREFIX: &str = "fpw_";
const WATCH_TOKEN_BYTES: usize = 32;

/// The secret that lets a browser read one login and follow it live. 256 random bits,
/// URL-safe; only its SHA-256 is stored.
#[derive(Clone)]
pub struct WatchToken(String);

impl WatchToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; WATCH_TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!(
            "{WATCH_TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Accepts only the shape facepair issues, so garbage never reaches the database.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_prefix(WATCH_TOKEN_PREFIX)?;
        let decoded = URL_SAFE_NO_PAD.decode(body).ok()?;
        (decoded.len() == WATCH_TOKEN_BYTES).then(|| Self(s.to_owned()))
    }

    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WatchToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scan_ref_rules() {
        assert!(ScanRef::parse("8df398bb-7340-11ee-9aec-0221b1f59063").is_ok());
        assert!(ScanRef::parse("").is_err());
        assert!(ScanRef::parse(&"a".repeat(41)).is_err());
        assert!(ScanRef::parse("../admin").is_err());
        assert!(ScanRef::parse("a b").is_err());
        assert!(ScanRef::parse("a?method=X").is_err());
    }

    #[test]
    fn lifetime_bounds() {
        assert!(Lifetime::from_seconds(0).is_err());
        assert!(Lifetime::from_seconds(1).is_ok());
        assert!(Lifetime::from_seconds(2_592_000).is_ok());
        assert!(Lifetime::from_seconds(2_592_001).is_err());
    }

    #[test]
    fn watch_tokens_are_unique_and_parse_back() {
        let a = WatchToken::generate();
        let b = WatchToken::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(WatchToken::parse(a.expose()).unwrap().hash(), a.hash());
        assert!(WatchToken::parse("fpw_short").is_none());
        assert!(WatchToken::parse(&a.expose()[4..]).is_none());
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }

    #[test]
    fn digit_string_keeps_leading_zeros_and_hides_in_debug() {
        let d = DigitString::parse("00012345").unwrap();
        assert_eq!(d.as_str(), "00012345");
        assert!(!format!("{d:?}").contains("12345"));
        assert!(DigitString::parse("1234a678").is_none());
        assert!(DigitString::parse("").is_none());
    }

    proptest! {
        #[test]
        fn scan_ref_never_accepts_url_syntax(s in "\\PC{0,50}") {
            if let Ok(r) = ScanRef::parse(&s) {
                prop_assert!(!r.as_str().contains(['/', '?', '#', '%', '.', ' ']));
                prop_assert!(r.as_str().len() <= 40);
            }
        }

        #[test]
        fn watch_token_parse_never_panics(s in "\\PC{0,80}") {
            let _ = WatchToken::parse(&s);
        }
    }
}
