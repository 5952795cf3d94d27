//! End to end through real interfaces: two client namespaces and a server
//! namespace joined by veth pairs, the shield attached in native (driver)
//! mode on the server's veth ends by the real `reliw` binary, a TCP listener
//! behind it, and the CLI steering it from outside the namespaces.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use reliw_tests::{
    Listener, Netns, PinRoot, connects, require_privileges, unique, veth_link, wait_until,
};
use serde_json::Value;

/// Kills the foreground `reliw shield attach` if the test fails midway.
struct Attached(Child);

impl Attached {
    /// SIGTERM, as a service manager would stop it; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_child(&self.0);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.0.wait().unwrap().code()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// Tests that need root: `cargo xtask test` skips them by this module
/// name when `RELIW_SKIP_PRIVILEGED=1`.
mod privileged {
    use super::*;

    #[test]
    fn banned_and_denied_clients_are_dropped_others_are_not() {
        require_privileges();
        let server = Netns::new(unique("s"));
        let client_a = Netns::new(unique("a"));
        let client_b = Netns::new(unique("b"));
        let (srv_a, srv_b) = (unique("v"), unique("v"));
        veth_link(
            &client_a,
            &unique("v"),
            ("198.18.1.2", "fd00:198:18:1::2"),
            &server,
            &srv_a,
            ("198.18.1.1", "fd00:198:18:1::1"),
        );
        veth_link(
            &client_b,
            &unique("v"),
            ("198.18.2.2", "fd00:198:18:2::2"),
            &server,
            &srv_b,
            ("198.18.2.1", "fd00:198:18:2::1"),
        );
        let listener = Listener::start(&server);
        let port = listener.port;
        let pins = PinRoot::new("netns");

        let mut child = pins
            .command(
                Some(&server.name),
                &[
                    "--json",
                    "attach",
                    "--iface",
                    &srv_a,
                    "--iface",
                    &srv_b,
                    "--mode",
                    "drv",
                    "--interval",
                    "3600",
                ],
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let attached = Attached(child);
        let report: Value = serde_json::from_str(&first_line)
            .unwrap_or_else(|e| panic!("attach did not report ({e}): {first_line:?}"));
        for entry in report["attached"].as_array().unwrap() {
            assert_eq!(entry["mode"], "drv", "native mode on veth: {report}");
        }
        assert_eq!(report["attached"].as_array().unwrap().len(), 2);
        for iface in [&srv_a, &srv_b] {
            let link = std::process::Command::new("ip")
                .args(["-n", &server.name, "link", "show", iface])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&link.stdout);
            assert!(
                text.contains("xdp "),
                "{iface} should show a native xdp program: {text}"
            );
        }

        let a_v4 = "198.18.1.1";
        let a_v6 = "fd00:198:18:1::1";
        let b_v4 = "198.18.2.1";
        let b_v6 = "fd00:198:18:2::1";
        let mut expected_accepts = 0;
        let mut connect_ok = |ns: &Netns, ip: &str| {
            assert!(
                connects(ns, ip, port),
                "{ip} from {} should connect",
                ns.name
            );
            expected_accepts += 1;
        };
        let stats = || pins.shield(None, &["--json", "stats"]).json();

        // Nothing banned: everyone gets through.
        for (ns, ip) in [
            (&client_a, a_v4),
            (&client_a, a_v6),
            (&client_b, b_v4),
            (&client_b, b_v6),
        ] {
            connect_ok(ns, ip);
        }

        // Ban client A on both families: A is dropped, B is untouched.
        pins.shield(None, &["ban", "198.18.1.2", "--for", "10m"])
            .ok();
        pins.shield(None, &["ban", "fd00:198:18:1::2", "--for", "10m"])
            .ok();
        let before = stats();
        const ATTEMPTS: u64 = 3;
        for _ in 0..ATTEMPTS {
            assert!(
                !connects(&client_a, a_v4, port),
                "banned IPv4 client connected"
            );
            assert!(
                !connects(&client_a, a_v6, port),
                "banned IPv6 client connected"
            );
        }
        connect_ok(&client_b, b_v4);
        connect_ok(&client_b, b_v6);
        let after = stats();
        // One SYN per attempt (the connect timeout is below the SYN retransmit).
        assert_eq!(
            counter(&after, "dropped_ban") - counter(&before, "dropped_ban"),
            2 * ATTEMPTS,
            "dropped_ban should count exactly the banned SYNs: {before} -> {after}"
        );
        assert_eq!(
            counter(&after, "dropped_cidr"),
            counter(&before, "dropped_cidr")
        );

        // Unban restores A.
        pins.shield(None, &["unban", "198.18.1.2"]).ok();
        pins.shield(None, &["unban", "fd00:198:18:1::2"]).ok();
        connect_ok(&client_a, a_v4);
        connect_ok(&client_a, a_v6);

        // A deny CIDR over A's networks blocks only A.
        pins.shield(None, &["deny", "198.18.1.0/24"]).ok();
        pins.shield(None, &["deny", "fd00:198:18:1::/64"]).ok();
        let before = stats();
        assert!(
            !connects(&client_a, a_v4, port),
            "denied IPv4 client connected"
        );
        assert!(
            !connects(&client_a, a_v6, port),
            "denied IPv6 client connected"
        );
        connect_ok(&client_b, b_v4);
        connect_ok(&client_b, b_v6);
        let after = stats();
        assert_eq!(
            counter(&after, "dropped_cidr") - counter(&before, "dropped_cidr"),
            2
        );
        assert_eq!(
            counter(&after, "dropped_ban"),
            counter(&before, "dropped_ban")
        );
        pins.shield(None, &["undeny", "198.18.1.0/24"]).ok();
        pins.shield(None, &["undeny", "fd00:198:18:1::/64"]).ok();

        // An allow CIDR overrides a ban.
        pins.shield(None, &["ban", "198.18.1.2", "--for", "forever"])
            .ok();
        pins.shield(None, &["allow", "198.18.1.0/24"]).ok();
        let before = stats();
        connect_ok(&client_a, a_v4);
        let after = stats();
        assert!(
            counter(&after, "allowlisted") > counter(&before, "allowlisted"),
            "allowlisted packets should be counted: {before} -> {after}"
        );
        assert_eq!(
            counter(&after, "dropped_ban"),
            counter(&before, "dropped_ban")
        );

        // Every connection that should have got through reached the listener.
        assert!(
            wait_until(Duration::from_secs(5), || listener.accepted()
                == expected_accepts),
            "listener accepted {} of {expected_accepts}",
            listener.accepted()
        );

        // SIGTERM detaches cleanly; the interfaces are left without a program.
        assert_eq!(attached.stop(), Some(0), "attach should exit 0 on SIGTERM");
        for iface in [&srv_a, &srv_b] {
            let link = std::process::Command::new("ip")
                .args(["-n", &server.name, "link", "show", iface])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&link.stdout);
            assert!(!text.contains("xdp"), "{iface} still has a program: {text}");
        }
        // The pinned maps outlive the process: the ban is still there.
        let listing = pins.shield(None, &["--json", "list"]).json();
        assert_eq!(listing["bans"][0]["ip"], "198.18.1.2", "{listing}");
    }
}
