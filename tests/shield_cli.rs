//! `reliw shield ...` against real pinned maps: every subcommand, its text
//! and JSON output, and its error paths.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reliw_tests::{Netns, PinRoot, require_privileges, sh, unique};
use serde_json::Value;

/// A namespace with a veth pair to attach to, so tests never touch the
/// host's interfaces.
fn sandbox() -> (Netns, String) {
    let ns = Netns::new(unique("c"));
    let iface = unique("v");
    let peer = unique("v");
    ns.ip(&["link", "add", &iface, "type", "veth", "peer", "name", &peer]);
    ns.ip(&["link", "set", &iface, "up"]);
    ns.ip(&["link", "set", &peer, "up"]);
    (ns, iface)
}

fn xdp_attached(ns: &Netns, iface: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "link", "show", iface])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn every_command_says_so_when_nothing_is_pinned() {
    let pins = PinRoot::new("none");
    for args in [
        &["status"][..],
        &["stats"],
        &["list"],
        &["ban", "198.18.0.1"],
        &["unban", "198.18.0.1"],
        &["deny", "198.18.0.0/24"],
        &["undeny", "198.18.0.0/24"],
        &["allow", "198.18.0.0/24"],
        &["disallow", "198.18.0.0/24"],
        &["dry-run", "on"],
        &["sweep"],
    ] {
        pins.shield(None, args).fails_with("no shield maps pinned");
    }
}

/// Tests that need root: `cargo xtask test` skips them by this module
/// name when `RELIW_SKIP_PRIVILEGED=1`.
mod privileged {
    use super::*;

    #[test]
    fn every_subcommand_works_on_real_pins() {
        require_privileges();
        let (ns, iface) = sandbox();
        let pins = PinRoot::new("cli");

        // attach --persist: pinned link, program stays after the command exits.
        let attached = pins
            .shield(
                Some(&ns.name),
                &[
                    "--json",
                    "attach",
                    "--persist",
                    "--iface",
                    &iface,
                    "--mode",
                    "skb",
                ],
            )
            .json();
        assert_eq!(attached["attached"][0]["iface"], iface.as_str());
        assert_eq!(attached["attached"][0]["mode"], "skb");
        assert!(xdp_attached(&ns, &iface), "program should stay attached");

        let status = pins.shield(None, &["--json", "status"]).json();
        assert_eq!(status["persisted_links"], serde_json::json!([iface]));
        assert!(
            !status["loaded_program_ids"].as_array().unwrap().is_empty(),
            "{status}"
        );
        assert_eq!(status["dry_run"], false);
        assert_eq!(status["layout_version"], reliw_common::LAYOUT_VERSION);
        let text = pins.shield(None, &["status"]).ok().stdout.clone();
        assert!(text.contains(&format!("persisted     {iface}")), "{text}");

        // ban / list / unban
        let ban = pins
            .shield(
                None,
                &[
                    "--json",
                    "ban",
                    "198.18.0.10",
                    "--for",
                    "10m",
                    "--reason",
                    "waf",
                ],
            )
            .json();
        assert_eq!(ban["ip"], "198.18.0.10");
        assert_eq!(ban["reason"], "waf");
        let text = pins
            .shield(None, &["ban", "fd00:198:18::10", "--for", "forever"])
            .ok()
            .stdout
            .clone();
        assert_eq!(
            text.trim(),
            "banned fd00:198:18::10 until unbanned (manual)"
        );
        let list = pins.shield(None, &["--json", "list"]).json();
        let bans = list["bans"].as_array().unwrap();
        assert_eq!(bans.len(), 2, "{list}");
        assert_eq!(bans[0]["ip"], "198.18.0.10");
        let left = bans[0]["expires_in_s"].as_u64().unwrap();
        assert!((590..=600).contains(&left), "expires_in_s {left}");
        assert_eq!(bans[1]["ip"], "fd00:198:18::10");
        assert_eq!(bans[1]["expires_in_s"], Value::Null);
        let text = pins.shield(None, &["list"]).ok().stdout.clone();
        assert!(
            text.contains("198.18.0.10") && text.contains("waf") && text.contains("forever"),
            "{text}"
        );
        assert_eq!(
            pins.shield(None, &["unban", "198.18.0.10"])
                .ok()
                .stdout
                .trim(),
            "unbanned 198.18.0.10"
        );
        pins.shield(None, &["unban", "198.18.0.10"])
            .fails_with("198.18.0.10 was not banned");

        // deny / allow and their removal; CIDRs are normalised.
        assert_eq!(
            pins.shield(None, &["deny", "198.18.7.9/24"])
                .ok()
                .stdout
                .trim(),
            "denied 198.18.7.0/24"
        );
        pins.shield(None, &["deny", "fd00:198:18:7::/64"]).ok();
        pins.shield(None, &["allow", "198.18.8.0/25"]).ok();
        let list = pins.shield(None, &["--json", "list"]).json();
        let cidrs = |key: &str| -> Vec<String> {
            list[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["cidr"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(cidrs("deny"), ["198.18.7.0/24", "fd00:198:18:7::/64"]);
        assert_eq!(cidrs("allow"), ["198.18.8.0/25"]);
        pins.shield(None, &["undeny", "198.18.7.0/24"]).ok();
        pins.shield(None, &["disallow", "198.18.8.0/25"]).ok();
        pins.shield(None, &["disallow", "198.18.8.0/25"])
            .fails_with("198.18.8.0/25 was not allowed");
        pins.shield(None, &["undeny", "198.18.9.0/24"])
            .fails_with("198.18.9.0/24 was not denied");
        let list = pins.shield(None, &["--json", "list"]).json();
        assert_eq!(list["deny"].as_array().unwrap().len(), 1);
        assert!(list["allow"].as_array().unwrap().is_empty());

        // dry-run
        assert_eq!(
            pins.shield(None, &["dry-run", "on"]).ok().stdout.trim(),
            "dry-run on"
        );
        assert_eq!(
            pins.shield(None, &["--json", "status"]).json()["dry_run"],
            true
        );
        pins.shield(None, &["dry-run", "off"]).ok();
        assert_eq!(
            pins.shield(None, &["--json", "status"]).json()["dry_run"],
            false
        );

        // stats: every counter, by name
        let stats = pins.shield(None, &["--json", "stats"]).json();
        for name in reliw_common::stat::NAMES {
            assert!(stats[name].is_u64(), "{name} missing: {stats}");
        }
        let text = pins.shield(None, &["stats"]).ok().stdout.clone();
        assert_eq!(text.lines().count(), reliw_common::stat::NAMES.len());

        // Expired bans: hidden by default, shown with --all, removed by sweep.
        pins.shield(None, &["ban", "198.18.0.11", "--for", "1s"])
            .ok();
        std::thread::sleep(Duration::from_millis(1200));
        let list = pins.shield(None, &["--json", "list"]).json();
        assert!(
            list["bans"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["ip"] != "198.18.0.11")
        );
        let all = pins.shield(None, &["--json", "list", "--all"]).json();
        let expired: Vec<&Value> = all["bans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["expired"] == true)
            .collect();
        assert_eq!(expired.len(), 1, "{all}");
        assert_eq!(pins.shield(None, &["--json", "sweep"]).json()["removed"], 1);
        assert_eq!(pins.shield(None, &["--json", "sweep"]).json()["removed"], 0);

        // detach: the program goes, the maps (and the ban) stay.
        let detached = pins
            .shield(None, &["--json", "detach", "--iface", &iface])
            .json();
        assert_eq!(detached["detached"], serde_json::json!([iface]));
        assert!(
            !xdp_attached(&ns, &iface),
            "detach should remove the program"
        );
        pins.shield(None, &["detach", "--iface", &iface])
            .fails_with("no persisted reliw link");

        // A new attach reuses the pins: bans survive a restart.
        pins.shield(Some(&ns.name), &["attach", "--persist", "--iface", &iface])
            .ok();
        let list = pins.shield(None, &["--json", "list"]).json();
        assert_eq!(list["bans"][0]["ip"], "fd00:198:18::10", "{list}");
        // --purge refuses nothing here: detach first, then the maps go.
        let purged = pins.shield(None, &["--json", "detach", "--purge"]).json();
        assert_eq!(purged["purged"], true);
        assert!(!xdp_attached(&ns, &iface));
        pins.shield(None, &["stats"])
            .fails_with("no shield maps pinned");
    }

    #[test]
    fn bad_input_gets_one_line_and_a_failure_status() {
        require_privileges();
        let (ns, iface) = sandbox();
        let pins = PinRoot::new("bad");
        pins.shield(Some(&ns.name), &["attach", "--persist", "--iface", &iface])
            .ok();
        pins.shield(None, &["ban", "300.1.1.1"])
            .fails_with("'300.1.1.1' is not an IP address");
        pins.shield(None, &["ban", "example.com"])
            .fails_with("is not an IP address");
        pins.shield(None, &["unban", "1.2.3"])
            .fails_with("is not an IP address");
        pins.shield(None, &["ban", "198.18.0.1", "--for", "10x"])
            .fails_with("'10x' is not a duration");
        pins.shield(None, &["ban", "198.18.0.1", "--for", "0"])
            .fails_with("is not a duration");
        pins.shield(None, &["ban", "198.18.0.1", "--reason", "spite"])
            .fails_with("'spite' is not a ban reason");
        pins.shield(None, &["deny", "198.18.0.0/33"])
            .fails_with("invalid prefix length");
        pins.shield(None, &["allow", "fd00::/129"])
            .fails_with("invalid prefix length");
        pins.shield(None, &["deny", "nope/8"])
            .fails_with("'nope/8' is not an IP address");
        pins.shield(None, &["undeny", ""])
            .fails_with("is not an IP address");
        pins.shield(Some(&ns.name), &["attach", "--iface", "no-such-if0"])
            .fails_with("no-such-if0");
        pins.shield(
            Some(&ns.name),
            &["attach", "--iface", &iface, "--mode", "fast"],
        )
        .fails_with("'fast' is not an XDP mode");
        // Attaching twice to one interface says who holds it.
        pins.shield(
            Some(&ns.name),
            &[
                "attach",
                "--iface",
                &iface,
                "--mode",
                "skb",
                "--exit-after",
                "1",
            ],
        )
        .fails_with("reliw shield detach");
        // --purge refuses while a link is persisted... by detaching it first.
        let list = pins.shield(None, &["--json", "list"]).json();
        assert!(
            list["bans"].as_array().unwrap().is_empty(),
            "failed commands changed state: {list}"
        );
        pins.shield(None, &["detach"]).ok();
    }

    /// `shield rate` shows the budgets, changes only what it names, and
    /// refuses what the program could not apply.
    #[test]
    fn rate_shows_and_changes_the_budgets() {
        require_privileges();
        let (ns, iface) = sandbox();
        let pins = PinRoot::new("rate");
        pins.shield(Some(&ns.name), &["attach", "--persist", "--iface", &iface])
            .ok();
        let view = pins.shield(None, &["--json", "rate"]).ok().json();
        assert_eq!(view["enabled"], false, "off until a rate is set: {view}");
        let view = pins
            .shield(
                None,
                &["--json", "rate", "--syns", "20", "--syn-burst", "40"],
            )
            .ok()
            .json();
        assert_eq!(
            (
                &view["syns_per_second"],
                &view["syn_burst"],
                &view["ipv6_prefix"]
            ),
            (&20.into(), &40.into(), &64.into()),
            "{view}"
        );
        assert_eq!(view["escalate_after_seconds"], 10, "{view}");
        // A packet budget added later keeps the SYN budget as it was.
        let view = pins
            .shield(None, &["--json", "rate", "--packets", "1000"])
            .ok()
            .json();
        assert_eq!(
            (
                &view["syns_per_second"],
                &view["syn_burst"],
                &view["packets_per_second"]
            ),
            (&20.into(), &40.into(), &1000.into()),
            "{view}"
        );
        let view = pins
            .shield(
                None,
                &[
                    "--json",
                    "rate",
                    "--escalate-after",
                    "0",
                    "--ipv6-prefix",
                    "56",
                ],
            )
            .ok()
            .json();
        assert_eq!(
            (&view["escalate_after_seconds"], &view["ipv6_prefix"]),
            (&0.into(), &56.into()),
            "{view}"
        );
        assert_eq!(view["syns_per_second"], 20, "{view}");
        pins.shield(None, &["rate", "--ipv6-prefix", "0"])
            .fails_with("--ipv6-prefix must be between 1 and 128");
        pins.shield(None, &["rate", "--syn-burst", "0"])
            .fails_with("a burst must be greater than 0");
        let text = pins.shield(None, &["rate"]).ok().stdout.clone();
        assert!(text.contains("syns          20/s, burst 40"), "{text}");
        pins.shield(None, &["detach"]).ok();
    }

    #[test]
    fn a_pin_with_another_layout_is_refused() {
        require_privileges();
        let (ns, iface) = sandbox();
        let pins = PinRoot::new("stale");
        // Real pins first, then the ban map replaced by one of another shape,
        // as an older or newer build with the same layout number would leave.
        pins.shield(Some(&ns.name), &["attach", "--persist", "--iface", &iface])
            .ok();
        pins.shield(None, &["detach"]).ok();
        let dir = pins
            .path()
            .join(format!("v{}", reliw_common::LAYOUT_VERSION));
        let bans = dir.join(reliw_common::maps::BANS);
        std::fs::remove_file(&bans).unwrap();
        sh(&[
            "bpftool",
            "map",
            "create",
            bans.to_str().unwrap(),
            "type",
            "hash",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "16",
            "name",
            "stale",
        ]);
        pins.shield(
            Some(&ns.name),
            &["attach", "--iface", &iface, "--exit-after", "1"],
        )
        .fails_with("stale pin");
        assert!(
            !xdp_attached(&ns, &iface),
            "a refused start must not attach"
        );
        pins.shield(None, &["stats"]).fails_with("stale pin");
        pins.shield(None, &["ban", "198.18.0.1"])
            .fails_with("stale pin");
        // --purge clears the way; the next start pins fresh maps.
        pins.shield(None, &["detach", "--purge"]).ok();
        pins.shield(Some(&ns.name), &["attach", "--persist", "--iface", &iface])
            .ok();
        pins.shield(None, &["ban", "198.18.0.1"]).ok();
        pins.shield(None, &["detach", "--purge"]).ok();
    }
}
