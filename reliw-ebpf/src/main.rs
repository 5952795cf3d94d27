//! The reliw XDP shield: drops packets from banned sources before the kernel
//! builds an skb for them.
//!
//! Verdict order (first match wins):
//! 1. source in an allow CIDR                -> pass   (`allowlisted`)
//! 2. source has an unexpired exact ban      -> drop   (`dropped_ban`)
//! 3. source in a deny CIDR                  -> drop   (`dropped_cidr`)
//! 4. otherwise                              -> pass   (`passed`)
//!
//! In dry-run mode (config map) steps 2 and 3 count `dry_run_*` and pass.
//! Steps 1 and 3 are skipped while their trie is empty (config `rules`):
//! an LPM lookup is a helper call even on an empty trie, and most nodes run
//! with bans only, so the drop path under a flood is one hash lookup.
//!
//! Error paths: every parse failure returns `XDP_PASS`, never `XDP_ABORTED`
//! or `XDP_DROP`. The shield only ever drops what a rule names; a frame we
//! cannot parse (truncated, bad IP header, unknown ethertype) goes on to the
//! kernel stack, which has its own checks, and is counted as `malformed` or
//! `non_ip` so an operator can see it.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use reliw_common::{
    Addr, BanEntry, CidrEntry, ShieldConfig,
    maps::{ALLOW_CAPACITY, BANS_CAPACITY, CONFIG_CAPACITY, DENY_CAPACITY},
    rules, stat, v4_mapped,
};

// The identifiers below are the map names; they must equal `reliw_common::maps::*`
// (user space refuses to start if one is missing).
#[map]
static RELIW_BANS: LruHashMap<Addr, BanEntry> = LruHashMap::with_max_entries(BANS_CAPACITY, 0);
#[map]
static RELIW_ALLOW: LpmTrie<Addr, CidrEntry> = LpmTrie::with_max_entries(ALLOW_CAPACITY, 0);
#[map]
static RELIW_DENY: LpmTrie<Addr, CidrEntry> = LpmTrie::with_max_entries(DENY_CAPACITY, 0);
#[map]
static RELIW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
#[map]
static RELIW_CONFIG: Array<ShieldConfig> = Array::with_max_entries(CONFIG_CAPACITY, 0);

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_HEADER_MIN_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100; // 802.1Q
const ETHERTYPE_QINQ: u16 = 0x88a8; // 802.1ad
const MAX_VLAN_TAGS: usize = 2;

#[xdp]
pub fn reliw_shield(ctx: XdpContext) -> u32 {
    let (counter, action) = match source_address(&ctx) {
        Ok(addr) => verdict(&addr),
        Err(counter) => (counter, xdp_action::XDP_PASS),
    };
    count(counter);
    action
}

/// Why a frame has no source address we can judge; the value is its counter.
type Unjudged = u32;

/// The source address of an IPv4 or IPv6 frame, after up to two VLAN tags.
#[inline(always)]
fn source_address(ctx: &XdpContext) -> Result<Addr, Unjudged> {
    let mut ethertype = read_be16(ctx, 12)?;
    let mut offset = ETH_HEADER_LEN;
    // Unrolled by the compiler; the verifier sees constant offsets.
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        ethertype = read_be16(ctx, offset + 2)?;
        offset += VLAN_TAG_LEN;
    }
    match ethertype {
        ETHERTYPE_IPV4 => {
            let first = read_u8(ctx, offset)?;
            let version = first >> 4;
            let header_len = usize::from(first & 0x0f) * 4;
            // The whole fixed header must be there, not only the source field.
            ensure(ctx, offset + IPV4_HEADER_MIN_LEN)?;
            if version != 4 || header_len < IPV4_HEADER_MIN_LEN {
                debug!(
                    ctx,
                    "malformed ipv4 header: version {} ihl {}", version, header_len
                );
                return Err(stat::MALFORMED);
            }
            let src: [u8; 4] = read(ctx, offset + 12)?;
            Ok(v4_mapped(src))
        }
        ETHERTYPE_IPV6 => {
            ensure(ctx, offset + IPV6_HEADER_LEN)?;
            let version = read_u8(ctx, offset)? >> 4;
            if version != 6 {
                debug!(ctx, "malformed ipv6 header: version {}", version);
                return Err(stat::MALFORMED);
            }
            read(ctx, offset + 8)
        }
        _ => Err(stat::NON_IP),
    }
}

/// The counter and action for a source address, in the documented order.
#[inline(always)]
fn verdict(addr: &Addr) -> (u32, u32) {
    // One array lookup, inlined by the verifier; copied so later map calls
    // see a stable value.
    let config = match RELIW_CONFIG.get(0) {
        Some(c) => *c,
        None => ShieldConfig::default(),
    };
    let key = Key::new(128, *addr);
    if config.rules & rules::ALLOW != 0 && RELIW_ALLOW.get(&key).is_some() {
        return (stat::ALLOWLISTED, xdp_action::XDP_PASS);
    }
    if let Some(ban) = RELIW_BANS.get_ptr(addr) {
        // SAFETY: a non-null pointer from a map lookup points at a value of
        // the map's value type; reading it by value copies it out.
        let expires_ns = unsafe { (*ban).expires_ns };
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if now < expires_ns {
            return drop_or_count(&config, stat::DROPPED_BAN, stat::DRY_RUN_BAN);
        }
    }
    if config.rules & rules::DENY != 0 && RELIW_DENY.get(&key).is_some() {
        return drop_or_count(&config, stat::DROPPED_CIDR, stat::DRY_RUN_CIDR);
    }
    (stat::PASSED, xdp_action::XDP_PASS)
}

/// The drop verdict, or in dry-run its counter and a pass.
#[inline(always)]
fn drop_or_count(config: &ShieldConfig, dropped: u32, would_drop: u32) -> (u32, u32) {
    if config.dry_run != 0 {
        (would_drop, xdp_action::XDP_PASS)
    } else {
        (dropped, xdp_action::XDP_DROP)
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = RELIW_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption off, so
        // nothing else writes it concurrently.
        unsafe { *counter += 1 };
    }
}

/// Fails with `malformed` unless the frame holds at least `len` bytes.
#[inline(always)]
fn ensure(ctx: &XdpContext, len: usize) -> Result<(), Unjudged> {
    if ctx.data() + len > ctx.data_end() {
        return Err(stat::MALFORMED);
    }
    Ok(())
}

/// The one bounds-checked accessor: a copy of the `T` at `offset`, or
/// `malformed` if the frame ends before it does.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Unjudged> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(stat::MALFORMED);
    }
    // SAFETY: [start, start + size_of::<T>()) lies inside the packet (checked
    // above); read_unaligned because packet fields have no alignment.
    Ok(unsafe { core::ptr::read_unaligned(start as *const T) })
}

#[inline(always)]
fn read_u8(ctx: &XdpContext, offset: usize) -> Result<u8, Unjudged> {
    read::<u8>(ctx, offset)
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Result<u16, Unjudged> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
