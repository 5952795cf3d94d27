//! `cargo xtask bench --only xdp`: the shield's cost per packet against
//! xdp-filter's, measured the same way in the same run.
//!
//! Both programs are loaded (generic mode) on the two ends of a veth pair in
//! a namespace made here, with the same source banned in each. Every case
//! then runs `bpftool prog run ... repeat N` on the same 60-byte frame, the
//! kernel's `BPF_PROG_TEST_RUN`: the mean cost of the program per packet,
//! with nothing else in the path. Rounds alternate the two programs and the
//! result is the median round; the ratio is reliw / xdp-filter. bpftool runs
//! pinned to CPU 1. Results go to `target/bench/xdp.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

const REPEAT: u32 = 1_000_000;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const BANNED_V4: [u8; 4] = [198, 18, 0, 7];
const FOREVER_V4: [u8; 4] = [198, 18, 0, 8];
const OTHER_V4: [u8; 4] = [198, 18, 0, 9];
const BANNED_V6: [u8; 16] = [0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const OTHER_V6: [u8; 16] = [0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

/// The namespace, pins and loaded programs; removed on drop, whatever failed.
struct Stage {
    netns: String,
    pin_root: PathBuf,
    reliw: PathBuf,
}

impl Stage {
    fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        // Only the network namespace: bpffs stays the host's, where both
        // tools pin.
        c.arg(format!("--net=/run/netns/{}", self.netns));
        c
    }

    fn reliw_shield(&self, args: &[&str]) -> Result<()> {
        let mut c = self.nsenter();
        c.arg(&self.reliw)
            .arg("shield")
            .arg("--pin-root")
            .arg(&self.pin_root)
            .args(args);
        crate::run_checked(c.stdout(Stdio::null()))
    }

    fn in_netns(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .nsenter()
            .arg(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(self.nsenter().args(["xdp-filter", "unload", "--all"]));
        quiet(
            self.nsenter()
                .arg(&self.reliw)
                .arg("shield")
                .arg("--pin-root")
                .arg(&self.pin_root)
                .args(["detach", "--purge"]),
        );
        quiet(Command::new("ip").args(["netns", "delete", &self.netns]));
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

const DST_V4: [u8; 4] = [198, 18, 0, 1];
const DST_V6: [u8; 16] = [0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A 60-byte Ethernet + IPv4 + TCP SYN frame from `src` to port 80.
fn syn_v4(src: [u8; 4]) -> Vec<u8> {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&DST_V4);
    syn_frame(0x0800, &ip)
}

/// A 74-byte Ethernet + IPv6 + TCP SYN frame from `src` to port 80.
fn syn_v6(src: [u8; 16]) -> Vec<u8> {
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&DST_V6);
    syn_frame(0x86dd, &ip)
}

/// Ethernet header, `ip`, and a TCP SYN to port 80, padded to Ethernet's
/// 60-byte minimum.
fn syn_frame(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    f.extend_from_slice(&tcp);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// The xdp program id attached to `dev` in the stage's namespace.
fn attached_id(stage: &Stage, dev: &str) -> Result<u64> {
    let text = stage.in_netns("bpftool", &["-j", "net", "show", "dev", dev])?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json.as_array()
        .and_then(|a| a.first())
        .and_then(|n| n["xdp"].as_array())
        .and_then(|x| x.first())
        .and_then(|p| p["id"].as_u64())
        .with_context(|| format!("no XDP program on {dev}: {text}"))
}

/// The newest loaded program called `name`: xdp-filter's rule program
/// (libxdp attaches it behind a dispatcher, which we leave out of the cost).
fn newest_program(name: &str) -> Result<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    json.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str() == Some(name))
        .filter_map(|p| p["id"].as_u64())
        .max()
        .with_context(|| format!("no loaded program named {name}"))
}

/// Mean ns per packet of program `id` on `frame`, checking its verdict.
fn cost(id: u64, frame: &Path, want: u32) -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", "1", "bpftool", "prog", "run", "id", &id.to_string()])
        .arg("data_in")
        .arg(frame)
        .args(["repeat", &REPEAT.to_string()])
        .output()
        .context("running bpftool prog run")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let field = |label: &str| -> Option<f64> {
        let rest = &text[text.find(label)? + label.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    let (Some(action), Some(ns)) = (field("Return value:"), field("duration (average):")) else {
        bail!("cannot read bpftool's output: {text}");
    };
    if action as u32 != want {
        bail!(
            "program {id} returned {action} on {}, expected {want}",
            frame.display()
        );
    }
    Ok(ns)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn run(root: &Path, rounds: usize) -> Result<(String, serde_json::Value)> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let stage = Stage {
        netns: format!("reliw-bench-xdp-{}", std::process::id()),
        pin_root: PathBuf::from(format!(
            "/sys/fs/bpf/reliw-bench-xdp-{}",
            std::process::id()
        )),
        reliw: root.join("target/release/reliw"),
    };
    crate::run_checked(Command::new("ip").args(["netns", "add", &stage.netns]))?;
    let ip = |args: &[&str]| {
        crate::run_checked(Command::new("ip").arg("-n").arg(&stage.netns).args(args))
    };
    ip(&["link", "add", "bxa", "type", "veth", "peer", "name", "bxb"])?;
    ip(&["link", "set", "bxa", "up"])?;
    ip(&["link", "set", "bxb", "up"])?;

    stage.reliw_shield(&["attach", "--iface", "bxa", "--mode", "skb", "--persist"])?;
    // A timed ban (what the WAF sets) reads the clock; a permanent one not.
    stage.reliw_shield(&["ban", "198.18.0.7", "--for", "1h"])?;
    stage.reliw_shield(&["ban", "198.18.0.8", "--for", "forever"])?;
    stage.reliw_shield(&["ban", "fd00:198:18::7", "--for", "1h"])?;
    let reliw_id = attached_id(&stage, "bxa")?;

    stage.in_netns(
        "xdp-filter",
        &["load", "bxb", "-m", "skb", "-f", "ipv4,ipv6", "-p", "allow"],
    )?;
    stage.in_netns("xdp-filter", &["ip", "198.18.0.7", "-m", "src"])?;
    stage.in_netns("xdp-filter", &["ip", "198.18.0.8", "-m", "src"])?;
    stage.in_netns("xdp-filter", &["ip", "fd00:198:18::7", "-m", "src"])?;
    let filter_id = newest_program("xdpfilt_alw_ip")?;

    let frames = dir.join("xdp-frames");
    std::fs::create_dir_all(&frames)?;
    let cases: [(&str, Vec<u8>, u32); 5] = [
        ("drop ipv4 (ban)", syn_v4(BANNED_V4), XDP_DROP),
        ("drop ipv4 (forever)", syn_v4(FOREVER_V4), XDP_DROP),
        ("pass ipv4", syn_v4(OTHER_V4), XDP_PASS),
        ("drop ipv6 (ban)", syn_v6(BANNED_V6), XDP_DROP),
        ("pass ipv6", syn_v6(OTHER_V6), XDP_PASS),
    ];
    println!(
        "bench xdp: {rounds} rounds x {REPEAT} runs per case, BPF_PROG_TEST_RUN on CPU 1; \
         reliw_shield id {reliw_id}, xdp-filter xdpfilt_alw_ip id {filter_id}"
    );
    let mut table = String::new();
    let mut results = Vec::new();
    let mut measure = |i: usize, what: &str, frame: &[u8], want: u32| -> Result<()> {
        let path = frames.join(format!("case{i}.bin"));
        std::fs::write(&path, frame)?;
        let (mut r, mut f) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Who goes first alternates, so drift hits both alike.
            if round % 2 == 0 {
                r.push(cost(reliw_id, &path, want)?);
                f.push(cost(filter_id, &path, want)?);
            } else {
                f.push(cost(filter_id, &path, want)?);
                r.push(cost(reliw_id, &path, want)?);
            }
            println!(
                "  {what:<24} round {round}: reliw {:>4} ns, xdp-filter {:>4} ns",
                r[round], f[round]
            );
        }
        let (rm, fm) = (median(&mut r), median(&mut f));
        let ratio = rm / fm;
        table.push_str(&format!(
            "xdp {what:<24} reliw {rm:>4} ns/packet  xdp-filter {fm:>4} ns/packet  ratio {ratio:.2}\n"
        ));
        results.push(serde_json::json!({
            "case": what, "reliw_ns": rm, "xdp_filter_ns": fm, "ratio": ratio,
        }));
        Ok(())
    };
    for (i, (what, frame, want)) in cases.iter().enumerate() {
        measure(i, what, frame, *want)?;
    }
    // What per-source budgets add to a packet that passes: both budgets on
    // (a SYN is charged to each), at rates no run here can exceed.
    stage.reliw_shield(&["rate", "--packets", "1000000000", "--syns", "1000000000"])?;
    measure(
        cases.len(),
        "pass ipv4 (budgets on)",
        &syn_v4(OTHER_V4),
        XDP_PASS,
    )?;
    let json = serde_json::json!({"repeat": REPEAT, "rounds": rounds, "results": results});
    std::fs::write(dir.join("xdp.json"), serde_json::to_string_pretty(&json)?)?;
    Ok((table, json))
}
