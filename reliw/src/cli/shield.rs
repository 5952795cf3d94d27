//! `reliw shield ...`: the shield's CLI. All commands but `attach` work on
//! the pinned maps, so they act on a running server from another shell.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::json;

use crate::shield::addr::{Cidr, parse_duration};
use crate::shield::{
    AttachMode, DEFAULT_PIN_ROOT, Listing, Shield, ShieldMaps, ShieldOptions, Stats, loader,
};

#[derive(Debug, Args)]
pub struct ShieldArgs {
    /// Where the shield's maps and links are pinned (a bpffs directory).
    #[arg(long, global = true, env = "RELIW_PIN_ROOT", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// Print JSON for tools instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ShieldCommand,
}

#[derive(Debug, Subcommand)]
enum ShieldCommand {
    /// Pins, loaded programs, persisted links, dry-run and rule counts.
    Status,
    /// Packet counters, summed over CPUs.
    Stats,
    /// Bans and allow/deny rules.
    List {
        /// Also show expired bans not yet swept.
        #[arg(long)]
        all: bool,
    },
    /// Drop all traffic from an address.
    Ban {
        ip: String,
        /// How long: 90s, 10m, 2h, 1d, or forever.
        #[arg(long = "for", default_value = "10m")]
        duration: String,
        /// manual, waf, rate_limit or peer.
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Lift a ban.
    Unban { ip: String },
    /// Drop all traffic from a network.
    Deny { cidr: String },
    /// Remove a deny rule.
    Undeny { cidr: String },
    /// Always pass a network, whatever bans or deny rules say.
    Allow { cidr: String },
    /// Remove an allow rule.
    Disallow { cidr: String },
    /// Count what would be dropped, but pass everything (`on`), or enforce (`off`).
    DryRun { state: OnOff },
    /// Remove expired bans now.
    Sweep,
    /// Show the per-source budgets; with options, change what they name
    /// (the rest stays) until the next server start, which sets
    /// `shield.rate_limit` from its config.
    Rate {
        /// Packets per second per source (0: no packet budget).
        #[arg(long)]
        packets: Option<u64>,
        /// Packets a source may send at once (default: one second's worth).
        #[arg(long)]
        packet_burst: Option<u64>,
        /// SYNs per second per source (0: no SYN budget).
        #[arg(long)]
        syns: Option<u64>,
        /// SYNs a source may send at once (default: one second's worth).
        #[arg(long)]
        syn_burst: Option<u64>,
        /// IPv6 sources share a budget per prefix of this length (64).
        #[arg(long)]
        ipv6_prefix: Option<u32>,
        /// Seconds over budget before a source is banned (0: never; 10).
        #[arg(long)]
        escalate_after: Option<u64>,
    },
    /// Load the shield and attach it to interfaces. In the foreground it
    /// prints counters until interrupted, then detaches; with --persist it
    /// pins the links and exits, leaving the program attached.
    Attach {
        /// Interface to attach to (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// skb (generic), drv (native) or auto (native, else generic).
        #[arg(long, default_value = "auto")]
        mode: String,
        /// Start in dry-run mode.
        #[arg(long)]
        dry_run: bool,
        /// Pin the links and exit; `reliw shield detach` removes them.
        #[arg(long)]
        persist: bool,
        /// Seconds between counter lines in the foreground.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Stop after this many seconds (default: until SIGINT/SIGTERM).
        #[arg(long = "exit-after")]
        exit_after: Option<u64>,
        /// Forward the XDP program's diagnostics to the log.
        #[arg(long)]
        ebpf_log: bool,
    },
    /// Remove persisted links (all, or --iface), detaching the program.
    Detach {
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Also remove the pinned maps: bans, rules and counters are lost.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

pub(super) fn run(args: ShieldArgs) -> Result<(), String> {
    let dir = loader::pin_dir(&args.pin_root);
    let out = Output { json: args.json };
    match args.command {
        ShieldCommand::Status => status(&dir, out),
        ShieldCommand::Stats => {
            let stats = open(&dir)?.stats().map_err(err)?;
            out.print(&stats, || format_stats(&stats));
            Ok(())
        }
        ShieldCommand::List { all } => {
            let mut listing = open(&dir)?.list().map_err(err)?;
            if !all {
                listing.bans.retain(|b| !b.expired);
            }
            let book = crate::bans::read_book(&crate::bans::book_path(&dir));
            for ban in &mut listing.bans {
                if let Some(entry) = book.get(&ban.ip) {
                    ban.origin = Some(entry.node.clone());
                    ban.rule = entry.rule.clone();
                }
            }
            out.print(&listing, || format_listing(&listing));
            Ok(())
        }
        ShieldCommand::Ban {
            ip,
            duration,
            reason,
        } => {
            let ip = parse_ip(&ip)?;
            let duration = parse_duration(&duration).map_err(err)?;
            let reason = reliw_common::reason::from_name(&reason).ok_or_else(|| {
                format!("'{reason}' is not a ban reason (manual, waf, rate_limit, peer)")
            })?;
            let record = open(&dir)?.ban(ip, duration, reason).map_err(err)?;
            let until = match record.expires_in_s {
                Some(s) => format!("for {}", human_duration(s)),
                None => String::from("until unbanned"),
            };
            out.print(&record, || {
                format!("banned {ip} {until} ({})", record.reason)
            });
            Ok(())
        }
        ShieldCommand::Unban { ip } => {
            let ip = parse_ip(&ip)?;
            removed(
                out,
                open(&dir)?.unban(ip).map_err(err)?,
                &ip.to_string(),
                "banned",
            )
        }
        ShieldCommand::Deny { cidr } => {
            let cidr = parse_cidr(&cidr)?;
            open(&dir)?.deny(cidr).map_err(err)?;
            out.print(&json!({"denied": cidr.to_string()}), || {
                format!("denied {cidr}")
            });
            Ok(())
        }
        ShieldCommand::Undeny { cidr } => {
            let cidr = parse_cidr(&cidr)?;
            removed(
                out,
                open(&dir)?.undeny(cidr).map_err(err)?,
                &cidr.to_string(),
                "denied",
            )
        }
        ShieldCommand::Allow { cidr } => {
            let cidr = parse_cidr(&cidr)?;
            open(&dir)?.allow(cidr).map_err(err)?;
            out.print(&json!({"allowed": cidr.to_string()}), || {
                format!("allowed {cidr}")
            });
            Ok(())
        }
        ShieldCommand::Disallow { cidr } => {
            let cidr = parse_cidr(&cidr)?;
            removed(
                out,
                open(&dir)?.disallow(cidr).map_err(err)?,
                &cidr.to_string(),
                "allowed",
            )
        }
        ShieldCommand::DryRun { state } => {
            let on = matches!(state, OnOff::On);
            open(&dir)?.set_dry_run(on).map_err(err)?;
            out.print(&json!({"dry_run": on}), || {
                format!("dry-run {}", on_off(on))
            });
            Ok(())
        }
        ShieldCommand::Rate {
            packets,
            packet_burst,
            syns,
            syn_burst,
            ipv6_prefix,
            escalate_after,
        } => {
            let mut maps = open(&dir)?;
            let changes = [packets, packet_burst, syns, syn_burst, escalate_after];
            if changes.iter().any(Option::is_some) || ipv6_prefix.is_some() {
                let now = crate::shield::rate::view(&maps.rate_limits().map_err(err)?);
                let ipv6_prefix =
                    ipv6_prefix.unwrap_or(if now.enabled { now.ipv6_prefix } else { 64 });
                if !(1..=128).contains(&ipv6_prefix) {
                    return Err(String::from("--ipv6-prefix must be between 1 and 128"));
                }
                if packet_burst == Some(0) || syn_burst == Some(0) {
                    return Err(String::from("a burst must be greater than 0"));
                }
                // A burst is kept with its rate, and reset with a new one.
                let keep =
                    |rate: Option<u64>, burst: Option<u64>, now_rate: u64, now_burst: u64| {
                        burst.or((rate.is_none() && now_rate > 0).then_some(now_burst))
                    };
                let config = crate::config::ShieldRateLimit {
                    packets_per_second: packets.unwrap_or(now.packets_per_second),
                    packet_burst: keep(
                        packets,
                        packet_burst,
                        now.packets_per_second,
                        now.packet_burst,
                    ),
                    syns_per_second: syns.unwrap_or(now.syns_per_second),
                    syn_burst: keep(syns, syn_burst, now.syns_per_second, now.syn_burst),
                    ipv6_prefix,
                    escalate_after_seconds: escalate_after.unwrap_or(if now.enabled {
                        now.escalate_after_seconds
                    } else {
                        10
                    }),
                    ban_seconds: None,
                };
                let plan = crate::shield::rate::plan(&config, crate::shield::clock::tick());
                maps.set_rate_limits(plan.limits).map_err(err)?;
            }
            let view = crate::shield::rate::view(&maps.rate_limits().map_err(err)?);
            out.print(&view, || format_rate(&view));
            Ok(())
        }
        ShieldCommand::Sweep => {
            let n = open(&dir)?.sweep_expired().map_err(err)?;
            out.print(&json!({"removed": n}), || {
                format!("removed {n} expired bans")
            });
            Ok(())
        }
        ShieldCommand::Attach {
            ifaces,
            mode,
            dry_run,
            persist,
            interval,
            exit_after,
            ebpf_log,
        } => {
            let options = ShieldOptions {
                interfaces: ifaces,
                mode: mode.parse::<AttachMode>()?,
                dry_run: dry_run.then_some(true),
                pin_root: Some(args.pin_root.clone()),
                ebpf_log,
                ..ShieldOptions::default()
            };
            attach(&options, persist, interval, exit_after, out)
        }
        ShieldCommand::Detach { ifaces, purge } => {
            let detached = loader::detach_persisted(&dir, &ifaces).map_err(err)?;
            if purge {
                loader::purge(&dir).map_err(err)?;
            }
            out.print(&json!({"detached": detached, "purged": purge}), || {
                let mut text = if detached.is_empty() {
                    String::from("no persisted links")
                } else {
                    format!("detached from {}", detached.join(", "))
                };
                if purge {
                    text.push_str(&format!("; removed the pinned maps in {}", dir.display()));
                }
                text
            });
            Ok(())
        }
    }
}

#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn print<T: Serialize>(self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string(value) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("reliw: cannot encode JSON: {e}"),
            }
        } else {
            println!("{}", human());
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn open(dir: &Path) -> Result<ShieldMaps, String> {
    ShieldMaps::open_pinned(dir).map_err(err)
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| format!("'{text}' is not an IP address"))
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    text.parse::<Cidr>().map_err(err)
}

fn removed(out: Output, removed: bool, what: &str, state: &str) -> Result<(), String> {
    if !removed {
        return Err(format!("{what} was not {state}"));
    }
    let verb = match state {
        "banned" => "unbanned",
        "denied" => "undenied",
        _ => "disallowed",
    };
    out.print(&json!({"removed": what}), || format!("{verb} {what}"));
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn human_duration(seconds: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut left = seconds;
    let mut text = String::new();
    for (size, unit) in units {
        if left >= size {
            text.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    if text.is_empty() {
        String::from("0s")
    } else {
        text
    }
}

fn format_rate(view: &crate::shield::rate::View) -> String {
    if !view.enabled {
        return String::from("rate limits off");
    }
    let budget = |rate: u64, burst: u64| {
        if rate == 0 {
            String::from("off")
        } else {
            format!("{rate}/s, burst {burst}")
        }
    };
    let escalate = if view.escalate_after_seconds == 0 {
        String::from("never")
    } else {
        format!("after {}", human_duration(view.escalate_after_seconds))
    };
    [
        format!(
            "packets       {}",
            budget(view.packets_per_second, view.packet_burst)
        ),
        format!(
            "syns          {}",
            budget(view.syns_per_second, view.syn_burst)
        ),
        format!("ipv6 prefix   /{}", view.ipv6_prefix),
        format!("ban           {escalate} over budget"),
    ]
    .join("\n")
}

fn format_stats(stats: &Stats) -> String {
    stats
        .named()
        .map(|(name, value)| format!("{name:<21}{value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_listing(listing: &Listing) -> String {
    let mut lines = Vec::new();
    lines.push(format!("bans ({})", listing.bans.len()));
    for ban in &listing.bans {
        let left = match (ban.expired, ban.expires_in_s) {
            (true, _) => String::from("expired"),
            (false, Some(s)) => format!("{} left", human_duration(s)),
            (false, None) => String::from("forever"),
        };
        let mut line = format!("  {:<40} {:<11} {:<14}", ban.ip, ban.reason, left);
        if let Some(origin) = &ban.origin {
            line.push_str(&format!(" from {origin}"));
        }
        if let Some(rule) = &ban.rule {
            line.push_str(&format!(" rule {rule:?}"));
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.push(format!("allow ({})", listing.allow.len()));
    lines.extend(listing.allow.iter().map(|r| format!("  {}", r.cidr)));
    lines.push(format!("deny ({})", listing.deny.len()));
    lines.extend(listing.deny.iter().map(|r| format!("  {}", r.cidr)));
    lines.join("\n")
}

#[derive(Serialize)]
struct StatusReport {
    pin_dir: PathBuf,
    layout_version: u32,
    loaded_program_ids: Vec<u32>,
    persisted_links: Vec<String>,
    dry_run: bool,
    bans: usize,
    expired_bans: usize,
    allow_rules: usize,
    deny_rules: usize,
}

fn status(dir: &Path, out: Output) -> Result<(), String> {
    let maps = open(dir)?;
    let listing = maps.list().map_err(err)?;
    let loaded_program_ids = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(reliw_common::PROGRAM_NAME))
        .map(|p| p.id())
        .collect();
    let report = StatusReport {
        pin_dir: dir.to_owned(),
        layout_version: reliw_common::LAYOUT_VERSION,
        loaded_program_ids,
        persisted_links: loader::persisted_links(dir),
        dry_run: maps.dry_run().map_err(err)?,
        bans: listing.bans.iter().filter(|b| !b.expired).count(),
        expired_bans: listing.bans.iter().filter(|b| b.expired).count(),
        allow_rules: listing.allow.len(),
        deny_rules: listing.deny.len(),
    };
    out.print(&report, || {
        let ids: Vec<String> = report
            .loaded_program_ids
            .iter()
            .map(u32::to_string)
            .collect();
        [
            format!(
                "pins          {} (layout v{})",
                dir.display(),
                report.layout_version
            ),
            format!("programs      {} loaded [{}]", ids.len(), ids.join(", ")),
            format!(
                "persisted     {}",
                if report.persisted_links.is_empty() {
                    String::from("none")
                } else {
                    report.persisted_links.join(", ")
                }
            ),
            format!("dry-run       {}", on_off(report.dry_run)),
            format!(
                "bans          {} ({} expired)",
                report.bans, report.expired_bans
            ),
            format!("allow rules   {}", report.allow_rules),
            format!("deny rules    {}", report.deny_rules),
        ]
        .join("\n")
    });
    Ok(())
}

fn attach(
    options: &ShieldOptions,
    persist: bool,
    interval: u64,
    exit_after: Option<u64>,
    out: Output,
) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    let mut shield = Shield::start(options).map_err(err)?;
    let attached: Vec<_> = shield
        .attachments()
        .iter()
        .map(|a| json!({"iface": a.iface, "mode": a.mode.to_string()}))
        .collect();
    if persist {
        let paths = shield.persist().map_err(err)?;
        out.print(&json!({"attached": attached, "pinned": paths}), || {
            paths
                .iter()
                .map(|p| format!("attached and pinned {}", p.display()))
                .collect::<Vec<_>>()
                .join("\n")
        });
        return Ok(());
    }
    out.print(&json!({"attached": attached}), || {
        let list: Vec<String> = shield
            .attachments()
            .iter()
            .map(|a| format!("{} ({})", a.iface, a.mode))
            .collect();
        format!("shield attached to {}; Ctrl-C detaches", list.join(", "))
    });
    let started = Instant::now();
    let interval = Duration::from_secs(interval.max(1));
    let mut next = started + interval;
    while !stop.load(Ordering::Relaxed) {
        if exit_after.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next {
            next += interval;
            let stats = shield.stats().map_err(err)?;
            out.print(&stats, || {
                stats
                    .named()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        }
    }
    drop(shield);
    tracing::info!("shield detached");
    Ok(())
}
