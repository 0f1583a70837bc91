//! What a platform is told: the public event types, which internal event each comes from,
//! Standard Webhooks signatures and the retry schedule. No I/O.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{EventKind, LoginStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text")]
pub enum EventType {
    #[serde(rename = "login.created")]
    #[sqlx(rename = "login.created")]
    Created,
    #[serde(rename = "login.code_issued")]
    #[sqlx(rename = "login.code_issued")]
    CodeIssued,
    #[serde(rename = "login.approved")]
    #[sqlx(rename = "login.approved")]
    Approved,
    #[serde(rename = "login.failed")]
    #[sqlx(rename = "login.failed")]
    Failed,
    #[serde(rename = "login.expired")]
    #[sqlx(rename = "login.expired")]
    Expired,
    #[serde(rename = "login.canceled")]
    #[sqlx(rename = "login.canceled")]
    Canceled,
    #[serde(rename = "login.exhausted")]
    #[sqlx(rename = "login.exhausted")]
    Exhausted,
    #[serde(rename = "login.redeemed")]
    #[sqlx(rename = "login.redeemed")]
    Redeemed,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::Created,
        Self::CodeIssued,
        Self::Approved,
        Self::Failed,
        Self::Expired,
        Self::Canceled,
        Self::Exhausted,
        Self::Redeemed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "login.created",
            Self::CodeIssued => "login.code_issued",
            Self::Approved => "login.approved",
            Self::Failed => "login.failed",
            Self::Expired => "login.expired",
            Self::Canceled => "login.canceled",
            Self::Exhausted => "login.exhausted",
            Self::Redeemed => "login.redeemed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Every type a list names, or the first name that is not one (its first 64 characters).
    pub fn parse_all<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, String> {
        names
            .into_iter()
            .map(|t| Self::parse(t).ok_or_else(|| t.chars().take(64).collect()))
            .collect()
    }

    /// The public event an internal one is told as, by the login's status after it; `None`
    /// for steps a platform does not see on their own (a superseded code is followed by
    /// `login.code_issued`, a code canceled with its login by `login.canceled`).
    pub fn of(kind: EventKind, login: LoginStatus) -> Option<Self> {
        match kind {
            EventKind::LoginCreated => Some(Self::Created),
            EventKind::AttemptIssued => Some(Self::CodeIssued),
            EventKind::LoginCanceled => Some(Self::Canceled),
            EventKind::LoginRedeemed => Some(Self::Redeemed),
            EventKind::ApprovalExpired => Some(Self::Expired),
            EventKind::AttemptSuperseded => None,
            EventKind::AttemptSucceeded
            | EventKind::AttemptFailed
            | EventKind::AttemptCanceled
            | EventKind::AttemptExpired => match login {
                LoginStatus::Approved => Some(Self::Approved),
                LoginStatus::Failed => Some(Self::Failed),
                LoginStatus::Expired => Some(Self::Expired),
                LoginStatus::Exhausted => Some(Self::Exhausted),
                LoginStatus::Pending | LoginStatus::Canceled | LoginStatus::Redeemed => None,
            },
        }
    }
}

/// A Standard Webhooks secret: `whsec_` and the base64 of the key bytes.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl WebhookSecret {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let encoded = s.strip_prefix("whsec_").ok_or("must start with whsec_")?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "must be whsec_ followed by base64")?;
        if !(24..=64).contains(&key.len()) {
            return Err("must hold 24 to 64 bytes of key");
        }
        Ok(Self(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one entry per secret, space-separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// When a failed delivery is tried again: after the schedule's entry for this attempt, spread
/// by `jitter` (0.0-1.0, a random draw) over ±20 %, and never before `Retry-After`. `None`
/// once the schedule is spent.
pub fn retry_delay(
    schedule: &[Duration],
    attempts: usize,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let base = schedule.get(attempts.checked_sub(1)?)?;
    let spread = base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    Some(retry_after.map_or(spread, |r| spread.max(r.min(MAX_RETRY_AFTER))))
}

/// Enabled endpoints, at most, for the platform API to add to: each takes a delivery of every
/// event of its types, and a share of every claim of the push worker.
pub const MAX_ENABLED_ENDPOINTS: i64 = 16;

/// A `Retry-After` longer than this is read as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// An address an endpoint may resolve to: not loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast or documentation space, nor such an address mapped into IPv6.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// An endpoint URL facepair may push to: https with a host, and an address literal only if
/// public; `allow_private` (sandbox, tests) admits http and private addresses too.
pub fn check_endpoint_url(url: &url::Url, allow_private: bool) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("must be an https URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password");
    }
    let public = match url.host() {
        None => return Err("must have a host"),
        Some(url::Host::Ipv4(ip)) => is_public(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_public(ip.into()),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            !(d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost"))
        }
    };
    if !public && !allow_private {
        return Err("must not name a loopback, private or link-local address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_each() {
        for t in EventType::ALL {
            super::super::assert_named(t, t.as_str());
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("login.unknown"), None);
    }

    #[test]
    fn attempt_endings_are_told_by_the_login_status_after_them() {
        use EventKind as K;
        use LoginStatus as L;
        assert_eq!(
            EventType::of(K::AttemptSucceeded, L::Approved),
            Some(EventType::Approved)
        );
        assert_eq!(
            EventType::of(K::AttemptFailed, L::Failed),
            Some(EventType::Failed)
        );
        assert_eq!(
            EventType::of(K::AttemptFailed, L::Exhausted),
            Some(EventType::Exhausted)
        );
        assert_eq!(
            EventType::of(K::AttemptExpired, L::Expired),
            Some(EventType::Expired)
        );
        assert_eq!(EventType::of(K::AttemptCanceled, L::Canceled), None);
        assert_eq!(EventType::of(K::AttemptSuperseded, L::Pending), None);
        assert_eq!(
            EventType::of(K::ApprovalExpired, L::Expired),
            Some(EventType::Expired)
        );
        assert_eq!(
            EventType::of(K::LoginRedeemed, L::Redeemed),
            Some(EventType::Redeemed)
        );
    }

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_as_the_specification_does() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = [secret.clone(), secret];
        let header = signature_header(&two, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(header.split(' ').count(), 2);
    }

    #[test]
    fn secrets_are_whsec_and_base64() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        assert!(
            !format!(
                "{:?}",
                WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
            )
            .contains("MfKQ")
        );
    }

    #[test]
    fn endpoints_are_https_and_public_unless_allowed() {
        let check = |u: &str, allow| check_endpoint_url(&u.parse().unwrap(), allow);
        assert!(check("https://platform.example/hooks", false).is_ok());
        for refused in [
            "http://platform.example/hooks",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:192.168.0.1]/",
            "https://localhost:8443/",
            "https://user:pw@platform.example/",
            "ftp://platform.example/",
        ] {
            assert!(check(refused, false).is_err(), "{refused}");
        }
        assert!(check("http://127.0.0.1:9000/", true).is_ok());
        assert!(is_public("8.8.8.8".parse().unwrap()));
        assert!(!is_public("100.64.0.1".parse().unwrap()));
        assert!(!is_public("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn retries_follow_the_schedule_spread_and_retry_after() {
        let s = [Duration::from_secs(10), Duration::from_secs(100)];
        assert_eq!(retry_delay(&s, 1, None, 0.5), Some(Duration::from_secs(10)));
        assert_eq!(retry_delay(&s, 2, None, 0.0), Some(Duration::from_secs(80)));
        assert_eq!(
            retry_delay(&s, 2, None, 1.0),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_delay(&s, 3, None, 0.5), None);
        assert_eq!(
            retry_delay(&s, 1, Some(Duration::from_secs(60)), 0.5),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_delay(&s, 1, Some(Duration::from_secs(86_400)), 0.5),
            Some(MAX_RETRY_AFTER)
        );
    }
}
