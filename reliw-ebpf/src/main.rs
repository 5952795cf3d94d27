//! The reliw XDP shield: drops packets from banned sources, and from sources
//! over their packet budgets, before the kernel builds an skb for them.
//!
//! Verdict order (first match wins):
//! 1. source in an allow CIDR                -> pass   (`allowlisted`)
//! 2. source has an unexpired exact ban      -> drop   (`dropped_ban`)
//! 3. source in a deny CIDR                  -> drop   (`dropped_cidr`)
//! 4. a TCP SYN over the source's SYN budget -> drop   (`dropped_rate_syn`)
//! 5. a packet over the source's budget      -> drop   (`dropped_rate_packet`)
//! 6. a SYN for a listening port, cookies on -> SYN-ACK (`syn_cookie`, see
//!    `syncookie`)
//! 7. otherwise                              -> pass   (`passed`)
//!
//! In dry-run mode (config map) steps 2 to 6 count `dry_run_*` and pass.
//! Steps 1 and 3 are skipped while their trie is empty (config `rules`):
//! an LPM lookup is a helper call even on an empty trie, and most nodes run
//! with bans only, so the drop path under a flood is one hash lookup on
//! a 4-byte key (IPv4) or a 16-byte one (IPv6). Steps 4 and 5 run only
//! when a budget is configured.
//!
//! No clock is read: ban expiry and budgets use the tick counter (jiffies),
//! which costs one load where a clock read costs a helper call.
//!
//! Budgets are GCRA (see `reliw_common::RateLimits`), one state per source
//! address (IPv6: per prefix) in an LRU hash shared by all CPUs. Two CPUs
//! updating one source at the same instant may both pass a packet the
//! budget had room for once: the limit is approximate by a few packets, by
//! design (an atomic per packet would cost more than the error). A source
//! that stays over budget for `escalate_after_ns` is reported once per
//! stretch on the events ring buffer; user space bans it like a WAF hit.
//!
//! Error paths: every parse failure returns `XDP_PASS`, never `XDP_ABORTED`
//! or `XDP_DROP`. The shield only ever drops what a rule names; a frame we
//! cannot parse (truncated, bad IP header, unknown ethertype) goes on to the
//! kernel stack, which has its own checks, and is counted as `malformed` or
//! `non_ip` so an operator can see it. A TCP header too short to hold its
//! flags is not a SYN (the kernel drops it).
#![no_std]
#![no_main]

mod syncookie;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_jiffies64,
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use reliw_common::{
    Addr, BanEntry, Budget, CidrEntry, CookieState, DEFAULT_JIFFY_NS, Escalation,
    OVER_BUDGET_GAP_NS, RateState, ShieldConfig, budget, cookie_mode,
    maps::{
        ALLOW_CAPACITY, BANS_CAPACITY, BANS4_CAPACITY, CONFIG_CAPACITY, DENY_CAPACITY,
        EVENTS_BYTES, RATE_CAPACITY,
    },
    rules, stat, v4_mapped,
};

// The identifiers below are the map names; they must equal `reliw_common::maps::*`
// (user space refuses to start if one is missing).
#[map]
static RELIW_BANS: LruHashMap<Addr, BanEntry> = LruHashMap::with_max_entries(BANS_CAPACITY, 0);
#[map]
static RELIW_BANS4: LruHashMap<[u8; 4], BanEntry> = LruHashMap::with_max_entries(BANS4_CAPACITY, 0);
#[map]
static RELIW_ALLOW: LpmTrie<Addr, CidrEntry> = LpmTrie::with_max_entries(ALLOW_CAPACITY, 0);
#[map]
static RELIW_DENY: LpmTrie<Addr, CidrEntry> = LpmTrie::with_max_entries(DENY_CAPACITY, 0);
#[map]
static RELIW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
#[map]
static RELIW_CONFIG: Array<ShieldConfig> = Array::with_max_entries(CONFIG_CAPACITY, 0);
#[map]
static RELIW_RATE: LruHashMap<Addr, RateState> = LruHashMap::with_max_entries(RATE_CAPACITY, 0);
#[map]
static RELIW_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
static RELIW_COOKIES: PerCpuArray<CookieState> = PerCpuArray::with_max_entries(1, 0);

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_HEADER_MIN_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100; // 802.1Q
const ETHERTYPE_QINQ: u16 = 0x88a8; // 802.1ad
const MAX_VLAN_TAGS: usize = 2;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const IPV4_FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

#[xdp]
pub fn reliw_shield(ctx: XdpContext) -> u32 {
    // One array lookup, inlined by the verifier; copied so later map calls
    // see a stable value.
    let config = match RELIW_CONFIG.get(0) {
        Some(c) => *c,
        None => ShieldConfig::default(),
    };
    let want_syn = config.rate.syn.interval_ns != 0 || config.syn_cookies.mode != cookie_mode::OFF;
    let (counter, action) = match parse(&ctx, want_syn) {
        Ok(packet) => verdict(&ctx, &config, &packet),
        Err(counter) => (counter, xdp_action::XDP_PASS),
    };
    count(counter);
    action
}

/// Why a frame has no source address we can judge; the value is its counter.
type Unjudged = u32;

/// A source address, in the form its ban map is keyed by.
#[derive(Clone, Copy)]
enum Source {
    V4([u8; 4]),
    V6(Addr),
}

impl Source {
    /// The 16-byte form the tries and the rate map use.
    #[inline(always)]
    fn addr(&self) -> Addr {
        match self {
            Self::V4(octets) => v4_mapped(*octets),
            Self::V6(addr) => *addr,
        }
    }
}

/// What the verdict needs from a frame.
struct Packet {
    source: Source,
    /// A TCP SYN without ACK (only looked for while a SYN budget or SYN
    /// cookies are on).
    syn: bool,
    /// Untagged, and TCP right after a header without options: the frames
    /// the SYN cookie path answers.
    plain: bool,
}

/// The source (and SYN flag) of an IPv4 or IPv6 frame, after up to two
/// VLAN tags.
#[inline(always)]
fn parse(ctx: &XdpContext, want_syn: bool) -> Result<Packet, Unjudged> {
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
            let syn = want_syn
                && read_u8(ctx, offset + 9)? == IPPROTO_TCP
                && read_be16(ctx, offset + 6)? & IPV4_FRAGMENT_OFFSET_MASK == 0
                && is_syn(ctx, offset + header_len);
            Ok(Packet {
                source: Source::V4(src),
                syn,
                plain: offset == ETH_HEADER_LEN && header_len == IPV4_HEADER_MIN_LEN,
            })
        }
        ETHERTYPE_IPV6 => {
            ensure(ctx, offset + IPV6_HEADER_LEN)?;
            let version = read_u8(ctx, offset)? >> 4;
            if version != 6 {
                debug!(ctx, "malformed ipv6 header: version {}", version);
                return Err(stat::MALFORMED);
            }
            let src: Addr = read(ctx, offset + 8)?;
            // Only a TCP header right after the fixed header: a SYN behind
            // extension headers is judged by the packet budget alone.
            let syn = want_syn
                && read_u8(ctx, offset + 6)? == IPPROTO_TCP
                && is_syn(ctx, offset + IPV6_HEADER_LEN);
            Ok(Packet {
                source: Source::V6(src),
                syn,
                plain: offset == ETH_HEADER_LEN,
            })
        }
        _ => Err(stat::NON_IP),
    }
}

/// Whether the TCP header at `tcp` is a SYN without ACK.
#[inline(always)]
fn is_syn(ctx: &XdpContext, tcp: usize) -> bool {
    match read_u8(ctx, tcp + TCP_FLAGS_OFFSET) {
        Ok(flags) => flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
        Err(_) => false,
    }
}

/// The counter and action for a packet, in the documented order.
#[inline(always)]
fn verdict(ctx: &XdpContext, config: &ShieldConfig, packet: &Packet) -> (u32, u32) {
    if config.rules & rules::ALLOW != 0
        && RELIW_ALLOW
            .get(&Key::new(128, packet.source.addr()))
            .is_some()
    {
        return (stat::ALLOWLISTED, xdp_action::XDP_PASS);
    }
    let ban = match &packet.source {
        Source::V4(octets) => RELIW_BANS4.get_ptr(octets),
        Source::V6(addr) => RELIW_BANS.get_ptr(addr),
    };
    if let Some(ban) = ban {
        // SAFETY: a non-null pointer from a map lookup points at a value of
        // the map's value type; reading it by value copies it out.
        let expires = unsafe { (*ban).expires_jiffies };
        // NEVER_EXPIRES is u64::MAX, above any jiffies value.
        if jiffies() < expires {
            return drop_or_count(config, stat::DROPPED_BAN, stat::DRY_RUN_BAN);
        }
    }
    if config.rules & rules::DENY != 0
        && RELIW_DENY
            .get(&Key::new(128, packet.source.addr()))
            .is_some()
    {
        return drop_or_count(config, stat::DROPPED_CIDR, stat::DRY_RUN_CIDR);
    }
    if config.rate.enabled() {
        match over_budget(config, packet) {
            budget::SYN => {
                return drop_or_count(config, stat::DROPPED_RATE_SYN, stat::DRY_RUN_RATE_SYN);
            }
            budget::PACKET => {
                return drop_or_count(config, stat::DROPPED_RATE_PACKET, stat::DRY_RUN_RATE_PACKET);
            }
            _ => {}
        }
    }
    if packet.syn
        && packet.plain
        && config.syn_cookies.mode != cookie_mode::OFF
        && let Some(answered) =
            syncookie::answer(ctx, config, matches!(packet.source, Source::V6(_)))
    {
        return answered;
    }
    (stat::PASSED, xdp_action::XDP_PASS)
}

/// Charges the packet to its source's budgets: 0 when it conforms, else
/// the [`budget`] it is over (the SYN budget is judged first).
#[inline(always)]
fn over_budget(config: &ShieldConfig, packet: &Packet) -> u32 {
    let limits = &config.rate;
    let key = rate_key(&packet.source, limits.v6_prefix_len);
    let jiffy_ns = if config.jiffy_ns == 0 {
        DEFAULT_JIFFY_NS
    } else {
        config.jiffy_ns
    };
    let now = jiffies().wrapping_mul(jiffy_ns);
    let existing = RELIW_RATE.get_ptr_mut(&key);
    let mut state = match existing {
        // SAFETY: a non-null pointer from a map lookup points at a value
        // of the map's value type.
        Some(ptr) => unsafe { *ptr },
        None => RateState::default(),
    };
    // Judged on copies: a packet dropped by one budget is charged to none.
    let (mut syn_tat, mut packet_tat) = (state.syn_tat_ns, state.packet_tat_ns);
    let over = if packet.syn && !conforms(&mut syn_tat, now, &limits.syn) {
        budget::SYN
    } else if !conforms(&mut packet_tat, now, &limits.packet) {
        budget::PACKET
    } else {
        state.syn_tat_ns = syn_tat;
        state.packet_tat_ns = packet_tat;
        0
    };
    if over != 0 {
        if state.over_since_ns == 0 || now.saturating_sub(state.last_over_ns) > OVER_BUDGET_GAP_NS {
            state.over_since_ns = now;
            state.escalated = 0;
        }
        state.last_over_ns = now;
        if limits.escalate_after_ns != 0
            && state.escalated == 0
            && now - state.over_since_ns >= limits.escalate_after_ns
        {
            let event = Escalation {
                addr: packet.source.addr(),
                budget: over,
                dry_run: config.dry_run,
            };
            // A full ring only delays the report to the next packet.
            if RELIW_EVENTS.output::<Escalation>(&event, 0).is_ok() {
                state.escalated = 1;
            }
        }
    }
    match existing {
        // SAFETY: as above; the value stays valid while this program runs.
        Some(ptr) => unsafe { *ptr = state },
        None => {
            // A failed insert (another CPU raced us to it) loses one charge.
            let _ = RELIW_RATE.insert(&key, &state, 0);
        }
    }
    over
}

/// GCRA: whether a packet at `now` conforms to `budget`; if so the TAT
/// moves on by one interval. A budget that is off always conforms.
#[inline(always)]
fn conforms(tat: &mut u64, now: u64, budget: &Budget) -> bool {
    if budget.interval_ns == 0 {
        return true;
    }
    let start = if *tat > now { *tat } else { now };
    if start - now > budget.tolerance_ns {
        return false;
    }
    *tat = start + budget.interval_ns;
    true
}

/// The rate map key: the IPv4-mapped address, or the IPv6 address with
/// everything after `v6_prefix_len` bits cleared.
#[inline(always)]
fn rate_key(source: &Source, v6_prefix_len: u32) -> Addr {
    match source {
        Source::V4(octets) => v4_mapped(*octets),
        Source::V6(addr) => {
            let mut high = [0u8; 8];
            let mut low = [0u8; 8];
            high.copy_from_slice(&addr[..8]);
            low.copy_from_slice(&addr[8..]);
            let high = u64::from_be_bytes(high);
            let low = u64::from_be_bytes(low);
            let (high, low) = if v6_prefix_len >= 64 {
                (high, low & prefix_mask(v6_prefix_len - 64))
            } else {
                (high & prefix_mask(v6_prefix_len), 0)
            };
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&high.to_be_bytes());
            key[8..].copy_from_slice(&low.to_be_bytes());
            key
        }
    }
}

/// The top `bits` bits of a u64 set (`bits` >= 64: all).
#[inline(always)]
fn prefix_mask(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else if bits >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - bits)
    }
}

/// The kernel's tick counter: the verifier turns this helper into one
/// load, where a clock read is a call costing more than a hash lookup.
/// Ban expiry and budgets are therefore one tick coarse (documented in
/// the operator guide).
#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: bpf_jiffies64 has no preconditions.
    unsafe { bpf_jiffies64() }
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

/// Writes `value` at `offset`, or fails if the frame ends before it does.
#[inline(always)]
fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> Result<(), Unjudged> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(stat::MALFORMED);
    }
    // SAFETY: the range lies inside the packet (checked above), which XDP
    // may write; unaligned as in `read`.
    unsafe { core::ptr::write_unaligned(start as *mut T, value) };
    Ok(())
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
