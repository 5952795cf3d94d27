//! Types shared by the reliw XDP program (`reliw-ebpf`) and user space (`reliw`).
//!
//! Everything a map holds is defined here once, as `#[repr(C)]` plain data with
//! explicit padding and a compile-time size check, so the kernel side and user
//! space cannot disagree about a layout. Changing any of these types (or a map
//! capacity) is a layout change: bump [`LAYOUT_VERSION`], which moves the pins
//! to a new directory instead of reusing incompatible ones.
//!
//! - [`Addr`]: every source address as 16 bytes; IPv4 is IPv4-mapped IPv6.
//!   The exact-ban maps are split by family ([`maps::BANS4`] keyed by the 4
//!   IPv4 bytes, [`maps::BANS`] by 16 IPv6 bytes): a flood takes the ban
//!   path on every packet, and hashing 4 bytes is a quarter of the work.
//! - [`BanEntry`]: value of the exact-ban maps.
//! - [`RateState`], [`RateLimits`], [`Escalation`]: the per-source packet
//!   budgets (GCRA, one theoretical arrival time per budget).
//! - [`CidrEntry`]: value of the allow and deny LPM tries.
//! - [`ShieldConfig`]: the single entry of the config map.
//! - [`maps`]: map names and capacities; [`stat`]: counter indices;
//!   [`reason`]: ban reason codes.
#![no_std]

use core::mem::size_of;

/// Version of the map layout below; part of the pin directory name.
pub const LAYOUT_VERSION: u32 = 3;

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

/// One exact ban. Times are `CLOCK_MONOTONIC` nanoseconds, for people and
/// the sweeper; the program compares `expires_jiffies` with the kernel's
/// tick counter (`bpf_jiffies64`, which the verifier inlines as one load),
/// because reading a clock costs more than the rest of the drop path. User
/// space converts the expiry to jiffies, rounding up, so a ban can outlast
/// `expires_ns` by about one tick (1-10 ms) and never ends early.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanEntry {
    /// When the ban stops applying, or [`NEVER_EXPIRES`].
    pub expires_ns: u64,
    /// When the ban was (last) set.
    pub banned_ns: u64,
    /// `expires_ns` on the jiffies clock, or [`NEVER_EXPIRES`].
    pub expires_jiffies: u64,
    /// One of the [`reason`] codes.
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BanEntry>() == 32);

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
    /// Length of one jiffy in nanoseconds (the kernel's tick, 1e9 / HZ):
    /// budgets run on `bpf_jiffies64() * jiffy_ns`. Set by every loader;
    /// 0 (never set) is read as [`DEFAULT_JIFFY_NS`].
    pub jiffy_ns: u64,
    /// Per-source budgets; all zero: no rate limiting.
    pub rate: RateLimits,
    /// SYN cookies answered in XDP.
    pub syn_cookies: SynCookies,
}
const _: () = assert!(size_of::<ShieldConfig>() == 88);

/// SYN cookies answered by the program (`XDP_TX`) for the listening ports,
/// so a SYN flood never reaches the kernel's SYN queue. The cookie is the
/// kernel's own (`bpf_tcp_raw_gen_syncookie_*`, same secret), so the
/// client's ACK is validated by the kernel's listener as for a cookie it
/// sent itself; that needs `net.ipv4.tcp_syncookies = 2`, and one SYN a
/// second per CPU and listening socket (port and family) is left to the
/// kernel so its cookie window stays open.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynCookies {
    /// One of [`cookie_mode`].
    pub mode: u32,
    /// `AUTO`: answer with cookies while a CPU sees more SYNs than this
    /// in a second (and for a second after).
    pub above_per_cpu: u32,
    /// Destination ports to answer for (network order is not used: host
    /// order); 0 ends the list.
    pub ports: [u16; 8],
}
const _: () = assert!(size_of::<SynCookies>() == 24);

/// Values of [`SynCookies::mode`].
pub mod cookie_mode {
    pub const OFF: u32 = 0;
    pub const ON: u32 = 1;
    pub const AUTO: u32 = 2;
}

/// Per-CPU state of the SYN cookie path ([`maps::COOKIES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieState {
    /// Start of the current one-second window (jiffies).
    pub window_start: u64,
    /// SYNs for the listening ports seen in that window.
    pub syns: u64,
    /// `AUTO`: cookies are on until this jiffy.
    pub hot_until: u64,
    /// Last SYN left to the kernel (jiffies), per listening socket: port
    /// index times 2, plus 1 for IPv6. Each listener keeps its own cookie
    /// window, so each needs its own SYN now and then.
    pub last_passed: [u64; 16],
}
const _: () = assert!(size_of::<CookieState>() == 152);

/// The tick assumed while no loader has told the program the real one
/// (HZ 250, the common distribution setting).
pub const DEFAULT_JIFFY_NS: u64 = 4_000_000;

/// The per-source packet budgets, as GCRA parameters: a packet conforms
/// when the source's theoretical arrival time (TAT) is at most
/// `tolerance_ns` ahead of now, and then moves the TAT on by
/// `interval_ns` (one over the rate). A burst of `tolerance / interval + 1`
/// packets passes at once; after that, one per interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Every packet from a source; 0: no packet budget.
    pub packet: Budget,
    /// TCP SYNs (SYN without ACK) from a source; 0: no SYN budget.
    pub syn: Budget,
    /// A source that stays over a budget this long is reported for a ban
    /// on [`maps::EVENTS`]; 0: never.
    pub escalate_after_ns: u64,
    /// IPv6 sources share one budget per prefix of this many bits (IPv4
    /// sources are limited per address).
    pub v6_prefix_len: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<RateLimits>() == 48);

/// One GCRA budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Nanoseconds per packet (1e9 / rate); 0: this budget is off.
    pub interval_ns: u64,
    /// How far the TAT may run ahead of now: `(burst - 1) * interval`.
    pub tolerance_ns: u64,
}

impl RateLimits {
    /// Whether any budget is on.
    #[inline(always)]
    pub const fn enabled(&self) -> bool {
        self.packet.interval_ns != 0 || self.syn.interval_ns != 0
    }
}

/// Gap after which a source is no longer "staying" over budget: a source
/// dropped again after this much quiet starts a new over-budget stretch.
pub const OVER_BUDGET_GAP_NS: u64 = 1_000_000_000;

/// Value of the rate map ([`maps::RATE`]), keyed by the source address
/// (IPv6 masked to [`RateLimits::v6_prefix_len`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Theoretical arrival time of the next packet, packet budget.
    pub packet_tat_ns: u64,
    /// Theoretical arrival time of the next SYN, SYN budget.
    pub syn_tat_ns: u64,
    /// Start of the current over-budget stretch (0: none).
    pub over_since_ns: u64,
    /// Last packet dropped for being over budget.
    pub last_over_ns: u64,
    /// Non-zero once this stretch was reported on [`maps::EVENTS`].
    pub escalated: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<RateState>() == 40);

/// A source that stayed over a budget for `escalate_after_ns`, as the
/// program reports it on [`maps::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Escalation {
    /// The address of the packet that crossed the line (not the prefix).
    pub addr: Addr,
    /// [`budget::PACKET`] or [`budget::SYN`].
    pub budget: u32,
    /// Non-zero: the program was in dry-run (nothing was dropped).
    pub dry_run: u32,
}
const _: () = assert!(size_of::<Escalation>() == 24);

/// Which budget an [`Escalation`] is about.
pub mod budget {
    pub const PACKET: u32 = 1;
    pub const SYN: u32 = 2;

    /// Its name in logs, the ban book and metrics.
    pub fn name(code: u32) -> &'static str {
        match code {
            PACKET => "packet",
            SYN => "syn",
            _ => "unknown",
        }
    }
}

/// Bits of [`ShieldConfig::rules`].
pub mod rules {
    /// The allow trie holds at least one rule.
    pub const ALLOW: u32 = 1;
    /// The deny trie holds at least one rule.
    pub const DENY: u32 = 2;
}

/// Map names (the identifiers of the statics in `reliw-ebpf`) and capacities.
pub mod maps {
    /// Exact IPv6 bans: LRU hash `Addr -> BanEntry`. LRU so a flood of
    /// bans can never fail an insert; the oldest entries go first.
    pub const BANS: &str = "RELIW_BANS";
    pub const BANS_CAPACITY: u32 = 262_144;
    /// Exact IPv4 bans: LRU hash `[u8; 4] -> BanEntry` (network order).
    pub const BANS4: &str = "RELIW_BANS4";
    pub const BANS4_CAPACITY: u32 = 262_144;
    /// Per-source budgets: LRU hash `Addr -> RateState`. A source forgotten
    /// by the LRU starts again with a full budget.
    pub const RATE: &str = "RELIW_RATE";
    pub const RATE_CAPACITY: u32 = 131_072;
    /// Ring buffer of [`crate::Escalation`]s, read by the loading process
    /// (not pinned: only the process that loaded the program reads it).
    pub const EVENTS: &str = "RELIW_EVENTS";
    pub const EVENTS_BYTES: u32 = 64 * 4096;
    /// Per-CPU [`crate::CookieState`] (not pinned: counting restarts with
    /// the program).
    pub const COOKIES: &str = "RELIW_COOKIES";
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
    /// Every map user space pins and finds, in pin order.
    pub const ALL: [&str; 7] = [BANS, BANS4, ALLOW, DENY, STATS, CONFIG, RATE];
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
    /// Dropped: a TCP SYN over its source's SYN budget.
    pub const DROPPED_RATE_SYN: u32 = 8;
    /// Dropped: a packet over its source's packet budget.
    pub const DROPPED_RATE_PACKET: u32 = 9;
    /// Passed in dry-run mode, would have been `DROPPED_RATE_SYN`.
    pub const DRY_RUN_RATE_SYN: u32 = 10;
    /// Passed in dry-run mode, would have been `DROPPED_RATE_PACKET`.
    pub const DRY_RUN_RATE_PACKET: u32 = 11;
    /// Answered in XDP: a SYN-ACK carrying a SYN cookie went back (`XDP_TX`).
    pub const SYN_COOKIE: u32 = 12;
    /// Passed in dry-run mode, would have been `SYN_COOKIE`.
    pub const DRY_RUN_SYN_COOKIE: u32 = 13;
    /// Number of counters (the capacity of the stats map).
    pub const COUNT: u32 = 14;
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
        "dropped_rate_syn",
        "dropped_rate_packet",
        "dry_run_rate_syn",
        "dry_run_rate_packet",
        "syn_cookie",
        "dry_run_syn_cookie",
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
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::Escalation {}
    unsafe impl aya::Pod for super::CookieState {}
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
