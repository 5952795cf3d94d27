//! Addresses, CIDRs and durations as the shield's maps and CLI see them.
//!
//! The maps key every source as 16 bytes, IPv4 as IPv4-mapped IPv6
//! (`reliw_common::Addr`); this module is the only place that converts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use reliw_common::{Addr, V4_MAPPED_PREFIX_BITS, v4_mapped};

/// The map form of an address.
pub fn to_addr(ip: IpAddr) -> Addr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a map key stands for (IPv4-mapped keys become IPv4).
pub fn from_addr(addr: &Addr) -> IpAddr {
    Ipv6Addr::from(*addr).to_canonical()
}

/// Why a CIDR, address or duration was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not an IPv4 or IPv6 address.
    #[error("'{0}' is not an IP address")]
    Address(String),
    /// The prefix length is not a number or exceeds the family's width.
    #[error("'{0}' has an invalid prefix length (IPv4 allows 0-32, IPv6 0-128)")]
    Prefix(String),
    /// Not a duration such as `90`, `90s`, `10m`, `2h`, `1d` or `forever`.
    #[error("'{0}' is not a duration (examples: 90s, 10m, 2h, 1d, forever)")]
    Duration(String),
}

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `ip/prefix`; host bits are cleared. `None` when the
    /// prefix exceeds the family's width.
    pub fn new(ip: IpAddr, prefix: u8) -> Option<Self> {
        match ip.to_canonical() {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Some(Self {
                    network: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    prefix,
                })
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Some(Self {
                    network: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix,
                })
            }
            _ => None,
        }
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in the family's own terms (0-32 or 0-128).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::new(ip, self.prefix).is_some_and(|c| c.network == self.network)
    }

    /// The LPM trie key: prefix bits over the 16-byte map form.
    pub fn lpm_key(&self) -> aya::maps::lpm_trie::Key<Addr> {
        let bits = match self.network {
            IpAddr::V4(_) => V4_MAPPED_PREFIX_BITS + u32::from(self.prefix),
            IpAddr::V6(_) => u32::from(self.prefix),
        };
        aya::maps::lpm_trie::Key::new(bits, to_addr(self.network))
    }

    /// The CIDR an LPM trie key stands for.
    pub fn from_lpm_key(key: &aya::maps::lpm_trie::Key<Addr>) -> Option<Self> {
        let ip = from_addr(&key.data());
        let bits = key.prefix_len();
        let prefix = match ip {
            IpAddr::V4(_) => bits.checked_sub(V4_MAPPED_PREFIX_BITS)?,
            IpAddr::V6(_) => bits,
        };
        Self::new(ip, u8::try_from(prefix).ok()?)
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    /// `a.b.c.d/n`, `x:y::/n`, or a bare address (a single-host network).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip_text, prefix_text) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let ip = IpAddr::from_str(ip_text)
            .map_err(|_| ParseError::Address(s.to_owned()))?
            .to_canonical();
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => width,
            Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse::<u8>()
                .map_err(|_| ParseError::Prefix(s.to_owned()))?,
            Some(_) => return Err(ParseError::Prefix(s.to_owned())),
        };
        Self::new(ip, prefix).ok_or_else(|| ParseError::Prefix(s.to_owned()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses a ban duration: plain seconds, or a number with `s`, `m`, `h` or
/// `d`; `forever` (or `permanent`) is `None`.
pub fn parse_duration(text: &str) -> Result<Option<Duration>, ParseError> {
    let bad = || ParseError::Duration(text.to_owned());
    if text == "forever" || text == "permanent" {
        return Ok(None);
    }
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = value.checked_mul(scale).ok_or_else(bad)?;
    if seconds == 0 {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_the_map_form() {
        for text in [
            "198.18.0.1",
            "0.0.0.0",
            "fd00:198:18::1",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = text.parse().expect("test address");
            assert_eq!(from_addr(&to_addr(ip)), ip.to_canonical(), "{text}");
        }
    }

    #[test]
    fn cidrs_parse_normalise_and_print() {
        let c: Cidr = "198.18.1.77/24".parse().expect("valid");
        assert_eq!(c.to_string(), "198.18.1.0/24");
        assert!(c.contains("198.18.1.200".parse().expect("ip")));
        assert!(!c.contains("198.18.2.1".parse().expect("ip")));
        assert_eq!(
            "198.18.0.9".parse::<Cidr>().expect("bare").to_string(),
            "198.18.0.9/32"
        );
        assert_eq!(
            "fd00:198:18::5/48".parse::<Cidr>().expect("v6").to_string(),
            "fd00:198:18::/48"
        );
        assert_eq!("0.0.0.0/0".parse::<Cidr>().expect("all").prefix(), 0);
    }

    #[test]
    fn bad_cidrs_are_rejected_with_the_input_named() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "fd00::/129",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/ 8",
            "x/8",
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn lpm_keys_round_trip_for_both_families() {
        for text in [
            "198.18.0.0/15",
            "10.0.0.1/32",
            "0.0.0.0/0",
            "fd00:198:18::/48",
            "::/0",
        ] {
            let c: Cidr = text.parse().expect("valid");
            assert_eq!(Cidr::from_lpm_key(&c.lpm_key()), Some(c), "{text}");
        }
        let v4: Cidr = "198.18.0.0/15".parse().expect("valid");
        assert_eq!(v4.lpm_key().prefix_len(), 96 + 15);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_duration("10m"), Ok(Some(Duration::from_secs(600))));
        assert_eq!(parse_duration("2h"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(parse_duration("1d"), Ok(Some(Duration::from_secs(86400))));
        assert_eq!(parse_duration("forever"), Ok(None));
        for bad in ["", "0", "10x", "m", "-5", "99999999999999999999d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
