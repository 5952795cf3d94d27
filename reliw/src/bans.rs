//! Where an L7 verdict becomes an L3 drop: a WAF hit or a client that
//! keeps hitting rate limits is banned in this node's XDP shield, and the
//! ban is published on `P:WAFFERS` so every node's shield drops it too.
//!
//! `P:WAFFERS` messages (the payload of a PUBLISH), JSON:
//!
//! ```json
//! {"ip": "198.18.0.7", "reason": "waf", "rule": "%.php$", "node": "edge-1", "seconds": 600}
//! ```
//!
//! `reason` is `waf` or `rate_limit` (or `manual`), `rule` is optional,
//! `node` names the node that decided, `seconds` is the ban length. A bare
//! address (what RELIW publishes) is a WAF ban of the default length from
//! an unknown node. A node ignores its own messages; a ban it already holds
//! is only ever extended, never shortened.
//!
//! Never banned, with a log line saying why: loopback and unspecified
//! addresses, this node's own addresses, and the shield's allow CIDRs.
//!
//! The kernel map keeps address, reason code and expiry; the rest (origin
//! node, rule) is kept in a small JSON "ban book" next to it
//! ([`book_path`]), which `reliw shield list` joins in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::shield::maps::ShieldMaps;

/// A ban as published on `P:WAFFERS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub ip: IpAddr,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default)]
    pub node: String,
    pub seconds: u64,
}

impl Notice {
    /// Parses a message: JSON as above, or a bare address.
    pub fn parse(payload: &[u8], default_seconds: u64) -> Result<Self, String> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| String::from("not UTF-8"))?
            .trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self {
                ip: ip.to_canonical(),
                reason: String::from("waf"),
                rule: None,
                node: String::new(),
                seconds: default_seconds,
            });
        }
        let mut notice: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if notice.seconds == 0 {
            return Err(String::from("seconds must be greater than 0"));
        }
        notice.ip = notice.ip.to_canonical();
        Ok(notice)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What became of a ban.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In the shield now (`extended`: it was there already and now lasts longer).
    Banned { extended: bool },
    /// Already banned for at least as long.
    AlreadyBanned,
    /// Not banned, and why.
    Refused(&'static str),
    /// The shield is not running (logged once at start).
    NoShield,
}

/// Extra facts about a ban, kept beside the kernel map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookEntry {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub node: String,
    pub expires_at_unix: u64,
}

/// The ban book of the shield pinned at `pin_dir`.
pub fn book_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/reliw").join(format!("{}.bans.json", name.trim_matches('_')))
}

/// Reads a ban book (empty if there is none).
pub fn read_book(path: &Path) -> HashMap<IpAddr, BookEntry> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Most entries the book keeps (the kernel map holds 65k bans; the book
/// is for people).
const BOOK_CAP: usize = 10_000;

/// Repeated 429s per client, for escalation.
struct Strikes {
    window: Duration,
    over: u32,
    seconds: u64,
    seen: HashMap<IpAddr, (Instant, u32)>,
}

/// Addresses that completed a TCP handshake with this node lately: proof
/// that a source is not spoofed, asked for before an XDP escalation bans
/// it (anyone can send SYNs or packets with a victim's address; only the
/// owner of an address can complete a handshake from it). A lossy table:
/// one slot per address hash holding a fingerprint and a time, written
/// with two relaxed stores per accepted connection; an evicted or torn
/// slot only means "not proven", which bans nothing.
pub struct Handshakes {
    slots: Box<[(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)]>,
}

/// How long a handshake proves an address.
const HANDSHAKE_PROOF: Duration = Duration::from_secs(600);
const HANDSHAKE_SLOTS: usize = 1 << 16;

impl Handshakes {
    fn new() -> Self {
        Self {
            slots: (0..HANDSHAKE_SLOTS).map(|_| Default::default()).collect(),
        }
    }

    /// `(slot, fingerprint)` of an address: two independent hashes.
    fn place(ip: IpAddr) -> (usize, u64) {
        use std::hash::{BuildHasher, Hasher};
        // Fixed keys: the table is ours alone and the fingerprint only
        // has to tell addresses apart, not resist an attacker who cannot
        // complete handshakes from the addresses he would need.
        let state =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let mut h = state.build_hasher();
        std::hash::Hash::hash(&ip.to_canonical(), &mut h);
        let hash = h.finish();
        ((hash as usize) % HANDSHAKE_SLOTS, (hash >> 16) | 1)
    }

    /// Records a completed handshake from `ip` (an accepted connection).
    pub fn saw(&self, ip: IpAddr) {
        use std::sync::atomic::Ordering::Relaxed;
        let (slot, fingerprint) = Self::place(ip);
        let (fp, at) = &self.slots[slot];
        fp.store(fingerprint, Relaxed);
        at.store(crate::shield::clock::monotonic_ns(), Relaxed);
    }

    /// Whether `ip` completed a handshake within [`HANDSHAKE_PROOF`].
    pub fn proven(&self, ip: IpAddr) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let (slot, fingerprint) = Self::place(ip);
        let (fp, at) = &self.slots[slot];
        let age = crate::shield::clock::monotonic_ns().saturating_sub(at.load(Relaxed));
        fp.load(Relaxed) == fingerprint && age < HANDSHAKE_PROOF.as_nanos() as u64
    }
}

/// This node's bans. Shared by every worker and the `P:WAFFERS` subscriber.
pub struct Bans {
    /// Who completed handshakes lately (see [`Handshakes`]).
    pub handshakes: Handshakes,
    maps: Option<Arc<Mutex<ShieldMaps>>>,
    node: String,
    pub default_seconds: u64,
    book: Mutex<HashMap<IpAddr, BookEntry>>,
    book_path: Option<PathBuf>,
    /// The book changed since it was last written.
    book_dirty: std::sync::atomic::AtomicBool,
    strikes: Option<Mutex<Strikes>>,
}

fn unix_now() -> u64 {
    crate::shield::clock::unix_seconds()
}

impl Bans {
    pub fn new(
        maps: Option<Arc<Mutex<ShieldMaps>>>,
        pin_dir: Option<&Path>,
        startup: &crate::config::Startup,
    ) -> Self {
        let book_path = pin_dir.map(book_path);
        let book = book_path.as_deref().map(read_book).unwrap_or_default();
        let strikes = startup.rate_limit_ban.as_ref().map(|b| {
            Mutex::new(Strikes {
                window: Duration::from_secs(b.window),
                over: b.over,
                seconds: b.ban_seconds.unwrap_or(startup.ban_seconds),
                seen: HashMap::new(),
            })
        });
        Self {
            handshakes: Handshakes::new(),
            maps,
            node: crate::config::node_or_host_name(startup.node_name.as_deref()),
            default_seconds: startup.ban_seconds,
            book: Mutex::new(book),
            book_path,
            book_dirty: std::sync::atomic::AtomicBool::new(false),
            strikes,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Why `ip` must never be banned, if it must not.
    fn protected(&self, ip: IpAddr, maps: &ShieldMaps) -> Option<&'static str> {
        if ip.is_loopback() || ip.is_unspecified() {
            return Some("loopback or unspecified address");
        }
        // Binding succeeds only for addresses of this host.
        if std::net::UdpSocket::bind((ip, 0)).is_ok() {
            return Some("one of this node's own addresses");
        }
        if maps.is_allowed(ip).unwrap_or(false) {
            return Some("in the shield's allow list");
        }
        None
    }

    /// Bans `ip` for `seconds` in this node's shield (never shortening a
    /// ban it has), and records why.
    fn ban(
        &self,
        ip: IpAddr,
        reason: &str,
        rule: Option<&str>,
        node: &str,
        seconds: u64,
    ) -> Outcome {
        let ip = ip.to_canonical();
        let Some(maps) = &self.maps else {
            return Outcome::NoShield;
        };
        let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = self.protected(ip, &maps) {
            tracing::warn!(%ip, reason, "not banning {ip}: {why}");
            return Outcome::Refused(why);
        }
        let existing = maps.ban_of(ip).ok().flatten().filter(|b| !b.expired);
        if let Some(b) = &existing
            && b.expires_in_s.is_none_or(|left| left >= seconds)
        {
            return Outcome::AlreadyBanned;
        }
        let code = reliw_common::reason::from_name(reason).unwrap_or(reliw_common::reason::WAF);
        if let Err(e) = maps.ban(ip, Some(Duration::from_secs(seconds)), code) {
            tracing::error!(%ip, error = %e, "shield ban failed");
            return Outcome::Refused("the shield map refused it");
        }
        drop(maps);
        self.record(
            ip,
            BookEntry {
                reason: reason.to_owned(),
                rule: rule.map(str::to_owned),
                node: node.to_owned(),
                expires_at_unix: unix_now() + seconds,
            },
        );
        Outcome::Banned {
            extended: existing.is_some(),
        }
    }

    /// A verdict of this node; the notice to publish when it banned.
    pub fn verdict(
        &self,
        ip: IpAddr,
        reason: &str,
        rule: Option<&str>,
        seconds: u64,
    ) -> Option<Notice> {
        let outcome = self.ban(ip, reason, rule, &self.node, seconds);
        match outcome {
            Outcome::Banned { .. } => {
                tracing::warn!(%ip, reason, rule, seconds, "banned in the shield");
                Some(Notice {
                    ip: ip.to_canonical(),
                    reason: reason.to_owned(),
                    rule: rule.map(str::to_owned),
                    node: self.node.clone(),
                    seconds,
                })
            }
            // Still tell the fleet: another node may not have it yet.
            Outcome::AlreadyBanned | Outcome::NoShield => Some(Notice {
                ip: ip.to_canonical(),
                reason: reason.to_owned(),
                rule: rule.map(str::to_owned),
                node: self.node.clone(),
                seconds,
            }),
            Outcome::Refused(_) => None,
        }
    }

    /// A notice heard on `P:WAFFERS`.
    pub fn apply(&self, notice: &Notice) -> Option<Outcome> {
        if notice.node == self.node {
            return None;
        }
        let origin = if notice.node.is_empty() {
            "unknown"
        } else {
            notice.node.as_str()
        };
        let outcome = self.ban(
            notice.ip,
            &notice.reason,
            notice.rule.as_deref(),
            origin,
            notice.seconds,
        );
        if let Outcome::Banned { extended } = outcome {
            tracing::info!(ip = %notice.ip, origin, reason = notice.reason, extended, "banned on a peer's verdict");
        }
        Some(outcome)
    }

    /// Counts a 429 for `ip`; `Some(seconds)` when it crossed the
    /// escalation threshold and should be banned.
    pub fn strike(&self, ip: IpAddr) -> Option<u64> {
        let mut s = self
            .strikes
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (window, over, seconds) = (s.window, s.over, s.seconds);
        if s.seen.len() >= BOOK_CAP {
            s.seen
                .retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = s.seen.entry(ip.to_canonical()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > over {
            s.seen.remove(&ip.to_canonical());
            return Some(seconds);
        }
        None
    }

    fn record(&self, ip: IpAddr, entry: BookEntry) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        book.retain(|_, e| e.expires_at_unix > now);
        if book.len() >= BOOK_CAP {
            return;
        }
        book.insert(ip, entry);
        self.book_dirty
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Writes the ban book when it changed, at most once a second, off the
    /// request path (a flood of new sources must not rewrite it per ban).
    pub fn spawn_book_writer(self: &Arc<Self>) -> std::io::Result<()> {
        if self.book_path.is_none() || self.maps.is_none() {
            return Ok(());
        }
        let bans = Arc::clone(self);
        std::thread::Builder::new()
            .name(String::from("reliw-ban-book"))
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(250));
                    if bans
                        .book_dirty
                        .swap(false, std::sync::atomic::Ordering::AcqRel)
                    {
                        bans.write_book();
                    }
                }
            })
            .map(drop)
    }

    /// Bans the sources the XDP program reports for staying over a budget
    /// (`shield.rate_limit`), like a WAF verdict: in this node's shield,
    /// in the ban book, and on `P:WAFFERS` for every node; but only a
    /// source that completed a handshake lately ([`Handshakes`]), so a
    /// flood with a spoofed address cannot get its owner banned. Runs on
    /// its own thread until the shield goes away.
    pub fn spawn_escalation_banner(
        self: &Arc<Self>,
        mut reports: tokio::sync::mpsc::Receiver<crate::shield::Escalated>,
        store: crate::store::StoreSpec,
        waffers: String,
        seconds: u64,
    ) -> std::io::Result<()> {
        use crate::store::Store as _;
        let bans = Arc::clone(self);
        crate::background::spawn("reliw-escalations", move || async move {
            let backend = match store.open() {
                Ok(backend) => backend,
                Err(e) => {
                    tracing::error!(error = %e, "escalated bans will not reach other nodes");
                    None
                }
            };
            while let Some(report) = reports.recv().await {
                let rule = format!("xdp {} budget", report.budget);
                if !bans.handshakes.proven(report.ip) {
                    // Its packets may carry someone else's address; the
                    // budget keeps dropping them, nothing is banned.
                    tracing::warn!(ip = %report.ip, rule, "not banning a source over its budget: it completed no handshake in the last 10 minutes, so its address may be spoofed");
                    continue;
                }
                if report.dry_run {
                    tracing::warn!(ip = %report.ip, rule, "shield dry-run: would ban a source that stays over its budget");
                    continue;
                }
                let Some(notice) = bans.verdict(report.ip, "rate_limit", Some(&rule), seconds)
                else {
                    continue;
                };
                if let Some(backend) = &backend
                    && let Err(e) = backend.publish(&waffers, notice.to_json().as_bytes()).await
                {
                    tracing::warn!(ip = %report.ip, error = %e, "cannot publish the ban on P:WAFFERS");
                }
            }
        })
    }

    fn write_book(&self) {
        let Some(path) = &self.book_path else { return };
        let text = {
            let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*book).unwrap_or_default()
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text)?;
            std::fs::rename(tmp, path)
        };
        if let Err(e) = write() {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the ban book");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices() {
        let n = Notice::parse(b" 198.18.0.7\n", 600).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.reason.as_str(), n.seconds, n.node.as_str()),
            ("waf", 600, "")
        );
        let n = Notice::parse(
            br#"{"ip": "::ffff:198.18.0.7", "reason": "rate_limit", "node": "edge-2", "seconds": 60}"#,
            600,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.ip,
            "198.18.0.7"
                .parse::<IpAddr>()
                .unwrap_or(IpAddr::from([0, 0, 0, 0]))
        );
        let again = Notice::parse(n.to_json().as_bytes(), 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, n);
        for bad in [
            &b"nope"[..],
            br#"{"ip": "1.2.3.4"}"#,
            br#"{"ip": "1.2.3.4", "reason": "waf", "seconds": 0}"#,
        ] {
            assert!(Notice::parse(bad, 600).is_err());
        }
    }

    #[test]
    fn only_addresses_with_a_handshake_are_proven() {
        let h = Handshakes::new();
        let a: IpAddr = "198.18.0.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "198.18.0.8".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(!h.proven(a));
        h.saw(a);
        assert!(h.proven(a));
        assert!(!h.proven(b));
        let mapped: IpAddr = "::ffff:198.18.0.7"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(h.proven(mapped), "IPv4-mapped is the same address");
    }

    #[test]
    fn book_paths_are_per_pin_dir() {
        assert_eq!(
            book_path(Path::new("/sys/fs/bpf/reliw/v1")),
            PathBuf::from("/run/reliw/sys_fs_bpf_reliw_v1.bans.json")
        );
    }
}
