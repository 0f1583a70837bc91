//! How the phone that took the selfie relates to the desktop that asked: a phishing signal.
//! A person logging in normally is often on the same network as their desktop; a victim
//! tricked into approving an attacker's code usually is not.

use std::net::IpAddr;

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMatch {
    /// The same address.
    SameAddress,
    /// The same /24 (IPv4) or /48 (IPv6).
    SameNetwork,
    /// Neither: ask for more before letting the person in if the login matters.
    Different,
    /// One of the two addresses is not known.
    Unknown,
}

impl NetworkMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SameAddress => "same_address",
            Self::SameNetwork => "same_network",
            Self::Different => "different",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::SameAddress,
            Self::SameNetwork,
            Self::Different,
            Self::Unknown,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key abuse limits count an address under: the address for IPv4, its /64 for IPv6 (one
/// subscriber usually holds a whole /64).
pub fn bucket(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

pub fn compare(desktop: Option<&str>, phone: Option<&str>) -> NetworkMatch {
    let parse = |s: Option<&str>| {
        s.and_then(|s| s.trim().parse::<IpAddr>().ok())
            .map(canonical)
    };
    let (Some(desktop), Some(phone)) = (parse(desktop), parse(phone)) else {
        return NetworkMatch::Unknown;
    };
    if desktop == phone {
        return NetworkMatch::SameAddress;
    }
    let same_network = match (desktop, phone) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..3] == b.segments()[..3],
        _ => false,
    };
    if same_network {
        NetworkMatch::SameNetwork
    } else {
        NetworkMatch::Different
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cases() {
        use NetworkMatch::*;
        assert_eq!(
            compare(Some("203.0.113.7"), Some("203.0.113.7")),
            SameAddress
        );
        assert_eq!(
            compare(Some("203.0.113.7"), Some("203.0.113.200")),
            SameNetwork
        );
        assert_eq!(compare(Some("203.0.113.7"), Some("203.0.114.7")), Different);
        assert_eq!(
            compare(Some("2001:db8:1:2::1"), Some("2001:db8:1:ffff::9")),
            SameNetwork
        );
        assert_eq!(
            compare(Some("2001:db8:1:2::1"), Some("2001:db8:2:2::1")),
            Different
        );
        assert_eq!(
            compare(Some("::ffff:203.0.113.7"), Some("203.0.113.9")),
            SameNetwork
        );
        assert_eq!(compare(Some("203.0.113.7"), Some("2001:db8::1")), Different);
        assert_eq!(compare(None, Some("203.0.113.7")), Unknown);
        assert_eq!(compare(Some("203.0.113.7"), Some("not an ip")), Unknown);
    }

    proptest! {
        #[test]
        fn symmetric(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (std::net::Ipv4Addr::from(a).to_string(), std::net::Ipv4Addr::from(b).to_string());
            prop_assert_eq!(compare(Some(&a), Some(&b)), compare(Some(&b), Some(&a)));
        }
    }
}
