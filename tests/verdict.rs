//! Verdicts of the XDP program on hand-built frames, through
//! `BPF_PROG_TEST_RUN`: the real program in the kernel, with private
//! (unpinned) maps, no interface attached.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use reliw::shield::{Cidr, Shield, ShieldOptions, Stats};
use reliw_common::{reason, stat};
use reliw_tests::require_privileges;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const V4_SRC: [u8; 4] = [198, 18, 0, 7];
const V6_SRC: [u8; 16] = [0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

fn shield() -> Shield {
    Shield::start(&ShieldOptions {
        pin_root: None,
        ..ShieldOptions::default()
    })
    .expect("the XDP object loads")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

/// Ethernet header with VLAN tags (TPIDs given) before `ethertype`.
fn ethernet(tpids: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, tpid) in tpids.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4_frame(tpids: &[u16], src: [u8; 4]) -> Vec<u8> {
    let mut f = ethernet(tpids, 0x0800);
    let mut header = [0u8; 20];
    header[0] = 0x45; // version 4, IHL 5
    header[3] = 28; // total length
    header[8] = 64; // TTL
    header[9] = 6; // TCP
    header[12..16].copy_from_slice(&src);
    header[16..20].copy_from_slice(&[198, 18, 0, 1]);
    f.extend_from_slice(&header);
    f.extend_from_slice(&[0u8; 8]);
    f
}

fn ipv6_frame(tpids: &[u16], src: [u8; 16]) -> Vec<u8> {
    let mut f = ethernet(tpids, 0x86dd);
    let mut header = [0u8; 40];
    header[0] = 0x60;
    header[5] = 8; // payload length
    header[6] = 6; // TCP
    header[7] = 64;
    header[8..24].copy_from_slice(&src);
    header[39] = 1;
    f.extend_from_slice(&header);
    f.extend_from_slice(&[0u8; 8]);
    f
}

/// Runs the program once; returns the action and the counters it moved.
fn run(shield: &Shield, frame: &[u8]) -> (u32, Stats) {
    let before = shield.stats().unwrap();
    let (action, _) = shield
        .test_run(frame, 1)
        .unwrap()
        .expect("shield is active");
    let after = shield.stats().unwrap();
    let mut delta = Stats::default();
    for (i, slot) in delta.counters.iter_mut().enumerate() {
        *slot = after.counters[i] - before.counters[i];
    }
    (action, delta)
}

/// Asserts the action and that exactly one counter, `counter`, moved by one.
#[track_caller]
fn expect(shield: &Shield, frame: &[u8], action: u32, counter: u32) {
    let (got, delta) = run(shield, frame);
    assert_eq!(got, action, "action for {} byte frame", frame.len());
    let mut want = Stats::default();
    want.counters[counter as usize] = 1;
    assert_eq!(delta, want, "counters for {} byte frame", frame.len());
}

const VLAN: u16 = 0x8100;
const QINQ: u16 = 0x88a8;

/// Tests that need root: `cargo xtask test` skips them by this module
/// name when `RELIW_SKIP_PRIVILEGED=1`.
mod privileged {
    use super::*;

    #[test]
    fn unknown_sources_pass() {
        require_privileges();
        let s = shield();
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::PASSED);
        expect(&s, &ipv6_frame(&[], V6_SRC), XDP_PASS, stat::PASSED);
    }

    #[test]
    fn banned_sources_drop_for_both_families_and_others_pass() {
        require_privileges();
        let s = shield();
        s.ban(
            ip("198.18.0.7"),
            Some(Duration::from_secs(60)),
            reason::MANUAL,
        )
        .unwrap();
        s.ban(ip("fd00:198:18::7"), None, reason::WAF).unwrap();
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_DROP, stat::DROPPED_BAN);
        expect(&s, &ipv6_frame(&[], V6_SRC), XDP_DROP, stat::DROPPED_BAN);
        expect(
            &s,
            &ipv4_frame(&[], [198, 18, 0, 8]),
            XDP_PASS,
            stat::PASSED,
        );
        // The IPv4 ban does not catch the IPv6 address with the same low bytes.
        let mut other = V6_SRC;
        other[15] = 8;
        expect(&s, &ipv6_frame(&[], other), XDP_PASS, stat::PASSED);
        // Unban restores.
        assert!(s.unban(ip("198.18.0.7")).unwrap());
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::PASSED);
    }

    #[test]
    fn expired_bans_pass() {
        require_privileges();
        let s = shield();
        s.ban(
            ip("198.18.0.7"),
            Some(Duration::from_millis(1)),
            reason::MANUAL,
        )
        .unwrap();
        s.ban(
            ip("fd00:198:18::7"),
            Some(Duration::from_millis(1)),
            reason::MANUAL,
        )
        .unwrap();
        // The program reads the coarse clock: a ban ends within one tick
        // (at most 10 ms, HZ 100) of its expiry.
        std::thread::sleep(Duration::from_millis(25));
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::PASSED);
        expect(&s, &ipv6_frame(&[], V6_SRC), XDP_PASS, stat::PASSED);
        // The sweeper's work, done by hand: both are gone afterwards.
        assert_eq!(s.maps().unwrap().sweep_expired().unwrap(), 2);
        assert!(s.list().unwrap().bans.is_empty());
    }

    #[test]
    fn deny_cidrs_drop_only_inside() {
        require_privileges();
        let s = shield();
        s.deny(cidr("198.18.0.0/29")).unwrap();
        s.deny(cidr("fd00:198:18::/120")).unwrap();
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_DROP, stat::DROPPED_CIDR);
        expect(
            &s,
            &ipv4_frame(&[], [198, 18, 0, 8]),
            XDP_PASS,
            stat::PASSED,
        );
        expect(&s, &ipv6_frame(&[], V6_SRC), XDP_DROP, stat::DROPPED_CIDR);
        let mut outside = V6_SRC;
        outside[14] = 1;
        expect(&s, &ipv6_frame(&[], outside), XDP_PASS, stat::PASSED);
        // An IPv4 /0 must not swallow IPv6 sources.
        s.deny(cidr("0.0.0.0/0")).unwrap();
        expect(
            &s,
            &ipv4_frame(&[], [203, 0, 113, 9]),
            XDP_DROP,
            stat::DROPPED_CIDR,
        );
        expect(&s, &ipv6_frame(&[], outside), XDP_PASS, stat::PASSED);
    }

    #[test]
    fn allow_cidrs_override_bans_and_denies() {
        require_privileges();
        let s = shield();
        s.ban(ip("198.18.0.7"), None, reason::MANUAL).unwrap();
        s.deny(cidr("fd00:198:18::/48")).unwrap();
        s.allow(cidr("198.18.0.0/24")).unwrap();
        s.allow(cidr("fd00:198:18::7/128")).unwrap();
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::ALLOWLISTED);
        expect(&s, &ipv6_frame(&[], V6_SRC), XDP_PASS, stat::ALLOWLISTED);
        assert!(s.maps().unwrap().disallow(cidr("198.18.0.0/24")).unwrap());
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_DROP, stat::DROPPED_BAN);
    }

    #[test]
    fn vlan_tagged_frames_are_judged_by_the_inner_source() {
        require_privileges();
        let s = shield();
        s.ban(ip("198.18.0.7"), None, reason::MANUAL).unwrap();
        s.ban(ip("fd00:198:18::7"), None, reason::MANUAL).unwrap();
        for tags in [&[VLAN][..], &[QINQ], &[QINQ, VLAN], &[VLAN, VLAN]] {
            expect(&s, &ipv4_frame(tags, V4_SRC), XDP_DROP, stat::DROPPED_BAN);
            expect(&s, &ipv6_frame(tags, V6_SRC), XDP_DROP, stat::DROPPED_BAN);
            expect(
                &s,
                &ipv4_frame(tags, [198, 18, 0, 9]),
                XDP_PASS,
                stat::PASSED,
            );
        }
        // A third tag is beyond what we parse: passed as non-IP, never dropped.
        expect(
            &s,
            &ipv4_frame(&[QINQ, VLAN, VLAN], V4_SRC),
            XDP_PASS,
            stat::NON_IP,
        );
    }

    #[test]
    fn truncated_frames_pass_as_malformed_at_every_length() {
        require_privileges();
        let s = shield();
        // Banned, so a frame read past its end could only show up as a drop.
        s.ban(ip("198.18.0.7"), None, reason::MANUAL).unwrap();
        s.ban(ip("fd00:198:18::7"), None, reason::MANUAL).unwrap();
        let frames = [
            ("ipv4", ipv4_frame(&[], V4_SRC), 14 + 20),
            ("ipv6", ipv6_frame(&[], V6_SRC), 14 + 40),
            ("vlan ipv4", ipv4_frame(&[VLAN], V4_SRC), 18 + 20),
            ("qinq ipv6", ipv6_frame(&[QINQ, VLAN], V6_SRC), 22 + 40),
        ];
        for (what, frame, complete) in frames {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header,
            // so 14 bytes is the shortest the kernel can hand the program.
            for len in 14..complete {
                let (action, delta) = run(&s, &frame[..len]);
                assert_eq!(action, XDP_PASS, "{what} truncated to {len}");
                assert_eq!(delta.get(stat::MALFORMED), 1, "{what} truncated to {len}");
            }
            // Exactly complete headers are enough for a verdict.
            expect(&s, &frame[..complete], XDP_DROP, stat::DROPPED_BAN);
        }
    }

    #[test]
    fn bad_ip_headers_and_non_ip_frames_pass() {
        require_privileges();
        let s = shield();
        s.deny(cidr("0.0.0.0/0")).unwrap();
        s.deny(cidr("::/0")).unwrap();
        let mut arp = ethernet(&[], 0x0806);
        arp.extend_from_slice(&[0u8; 28]);
        expect(&s, &arp, XDP_PASS, stat::NON_IP);
        let mut wrong_version = ipv4_frame(&[], V4_SRC);
        wrong_version[14] = 0x65;
        expect(&s, &wrong_version, XDP_PASS, stat::MALFORMED);
        let mut short_ihl = ipv4_frame(&[], V4_SRC);
        short_ihl[14] = 0x44;
        expect(&s, &short_ihl, XDP_PASS, stat::MALFORMED);
        let mut v6_wrong_version = ipv6_frame(&[], V6_SRC);
        v6_wrong_version[14] = 0x40;
        expect(&s, &v6_wrong_version, XDP_PASS, stat::MALFORMED);
    }

    #[test]
    fn dry_run_counts_what_it_would_drop_and_passes() {
        require_privileges();
        let s = shield();
        s.ban(ip("198.18.0.7"), None, reason::MANUAL).unwrap();
        s.deny(cidr("fd00:198:18::/48")).unwrap();
        s.maps().unwrap().set_dry_run(true).unwrap();
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::DRY_RUN_BAN);
        expect(&s, &ipv6_frame(&[], V6_SRC), XDP_PASS, stat::DRY_RUN_CIDR);
        expect(
            &s,
            &ipv4_frame(&[], [198, 18, 0, 9]),
            XDP_PASS,
            stat::PASSED,
        );
        s.maps().unwrap().set_dry_run(false).unwrap();
        expect(&s, &ipv4_frame(&[], V4_SRC), XDP_DROP, stat::DROPPED_BAN);
    }

    /// The kernel's mean cost per packet (`repeat`), printed for the record;
    /// asserts only the verdicts, since timing depends on the machine.
    #[test]
    fn cost_per_packet() {
        require_privileges();
        let s = shield();
        s.ban(ip("198.18.0.7"), None, reason::MANUAL).unwrap();
        for n in 0..1000u32 {
            let [a, b, c, d] = (0xc612_1000u32 + n).to_be_bytes();
            s.deny(cidr(&format!("{a}.{b}.{c}.{d}/32"))).unwrap();
        }
        const REPEAT: u32 = 1_000_000;
        for (what, frame, want) in [
            ("pass ipv4", ipv4_frame(&[], [198, 18, 0, 9]), XDP_PASS),
            ("drop ipv4 (ban)", ipv4_frame(&[], V4_SRC), XDP_DROP),
            (
                "drop ipv4 (cidr)",
                ipv4_frame(&[], [198, 18, 16, 5]),
                XDP_DROP,
            ),
            ("pass ipv6", ipv6_frame(&[], [0xfd; 16]), XDP_PASS),
        ] {
            let (action, per_run) = s.test_run(&frame, REPEAT).unwrap().unwrap();
            assert_eq!(action, want, "{what}");
            println!(
                "xdp cost {what}: {} ns/packet over {REPEAT} runs",
                per_run.as_nanos()
            );
        }
    }

    /// Per-source budgets (`shield.rate_limit`): GCRA in the program, on
    /// the coarse clock. Rates are low (a few per second) so a slow test
    /// machine cannot refill a budget between two frames by accident.
    mod rate {
        use reliw_common::{Budget, RateLimits};

        use super::*;

        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;

        /// An IPv4 TCP segment (20-byte header) with `flags`.
        fn tcp4(src: [u8; 4], flags: u8) -> Vec<u8> {
            let mut f = ethernet(&[], 0x0800);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[3] = 40;
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&src);
            ip[16..20].copy_from_slice(&[198, 18, 0, 1]);
            f.extend_from_slice(&ip);
            f.extend_from_slice(&tcp_header(flags));
            f
        }

        /// An IPv6 TCP segment with `flags`.
        fn tcp6(src: [u8; 16], flags: u8) -> Vec<u8> {
            let mut f = ethernet(&[], 0x86dd);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[5] = 20;
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&src);
            ip[39] = 1;
            f.extend_from_slice(&ip);
            f.extend_from_slice(&tcp_header(flags));
            f
        }

        fn tcp_header(flags: u8) -> [u8; 20] {
            let mut tcp = [0u8; 20];
            tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
            tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
            tcp[12] = 5 << 4; // data offset: 5 words
            tcp[13] = flags;
            tcp
        }

        /// `per_second` with a burst of `burst` (tolerance `burst - 1`
        /// intervals); the intervals here are far above any clock tick.
        fn budget(per_second: u64, burst: u64) -> Budget {
            let interval_ns = 1_000_000_000 / per_second;
            Budget {
                interval_ns,
                tolerance_ns: (burst - 1) * interval_ns,
            }
        }

        fn limited(limits: RateLimits) -> Shield {
            let s = shield();
            s.maps().unwrap().set_rate_limits(limits).unwrap();
            s
        }

        fn limits(packet: Budget, syn: Budget) -> RateLimits {
            RateLimits {
                packet,
                syn,
                escalate_after_ns: 0,
                v6_prefix_len: 64,
                _pad: 0,
            }
        }

        #[test]
        fn syns_over_the_burst_drop_until_the_budget_refills() {
            require_privileges();
            // 2 SYNs a second, 2 at once.
            let s = limited(limits(Budget::default(), budget(2, 2)));
            let syn = tcp4(V4_SRC, SYN);
            expect(&s, &syn, XDP_PASS, stat::PASSED);
            expect(&s, &syn, XDP_PASS, stat::PASSED);
            expect(&s, &syn, XDP_DROP, stat::DROPPED_RATE_SYN);
            // The rest of the connection is not a new one: it passes.
            expect(&s, &tcp4(V4_SRC, SYN | ACK), XDP_PASS, stat::PASSED);
            expect(&s, &tcp4(V4_SRC, ACK), XDP_PASS, stat::PASSED);
            expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::PASSED);
            // Another source has its own budget, in both families.
            expect(&s, &tcp4([198, 18, 0, 8], SYN), XDP_PASS, stat::PASSED);
            expect(&s, &tcp6(V6_SRC, SYN), XDP_PASS, stat::PASSED);
            // Half a second later the budget holds one more SYN (and only
            // one: the sleep would have to overshoot by 400 ms for two).
            std::thread::sleep(Duration::from_millis(600));
            expect(&s, &syn, XDP_PASS, stat::PASSED);
            expect(&s, &syn, XDP_DROP, stat::DROPPED_RATE_SYN);
        }

        #[test]
        fn the_packet_budget_counts_every_packet() {
            require_privileges();
            let s = limited(limits(budget(2, 3), Budget::default()));
            let frames = [
                tcp4(V4_SRC, ACK),
                ipv4_frame(&[], V4_SRC),
                tcp4(V4_SRC, SYN),
            ];
            for frame in &frames {
                expect(&s, frame, XDP_PASS, stat::PASSED);
            }
            for frame in &frames {
                expect(&s, frame, XDP_DROP, stat::DROPPED_RATE_PACKET);
            }
            // An unparseable frame is never charged or dropped.
            let mut arp = ethernet(&[], 0x0806);
            arp.extend_from_slice(&[0u8; 28]);
            expect(&s, &arp, XDP_PASS, stat::NON_IP);
        }

        #[test]
        fn ipv6_sources_share_a_budget_per_prefix() {
            require_privileges();
            let s = limited(limits(budget(1, 2), Budget::default()));
            let mut same_64 = V6_SRC;
            same_64[15] = 8;
            let mut other_64 = V6_SRC;
            other_64[7] = 1; // fd00:198:18:1::7
            expect(&s, &ipv6_frame(&[], V6_SRC), XDP_PASS, stat::PASSED);
            expect(&s, &ipv6_frame(&[], same_64), XDP_PASS, stat::PASSED);
            expect(
                &s,
                &ipv6_frame(&[], V6_SRC),
                XDP_DROP,
                stat::DROPPED_RATE_PACKET,
            );
            expect(
                &s,
                &ipv6_frame(&[], same_64),
                XDP_DROP,
                stat::DROPPED_RATE_PACKET,
            );
            expect(&s, &ipv6_frame(&[], other_64), XDP_PASS, stat::PASSED);

            // At /128 every address is on its own.
            let mut per_address = limits(budget(1, 1), Budget::default());
            per_address.v6_prefix_len = 128;
            // A fresh shield: the states above would carry over.
            let s = limited(per_address);
            expect(&s, &ipv6_frame(&[], V6_SRC), XDP_PASS, stat::PASSED);
            expect(&s, &ipv6_frame(&[], same_64), XDP_PASS, stat::PASSED);
            expect(
                &s,
                &ipv6_frame(&[], V6_SRC),
                XDP_DROP,
                stat::DROPPED_RATE_PACKET,
            );
        }

        #[test]
        fn dry_run_counts_rate_drops_and_passes() {
            require_privileges();
            let s = limited(limits(budget(1, 1), budget(1, 1)));
            s.maps().unwrap().set_dry_run(true).unwrap();
            expect(&s, &tcp4(V4_SRC, SYN), XDP_PASS, stat::PASSED);
            expect(&s, &tcp4(V4_SRC, SYN), XDP_PASS, stat::DRY_RUN_RATE_SYN);
            expect(&s, &tcp4(V4_SRC, ACK), XDP_PASS, stat::DRY_RUN_RATE_PACKET);
        }

        #[test]
        fn allowed_and_banned_sources_are_judged_before_budgets() {
            require_privileges();
            let s = limited(limits(budget(1, 1), Budget::default()));
            s.allow(cidr("198.18.0.0/24")).unwrap();
            for _ in 0..5 {
                expect(&s, &ipv4_frame(&[], V4_SRC), XDP_PASS, stat::ALLOWLISTED);
            }
            s.ban(ip("fd00:198:18::7"), None, reason::MANUAL).unwrap();
            for _ in 0..3 {
                expect(&s, &ipv6_frame(&[], V6_SRC), XDP_DROP, stat::DROPPED_BAN);
            }
        }

        #[test]
        fn a_source_that_stays_over_budget_is_reported_once_per_stretch() {
            require_privileges();
            let mut escalating = limits(Budget::default(), budget(1, 1));
            escalating.escalate_after_ns = 200_000_000;
            let mut s = limited(escalating);
            let mut reports = s
                .take_escalations()
                .expect("an active shield has a report queue");
            assert!(s.take_escalations().is_none(), "only one taker");
            let syn = tcp6(V6_SRC, SYN);
            expect(&s, &syn, XDP_PASS, stat::PASSED);
            // Over budget from here on; reported after 200 ms of it.
            let start = std::time::Instant::now();
            let mut report = None;
            // The housekeeper reads the ring every 100 ms; keep flooding.
            while start.elapsed() < Duration::from_secs(3) && report.is_none() {
                expect(&s, &syn, XDP_DROP, stat::DROPPED_RATE_SYN);
                std::thread::sleep(Duration::from_millis(20));
                report = reports.try_recv().ok();
            }
            let report = report.expect("an escalation within 3 s");
            assert!(
                start.elapsed() >= Duration::from_millis(190),
                "reported after {:?}, before the source had been over budget for 200 ms",
                start.elapsed()
            );
            assert_eq!(report.ip, ip("fd00:198:18::7"));
            assert_eq!((report.budget, report.dry_run), ("syn", false));
            // The same stretch is not reported again.
            for _ in 0..10 {
                expect(&s, &syn, XDP_DROP, stat::DROPPED_RATE_SYN);
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
            assert!(reports.try_recv().is_err(), "one report per stretch");
        }
    }

    /// SYN cookies answered in XDP: the SYN comes back as a SYN-ACK with
    /// the kernel's cookie (`XDP_TX`). That the kernel then accepts the ACK
    /// is shown end to end in `tests/syn_cookies.rs`.
    mod cookies {
        use reliw_common::{SynCookies, cookie_mode};

        use super::*;

        const XDP_TX: u32 = 3;
        const PORT: u16 = 8080;

        /// An untagged SYN from `src` to `dst:PORT`, with an MSS option
        /// (1460) when `mss`.
        fn syn(v6: bool, mss: bool) -> Vec<u8> {
            let tcp_len = if mss { 24 } else { 20 };
            let mut tcp = vec![0u8; tcp_len];
            tcp[0..2].copy_from_slice(&40001u16.to_be_bytes());
            tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
            tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
            tcp[12] = ((tcp_len / 4) as u8) << 4;
            tcp[13] = 0x02;
            tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
            if mss {
                tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
            }
            let mut f = ethernet(&[], if v6 { 0x86dd } else { 0x0800 });
            if v6 {
                let mut header = [0u8; 40];
                header[0] = 0x60;
                header[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
                header[6] = 6;
                header[7] = 64;
                header[8..24].copy_from_slice(&V6_SRC);
                header[24..40].copy_from_slice(&V6_DST);
                f.extend_from_slice(&header);
            } else {
                let mut header = [0u8; 20];
                header[0] = 0x45;
                header[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
                header[8] = 64;
                header[9] = 6;
                header[12..16].copy_from_slice(&V4_SRC);
                header[16..20].copy_from_slice(&[198, 18, 0, 1]);
                f.extend_from_slice(&header);
            }
            f.extend_from_slice(&tcp);
            f
        }

        const V6_DST: [u8; 16] = [0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

        fn cookies(mode: u32) -> Shield {
            let s = shield();
            let mut ports = [0u16; 8];
            ports[0] = PORT;
            s.maps()
                .unwrap()
                .set_syn_cookies(SynCookies {
                    mode,
                    above_per_cpu: 3,
                    ports,
                })
                .unwrap();
            s
        }

        /// Sums 16-bit words; a valid checksummed range sums to 0xffff.
        fn ones_sum(bytes: &[u8], mut acc: u32) -> u16 {
            for pair in bytes.chunks(2) {
                acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            }
            while acc >> 16 != 0 {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc as u16
        }

        /// Runs `frame` until a CPU has had its one SYN a second for the
        /// kernel (runs may land on any CPU); returns the SYN-ACK.
        fn answered(s: &Shield, frame: &[u8]) -> Vec<u8> {
            for _ in 0..64 {
                let (action, out) = s.test_run_frame(frame).unwrap().unwrap();
                if action == XDP_TX {
                    return out;
                }
                assert_eq!(action, XDP_PASS, "a SYN is answered or left to the kernel");
            }
            panic!("no SYN-ACK in 64 runs");
        }

        #[track_caller]
        fn assert_syn_ack(syn: &[u8], out: &[u8], v6: bool) {
            assert_eq!(&out[0..6], &syn[6..12], "back to the sender's MAC");
            assert_eq!(&out[6..12], &syn[0..6]);
            let (ip_len, tcp) = if v6 { (40, 54) } else { (20, 34) };
            assert_eq!(out.len(), tcp + 24, "IP, TCP and one MSS option");
            let (src, dst, pseudo_len) = if v6 {
                (&out[22..38], &out[38..54], 24u32)
            } else {
                (&out[26..30], &out[30..34], 24u32)
            };
            let (syn_src, syn_dst) = if v6 {
                (&syn[22..38], &syn[38..54])
            } else {
                (&syn[26..30], &syn[30..34])
            };
            assert_eq!((src, dst), (syn_dst, syn_src), "addresses swapped");
            if !v6 {
                assert_eq!(ones_sum(&out[14..34], 0), 0xffff, "IPv4 header checksum");
                assert_eq!(
                    u16::from_be_bytes([out[16], out[17]]),
                    44,
                    "IPv4 total length"
                );
            } else {
                assert_eq!(
                    u16::from_be_bytes([out[18], out[19]]),
                    24,
                    "IPv6 payload length"
                );
            }
            let _ = ip_len;
            let t = &out[tcp..];
            assert_eq!(&t[0..2], &syn[tcp + 2..tcp + 4], "ports swapped");
            assert_eq!(&t[2..4], &syn[tcp..tcp + 2]);
            let client_seq = u32::from_be_bytes(syn[tcp + 4..tcp + 8].try_into().unwrap());
            let ack = u32::from_be_bytes(t[8..12].try_into().unwrap());
            assert_eq!(ack, client_seq.wrapping_add(1), "acknowledges the SYN");
            assert_eq!(t[13], 0x12, "SYN and ACK");
            assert_eq!(t[12] >> 4, 6, "a 24-byte TCP header");
            assert_eq!(&t[20..22], &[2, 4], "an MSS option");
            let mss = u16::from_be_bytes([t[22], t[23]]);
            assert!(
                (536..=1460).contains(&mss),
                "MSS {mss} from the cookie table"
            );
            let mut pseudo = 6 + pseudo_len;
            for pair in src.chunks(2).chain(dst.chunks(2)) {
                pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
            }
            assert_eq!(ones_sum(t, pseudo), 0xffff, "TCP checksum");
        }

        #[test]
        fn syns_for_the_port_are_answered_with_a_cookie_in_both_families() {
            require_privileges();
            let s = cookies(cookie_mode::ON);
            for v6 in [false, true] {
                for mss in [true, false] {
                    let frame = syn(v6, mss);
                    let before = s.stats().unwrap().get(stat::SYN_COOKIE);
                    let out = answered(&s, &frame);
                    assert_syn_ack(&frame, &out, v6);
                    assert_eq!(s.stats().unwrap().get(stat::SYN_COOKIE), before + 1);
                }
            }
            // Two SYNs of the same flow get the same cookie (it is a
            // function of the flow and the time, not a counter).
            let frame = syn(false, true);
            let a = answered(&s, &frame);
            let b = answered(&s, &frame);
            assert_eq!(&a[38..42], &b[38..42], "same flow, same cookie");
        }

        #[test]
        fn other_ports_acks_and_the_off_mode_pass() {
            require_privileges();
            let s = cookies(cookie_mode::ON);
            let mut other_port = syn(false, true);
            other_port[36..38].copy_from_slice(&9999u16.to_be_bytes());
            expect(&s, &other_port, XDP_PASS, stat::PASSED);
            let mut ack = syn(false, true);
            ack[47] = 0x10;
            expect(&s, &ack, XDP_PASS, stat::PASSED);
            let mut tagged = syn(false, true);
            tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
            expect(&s, &tagged, XDP_PASS, stat::PASSED);
            let off = cookies(cookie_mode::OFF);
            for _ in 0..5 {
                expect(&off, &syn(false, true), XDP_PASS, stat::PASSED);
            }
        }

        #[test]
        fn dry_run_counts_the_cookie_it_would_send() {
            require_privileges();
            let s = cookies(cookie_mode::ON);
            s.maps().unwrap().set_dry_run(true).unwrap();
            let frame = syn(false, true);
            let mut dry = 0;
            for _ in 0..64 {
                let (action, delta) = run(&s, &frame);
                assert_eq!(action, XDP_PASS);
                dry += delta.get(stat::DRY_RUN_SYN_COOKIE);
            }
            assert!(dry > 0, "dry-run counted the cookies it would send");
            assert_eq!(s.stats().unwrap().get(stat::SYN_COOKIE), 0);
        }

        #[test]
        fn auto_answers_only_above_the_threshold() {
            require_privileges();
            // 3 SYNs a second per CPU: the fourth on a CPU turns cookies on.
            let s = cookies(cookie_mode::AUTO);
            let frame = syn(false, true);
            let (first, _) = run(&s, &frame);
            assert_eq!(first, XDP_PASS, "below the threshold the kernel answers");
            let out = answered(&s, &frame);
            assert_syn_ack(&frame, &out, false);
        }

        #[test]
        fn banned_and_rate_limited_sources_get_no_cookie() {
            require_privileges();
            let s = cookies(cookie_mode::ON);
            s.ban(ip("198.18.0.7"), None, reason::MANUAL).unwrap();
            expect(&s, &syn(false, true), XDP_DROP, stat::DROPPED_BAN);
        }
    }

    /// The program's aya-log diagnostics: silent by default, forwarded to the
    /// `log` crate when asked for.
    mod ebpf_log {
        use std::sync::Mutex;

        use super::*;

        static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

        struct Capture;
        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                LINES.lock().unwrap().push(record.args().to_string());
            }
            fn flush(&self) {}
        }

        fn captured(needle: &str) -> bool {
            LINES.lock().unwrap().iter().any(|l| l.contains(needle))
        }

        #[test]
        fn reports_malformed_headers_when_enabled() {
            require_privileges();
            log::set_logger(&Capture).unwrap();
            log::set_max_level(log::LevelFilter::Trace);
            let mut bad = ipv4_frame(&[], V4_SRC);
            bad[14] = 0x65; // IP version 6 in an IPv4 frame

            let chatty = Shield::start(&ShieldOptions {
                pin_root: None,
                ebpf_log: true,
                ..ShieldOptions::default()
            })
            .unwrap();
            assert_eq!(chatty.test_run(&bad, 1).unwrap().unwrap().0, XDP_PASS);
            assert!(
                reliw_tests::wait_until(Duration::from_secs(3), || captured(
                    "malformed ipv4 header: version 6"
                )),
                "no eBPF log line arrived: {:?}",
                LINES.lock().unwrap()
            );
        }
    }
}
