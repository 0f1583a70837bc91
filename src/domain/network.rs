//! How the phone that took the selfie relates to the desktop that asked: a phishing signal.
//! A person logging in normally is often on the same network as their desktop; a victim
//! tricked into approving an attacker's code usually is not.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
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
    pub const ALL: [NetworkMatch; 4] = [
        Self::SameAddress,
        Self::SameNetwork,
        Self::Different,
        Self::Unknown,
    ];
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

/// The proxies whose `X-Forwarded-For` entries are believed (`FACEPAIR_TRUSTED_PROXIES`).
/// Empty: every request's address is its peer's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Ranges as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a range of one.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        entries
            .into_iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{e:?} is not an address range like 10.0.0.0/8"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        // a v4-mapped peer (`::ffff:10.0.0.1`) is matched by the IPv4 range
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. From a trusted peer, `X-Forwarded-For` (its lines in order) is
    /// walked from the right, past trusted proxies, to the first entry that is not one: only
    /// entries appended by trusted proxies are read, so nothing a client writes is believed.
    /// An untrusted peer, a missing header, or an unreadable entry within the walk: the peer.
    pub fn client_address<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = Option<&'a str>>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut entries = Vec::new();
        for line in forwarded_for {
            let Some(line) = line else { return peer };
            entries.extend(line.split(','));
        }
        let mut nearest_trusted = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = forwarded_entry(entry) else {
                return peer;
            };
            if !self.trusts(ip) {
                return ip;
            }
            nearest_trusted = ip;
        }
        // proxies all the way: the farthest one heard from is the client
        nearest_trusted
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`[2001:db8::1]:443`).
fn forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
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
    fn one_name_each() {
        use NetworkMatch::*;
        for (m, name) in [
            (SameAddress, "same_address"),
            (SameNetwork, "same_network"),
            (Different, "different"),
            (Unknown, "unknown"),
        ] {
            super::super::assert_named(m, name);
        }
    }

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

    fn proxies(ranges: &str) -> TrustedProxies {
        TrustedProxies::parse(ranges.split(',').filter(|r| !r.is_empty())).unwrap()
    }

    fn address(trusted: &str, peer: &str, lines: &[&str]) -> String {
        proxies(trusted)
            .client_address(peer.parse().unwrap(), lines.iter().map(|l| Some(*l)))
            .to_string()
    }

    #[test]
    fn forwarded_for_is_read_only_through_trusted_proxies() {
        let lb = "10.0.0.0/8";
        // no trusted proxies, or an untrusted peer: the header is not read at all
        assert_eq!(address("", "203.0.113.7", &["198.51.100.1"]), "203.0.113.7");
        assert_eq!(address(lb, "203.0.113.7", &["198.51.100.1"]), "203.0.113.7");
        // the entry the trusted proxy appended, whatever the client wrote before it
        assert_eq!(
            address(lb, "10.0.0.2", &["1.2.3.4, evil, 198.51.100.1"]),
            "198.51.100.1"
        );
        // through several proxies, on several header lines
        assert_eq!(
            address(
                lb,
                "10.0.0.2",
                &["1.2.3.4, 198.51.100.1", "10.9.9.9 , 10.0.0.5"]
            ),
            "198.51.100.1"
        );
        // missing, empty or unreadable where it is read: the peer
        assert_eq!(address(lb, "10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(address(lb, "10.0.0.2", &[""]), "10.0.0.2");
        assert_eq!(address(lb, "10.0.0.2", &["198.51.100.1, junk"]), "10.0.0.2");
        assert_eq!(
            proxies(lb).client_address("10.0.0.2".parse().unwrap(), [None]),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        // every hop a trusted proxy: the farthest
        assert_eq!(address(lb, "10.0.0.2", &["10.1.1.1, 10.0.0.3"]), "10.1.1.1");
        // ports, IPv6 and v4-mapped forms
        assert_eq!(
            address(
                "10.0.0.0/8,fd00::/8",
                "::ffff:10.0.0.2",
                &["[2001:db8::7]:443, fd00::1"]
            ),
            "2001:db8::7"
        );
        assert_eq!(
            address(lb, "10.0.0.2", &["198.51.100.1:5000"]),
            "198.51.100.1"
        );
    }

    #[test]
    fn trusted_proxy_ranges_parse() {
        assert_eq!(
            proxies("10.0.0.0/8,192.0.2.1"),
            proxies("10.1.2.3/8,192.0.2.1/32")
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8/8", ""] {
            assert!(TrustedProxies::parse([bad]).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever a client writes in the header, behind one trusted proxy that appends the
        /// address it saw, the address is the one the proxy saw.
        #[test]
        fn a_client_cannot_choose_its_address(written in "\\PC{0,40}", real in any::<u32>()) {
            let real = std::net::Ipv4Addr::from(real);
            prop_assume!(!proxies("10.0.0.0/8").trusts(real.into()));
            let line = format!("{written}, {real}");
            prop_assert_eq!(address("10.0.0.0/8", "10.0.0.2", &[&line]), real.to_string());
        }

        #[test]
        fn symmetric(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (std::net::Ipv4Addr::from(a).to_string(), std::net::Ipv4Addr::from(b).to_string());
            prop_assert_eq!(compare(Some(&a), Some(&b)), compare(Some(&b), Some(&a)));
        }
    }
}
