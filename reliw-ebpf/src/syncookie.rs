//! SYN cookies answered in XDP: the frame of a SYN for a listening port is
//! turned into the SYN-ACK and sent back (`XDP_TX`), so a SYN flood never
//! reaches the kernel's SYN queue.
//!
//! The cookie is the kernel's own (`bpf_tcp_raw_gen_syncookie_ipv4/6`, the
//! listener's secret), so the client's ACK goes up the stack like any ACK
//! and the listener validates it as a cookie it sent itself. The kernel
//! accepts cookie ACKs only while it has sent cookies recently
//! (`tcp_syncookies = 2` sends them for every SYN it sees), so one SYN a
//! second per CPU and listening socket (port and family) is left to it. The SYN-ACK carries an MSS option and no
//! timestamps: connections made through a cookie have no window scaling
//! or SACK, as with the kernel's cookies for clients without timestamps.
//!
//! Only plain frames are answered: untagged Ethernet, IPv4 without
//! options or IPv6 with TCP right after the fixed header. Everything else,
//! and every helper failure, is left to the kernel.

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action},
    helpers::{
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use reliw_common::{DEFAULT_JIFFY_NS, ShieldConfig, cookie_mode, stat};

use crate::{
    ETH_HEADER_LEN as ETH_LEN, IPV4_HEADER_MIN_LEN as IPV4_LEN, IPV6_HEADER_LEN as IPV6_LEN,
    RELIW_COOKIES, jiffies, read, read_u8, write,
};

const TCP_MIN_LEN: usize = 20;
/// Our SYN-ACK's header: the fixed part and one MSS option.
const REPLY_TCP_LEN: usize = 24;
const SYN_ACK: u8 = 0x12;
/// No window scaling through a cookie: the largest unscaled window.
const WINDOW: u16 = 65_535;

/// The counter and action for a SYN the cookie path takes, or `None` to
/// leave the SYN to the kernel.
#[inline(always)]
pub(crate) fn answer(ctx: &XdpContext, config: &ShieldConfig, v6: bool) -> Option<(u32, u32)> {
    let tcp = ETH_LEN + if v6 { IPV6_LEN } else { IPV4_LEN };
    let port = u16::from_be_bytes(read::<[u8; 2]>(ctx, tcp + 2).ok()?);
    let listener = listener(&config.syn_cookies.ports, port)? * 2 + usize::from(v6);
    if !hot(config, listener) {
        return None;
    }
    if config.dry_run != 0 {
        return Some((stat::DRY_RUN_SYN_COOKIE, xdp_action::XDP_PASS));
    }
    // The helper reads the flags and the MSS option, which every stack
    // sends first in a SYN. Copying the fixed header and that option (not
    // the whole, variable, header) keeps every access at a constant size.
    let tcp_len = usize::from(read_u8(ctx, tcp + 12).ok()? >> 4) * 4;
    if tcp_len < TCP_MIN_LEN {
        return None;
    }
    let mut syn = [0u8; REPLY_TCP_LEN];
    syn[..TCP_MIN_LEN].copy_from_slice(&read::<[u8; TCP_MIN_LEN]>(ctx, tcp).ok()?);
    let mut syn_len = TCP_MIN_LEN;
    if tcp_len >= REPLY_TCP_LEN {
        let option: [u8; 4] = read(ctx, tcp + TCP_MIN_LEN).ok()?;
        if option[0] == 2 && option[1] == 4 {
            syn[TCP_MIN_LEN..].copy_from_slice(&option);
            syn_len = REPLY_TCP_LEN;
        }
    }
    // The helper insists that the length given is the header's.
    syn[12] = ((syn_len / 4) as u8) << 4 | (syn[12] & 0x0f);
    let macs: [u8; 12] = read(ctx, 0).ok()?;
    let reply = if v6 {
        let mut ip: [u8; IPV6_LEN] = read(ctx, ETH_LEN).ok()?;
        // SAFETY: both buffers are valid for the sizes given; the helper
        // reads the addresses and the TCP header and writes nothing.
        let cookie = unsafe {
            bpf_tcp_raw_gen_syncookie_ipv6(
                ip.as_mut_ptr().cast::<ipv6hdr>(),
                syn.as_mut_ptr().cast::<tcphdr>(),
                syn_len as u32,
            )
        };
        reply_v6(&ip, &syn, cookie)?
    } else {
        let mut ip: [u8; IPV4_LEN] = read(ctx, ETH_LEN).ok()?;
        // SAFETY: as above, with the IPv4 header.
        let cookie = unsafe {
            bpf_tcp_raw_gen_syncookie_ipv4(
                ip.as_mut_ptr().cast::<iphdr>(),
                syn.as_mut_ptr().cast::<tcphdr>(),
                syn_len as u32,
            )
        };
        reply_v4(&ip, &syn, cookie)?
    };
    // A SYN with options (or padding) shrinks to the reply; one without
    // grows by the MSS option, if the frame has the tailroom.
    let frame_len = (ctx.data_end() - ctx.data()) as i32;
    let reply_len = (tcp + REPLY_TCP_LEN) as i32;
    if reply_len != frame_len {
        // SAFETY: the kernel checks the new end against the frame's room.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, reply_len - frame_len) } != 0 {
            return None;
        }
    }
    // The frame is now exactly reply_len bytes; every write below is in it.
    let mut eth = [0u8; 12];
    eth[..6].copy_from_slice(&macs[6..]);
    eth[6..].copy_from_slice(&macs[..6]);
    let written = write(ctx, 0, eth).is_ok()
        && match &reply {
            Reply::V4(ip, tcp_header) => {
                write(ctx, ETH_LEN, *ip).is_ok() && write(ctx, tcp, *tcp_header).is_ok()
            }
            Reply::V6(ip, tcp_header) => {
                write(ctx, ETH_LEN, *ip).is_ok() && write(ctx, tcp, *tcp_header).is_ok()
            }
        };
    if !written {
        // Unreachable with the length checked above; a half-written frame
        // fails its checksums in the kernel.
        return None;
    }
    Some((stat::SYN_COOKIE, xdp_action::XDP_TX))
}

enum Reply {
    V4([u8; IPV4_LEN], [u8; REPLY_TCP_LEN]),
    V6([u8; IPV6_LEN], [u8; REPLY_TCP_LEN]),
}

/// The index of `port` among the configured ports (0 ends the list).
#[inline(always)]
fn listener(ports: &[u16; 8], port: u16) -> Option<usize> {
    for (i, p) in ports.iter().enumerate() {
        if *p == 0 {
            return None;
        }
        if *p == port {
            return Some(i);
        }
    }
    None
}

/// Counts the SYN and says whether the cookie path answers it: cookies on
/// (or `AUTO` and hot), and not the one SYN a second `listener` gets.
#[inline(always)]
fn hot(config: &ShieldConfig, listener: usize) -> bool {
    let cookies = &config.syn_cookies;
    if cookies.mode == cookie_mode::OFF {
        return false;
    }
    let Some(state) = RELIW_COOKIES.get_ptr_mut(0) else {
        return false;
    };
    let jiffy_ns = if config.jiffy_ns == 0 {
        DEFAULT_JIFFY_NS
    } else {
        config.jiffy_ns
    };
    let second = 1_000_000_000 / jiffy_ns;
    let now = jiffies();
    // SAFETY: this CPU's slot of a per-CPU array; XDP runs with
    // preemption off, so nothing else touches it meanwhile.
    let state = unsafe { &mut *state };
    if now.wrapping_sub(state.window_start) >= second {
        state.window_start = now;
        state.syns = 0;
    }
    state.syns += 1;
    if cookies.mode == cookie_mode::AUTO {
        if state.syns > u64::from(cookies.above_per_cpu) {
            state.hot_until = now + second;
        }
        if now >= state.hot_until {
            return false;
        }
    }
    // The verifier cannot see that the family bit is 0 or 1, and LLVM
    // drops a mask it can prove useless: the volatile read keeps the mask.
    // SAFETY: reading a local.
    let slot = unsafe { core::ptr::read_volatile(&listener) } & 15;
    let last_passed = &mut state.last_passed[slot];
    if now.wrapping_sub(*last_passed) >= second {
        *last_passed = now;
        return false;
    }
    true
}

/// The SYN-ACK's TCP header (checksum left at 0), or `None` when the
/// helper refused the SYN.
#[inline(always)]
fn tcp_reply(syn: &[u8; REPLY_TCP_LEN], cookie: i64, max_mss: u16) -> Option<[u8; REPLY_TCP_LEN]> {
    if cookie < 0 {
        return None;
    }
    let seq = u32::from_be_bytes([syn[4], syn[5], syn[6], syn[7]]);
    // The cookie's MSS is the client's (rounded down to the kernel's
    // table, which for IPv6 reaches 8940); ours is that of a 1500-byte
    // link, which the kernel would advertise on one.
    let mss = ((cookie >> 32) as u16).min(max_mss);
    let mut t = [0u8; REPLY_TCP_LEN];
    t[0] = syn[2];
    t[1] = syn[3];
    t[2] = syn[0];
    t[3] = syn[1];
    t[4..8].copy_from_slice(&(cookie as u32).to_be_bytes());
    t[8..12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    t[12] = ((REPLY_TCP_LEN / 4) as u8) << 4;
    t[13] = SYN_ACK;
    t[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    t[20] = 2; // MSS
    t[21] = 4;
    t[22..24].copy_from_slice(&mss.to_be_bytes());
    Some(t)
}

#[inline(always)]
fn reply_v4(ip: &[u8; IPV4_LEN], syn: &[u8; REPLY_TCP_LEN], cookie: i64) -> Option<Reply> {
    let mut tcp = tcp_reply(syn, cookie, 1460)?;
    let mut out = [0u8; IPV4_LEN];
    out[0] = 0x45;
    out[2..4].copy_from_slice(&((IPV4_LEN + REPLY_TCP_LEN) as u16).to_be_bytes());
    out[6] = 0x40; // don't fragment
    out[8] = 64;
    out[9] = 6;
    out[12..16].copy_from_slice(&ip[16..20]);
    out[16..20].copy_from_slice(&ip[12..16]);
    let sum = fold(add_words(&out, 0));
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    let pseudo = add_words(&out[12..20], 6 + REPLY_TCP_LEN as u32);
    let sum = fold(add_words(&tcp, pseudo));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    Some(Reply::V4(out, tcp))
}

#[inline(always)]
fn reply_v6(ip: &[u8; IPV6_LEN], syn: &[u8; REPLY_TCP_LEN], cookie: i64) -> Option<Reply> {
    let mut tcp = tcp_reply(syn, cookie, 1440)?;
    let mut out = [0u8; IPV6_LEN];
    out[0] = 0x60;
    out[4..6].copy_from_slice(&(REPLY_TCP_LEN as u16).to_be_bytes());
    out[6] = 6;
    out[7] = 64;
    out[8..24].copy_from_slice(&ip[24..40]);
    out[24..40].copy_from_slice(&ip[8..24]);
    let pseudo = add_words(&out[8..40], 6 + REPLY_TCP_LEN as u32);
    let sum = fold(add_words(&tcp, pseudo));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    Some(Reply::V6(out, tcp))
}

/// `acc` plus the big-endian 16-bit words of `bytes` (even length).
#[inline(always)]
fn add_words(bytes: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        acc += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    acc
}

/// The one's complement of the folded sum: the checksum field's value.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
