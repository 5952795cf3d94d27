//! Types shared by the reliw XDP program (`reliw-ebpf`) and user space (`reliw`).
//!
//! Everything a map holds is defined here once, as `#[repr(C)]` plain data with
//! explicit padding and a compile-time size check, so the kernel side and user
//! space cannot disagree about a layout. Changing any of these types (or a map
//! capacity) is a layout change: bump [`LAYOUT_VERSION`], which moves the pins
//! to a new directory instead of reusing incompatible ones.
//!
//! - [`Addr`]: every source address as 16 bytes; IPv4 is IPv4-mapped IPv6.
//! - [`BanEntry`]: value of the exact-ban map.
//! - [`CidrEntry`]: value of the allow and deny LPM tries.
//! - [`ShieldConfig`]: the single entry of the config map.
//! - [`maps`]: map names and capacities; [`stat`]: counter indices;
//!   [`reason`]: ban reason codes.
#![no_std]

use core::mem::size_of;

/// Version of the map layout below; part of the pin directory name.
pub const LAYOUT_VERSION: u32 = 2;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "reliw_shield";

/// A source address in network byte order. IPv4 `a.b.c.d` is stored as
/// `::ffff:a.b.c.d`, so one map and one trie serve both families.
pub type Addr = [u8; 16];

/// Bit length of the IPv4-mapped prefix `::ffff:0:0/96`: an IPv4 CIDR `/n`
/// becomes an LPM key of `96 + n` bits.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// Builds the IPv4-mapped form of an IPv4 address given as 4 network-order bytes.
#[inline(always)]
pub const fn v4_mapped(octets: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// Expiry value of a ban that never expires.
pub const NEVER_EXPIRES: u64 = u64::MAX;

/// One exact ban. Times are `CLOCK_MONOTONIC` nanoseconds; the ban drops
/// traffic while `now < expires_ns`. The program reads the coarse clock
/// (`bpf_ktime_get_coarse_ns`, the same clock one tick behind), so a ban
/// can outlast its expiry by one tick (1-4 ms) and costs no clock read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanEntry {
    /// When the ban stops applying, or [`NEVER_EXPIRES`].
    pub expires_ns: u64,
    /// When the ban was (last) set.
    pub banned_ns: u64,
    /// One of the [`reason`] codes.
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BanEntry>() == 24);

/// Value of an allow or deny CIDR; the key carries the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidrEntry {
    /// Wall-clock seconds since the Unix epoch when the rule was added.
    pub added_unix_s: u64,
}
const _: () = assert!(size_of::<CidrEntry>() == 8);

/// Runtime switches of the XDP program (index 0 of [`maps::CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShieldConfig {
    /// Non-zero: count what would be dropped, but pass everything.
    pub dry_run: u32,
    /// [`rules`] bits: which LPM tries hold rules, so packets skip the
    /// lookups of empty ones. User space sets them after every change to a
    /// trie and re-checks them on every sweep.
    pub rules: u32,
}

/// Bits of [`ShieldConfig::rules`].
pub mod rules {
    /// The allow trie holds at least one rule.
    pub const ALLOW: u32 = 1;
    /// The deny trie holds at least one rule.
    pub const DENY: u32 = 2;
}
const _: () = assert!(size_of::<ShieldConfig>() == 8);

/// Map names (the identifiers of the statics in `reliw-ebpf`) and capacities.
pub mod maps {
    /// Exact bans: LRU hash `Addr -> BanEntry`. LRU so a flood of bans can
    /// never fail an insert; the oldest entries go first.
    pub const BANS: &str = "RELIW_BANS";
    pub const BANS_CAPACITY: u32 = 262_144;
    /// Allow CIDRs: LPM trie `CidrKey -> CidrEntry`, checked first.
    pub const ALLOW: &str = "RELIW_ALLOW";
    pub const ALLOW_CAPACITY: u32 = 4_096;
    /// Deny CIDRs: LPM trie `CidrKey -> CidrEntry`.
    pub const DENY: &str = "RELIW_DENY";
    pub const DENY_CAPACITY: u32 = 65_536;
    /// Per-CPU `u64` packet counters indexed by [`crate::stat`].
    pub const STATS: &str = "RELIW_STATS";
    /// One [`crate::ShieldConfig`].
    pub const CONFIG: &str = "RELIW_CONFIG";
    pub const CONFIG_CAPACITY: u32 = 1;
    /// Every map user space must find, in pin order.
    pub const ALL: [&str; 5] = [BANS, ALLOW, DENY, STATS, CONFIG];
}

/// Indices of the per-CPU counters. Every packet is counted exactly once.
pub mod stat {
    /// IP packets that matched nothing (or an expired ban).
    pub const PASSED: u32 = 0;
    /// IP packets whose source is in an allow CIDR.
    pub const ALLOWLISTED: u32 = 1;
    /// Dropped: the source has an unexpired exact ban.
    pub const DROPPED_BAN: u32 = 2;
    /// Dropped: the source is in a deny CIDR.
    pub const DROPPED_CIDR: u32 = 3;
    /// Passed: not IPv4 or IPv6 (ARP, LLDP, three or more VLAN tags...).
    pub const NON_IP: u32 = 4;
    /// Passed: the frame ends inside a header we needed, or the IP header is bad.
    pub const MALFORMED: u32 = 5;
    /// Passed in dry-run mode, would have been `DROPPED_BAN`.
    pub const DRY_RUN_BAN: u32 = 6;
    /// Passed in dry-run mode, would have been `DROPPED_CIDR`.
    pub const DRY_RUN_CIDR: u32 = 7;
    /// Number of counters (the capacity of the stats map).
    pub const COUNT: u32 = 8;
    /// Stable names, indexed like the counters; used in CLI output and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "passed",
        "allowlisted",
        "dropped_ban",
        "dropped_cidr",
        "non_ip",
        "malformed",
        "dry_run_ban",
        "dry_run_cidr",
    ];
}

/// Why an address is banned.
pub mod reason {
    pub const MANUAL: u32 = 1;
    pub const WAF: u32 = 2;
    pub const RATE_LIMIT: u32 = 3;
    /// Heard from another edge node.
    pub const PEER: u32 = 4;
    /// Stable names, indexed by code; code 0 and unknown codes are "unknown".
    pub const NAMES: [&str; 5] = ["unknown", "manual", "waf", "rate_limit", "peer"];

    /// The name of a reason code.
    pub fn name(code: u32) -> &'static str {
        match NAMES.get(code as usize) {
            Some(name) => name,
            None => NAMES[0],
        }
    }

    /// The code of a reason name, if it is one of [`NAMES`] (not "unknown").
    pub fn from_name(name: &str) -> Option<u32> {
        NAMES
            .iter()
            .position(|n| *n == name)
            .filter(|&i| i > 0)
            .map(|i| i as u32)
    }
}

#[cfg(feature = "user")]
mod pod {
    #![allow(unsafe_code)]
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and
    // byte arrays, with explicit padding fields, so every bit pattern is valid
    // and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::BanEntry {}
    unsafe impl aya::Pod for super::CidrEntry {}
    unsafe impl aya::Pod for super::ShieldConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapping_matches_the_ipv6_standard_form() {
        let mapped = v4_mapped([198, 18, 0, 1]);
        assert_eq!(&mapped[..10], &[0u8; 10]);
        assert_eq!(&mapped[10..12], &[0xff, 0xff]);
        assert_eq!(&mapped[12..], &[198, 18, 0, 1]);
    }

    #[test]
    fn reason_names_round_trip() {
        for code in [
            reason::MANUAL,
            reason::WAF,
            reason::RATE_LIMIT,
            reason::PEER,
        ] {
            assert_eq!(reason::from_name(reason::name(code)), Some(code));
        }
        assert_eq!(reason::name(99), "unknown");
        assert_eq!(reason::from_name("unknown"), None);
    }

    #[test]
    fn every_counter_has_a_name() {
        assert_eq!(stat::NAMES.len(), stat::COUNT as usize);
    }
}
