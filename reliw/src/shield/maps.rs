//! Typed handles on the shield's pinned maps and the domain operations on them.
//!
//! The same [`ShieldMaps`] serves the process that loaded the program (maps
//! taken from its `Ebpf`) and the CLI in another shell (maps opened from their
//! pins). Before anything is opened, every map's kernel layout is checked
//! against `reliw-common`, so a stale pin from another build is refused with a
//! message instead of being read with the wrong layout.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, MapType, PerCpuArray};
use reliw_common::{
    Addr, BanEntry, CidrEntry, NEVER_EXPIRES, RateLimits, RateState, ShieldConfig, maps as names,
    rules, stat,
};
use serde::Serialize;

use super::ShieldError;
use super::addr::{Cidr, from_addr, to_addr};
use super::clock;

/// What the kernel must report for a map for us to use it.
struct Layout {
    name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

const LAYOUTS: [Layout; 7] = [
    Layout {
        name: names::BANS,
        map_type: MapType::LruHash,
        key_size: size_of::<Addr>() as u32,
        value_size: size_of::<BanEntry>() as u32,
        max_entries: names::BANS_CAPACITY,
    },
    Layout {
        name: names::BANS4,
        map_type: MapType::LruHash,
        key_size: 4,
        value_size: size_of::<BanEntry>() as u32,
        max_entries: names::BANS4_CAPACITY,
    },
    Layout {
        name: names::RATE,
        map_type: MapType::LruHash,
        key_size: size_of::<Addr>() as u32,
        value_size: size_of::<RateState>() as u32,
        max_entries: names::RATE_CAPACITY,
    },
    Layout {
        name: names::ALLOW,
        map_type: MapType::LpmTrie,
        key_size: 4 + size_of::<Addr>() as u32,
        value_size: size_of::<CidrEntry>() as u32,
        max_entries: names::ALLOW_CAPACITY,
    },
    Layout {
        name: names::DENY,
        map_type: MapType::LpmTrie,
        key_size: 4 + size_of::<Addr>() as u32,
        value_size: size_of::<CidrEntry>() as u32,
        max_entries: names::DENY_CAPACITY,
    },
    Layout {
        name: names::STATS,
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: stat::COUNT,
    },
    Layout {
        name: names::CONFIG,
        map_type: MapType::Array,
        key_size: 4,
        value_size: size_of::<ShieldConfig>() as u32,
        max_entries: names::CONFIG_CAPACITY,
    },
];

/// Checks the map pinned at `path` against the layout of map `name`.
/// A missing pin is fine (it will be created); a different one is an error.
pub(crate) fn check_pinned_layout(path: &Path, name: &str) -> Result<(), ShieldError> {
    if !path.exists() {
        return Ok(());
    }
    let Some(want) = LAYOUTS.iter().find(|l| l.name == name) else {
        return Err(ShieldError::MissingMap(name.to_owned()));
    };
    let info = MapInfo::from_pin(path).map_err(|source| ShieldError::Map {
        name: name.to_owned(),
        source,
    })?;
    let got_type = info.map_type().ok();
    if got_type != Some(want.map_type)
        || info.key_size() != want.key_size
        || info.value_size() != want.value_size
        || info.max_entries() != want.max_entries
    {
        return Err(ShieldError::StaleLayout {
            path: path.to_owned(),
            detail: format!(
                "pinned map is {:?} key {} value {} entries {}, this build expects {:?} key {} value {} entries {}",
                got_type,
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                want.map_type,
                want.key_size,
                want.value_size,
                want.max_entries
            ),
        });
    }
    Ok(())
}

/// One exact ban, as shown to people and tools.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BanRecord {
    pub ip: IpAddr,
    /// Reason name (`manual`, `waf`, `rate_limit`, `peer`).
    pub reason: &'static str,
    /// Seconds left; `None` for a ban that never expires.
    pub expires_in_s: Option<u64>,
    /// Wall-clock expiry (Unix seconds); `None` for a ban that never expires.
    pub expires_at_unix: Option<u64>,
    pub banned_at_unix: u64,
    /// Expired bans still in the map (the sweeper removes them).
    pub expired: bool,
    /// The node that decided the ban, from the ban book (`None`: unknown,
    /// e.g. a manual ban from the CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The WAF rule behind the ban, from the ban book.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// One allow or deny rule.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CidrRecord {
    pub cidr: String,
    pub added_at_unix: u64,
}

/// Everything in the rule maps.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Listing {
    pub bans: Vec<BanRecord>,
    pub allow: Vec<CidrRecord>,
    pub deny: Vec<CidrRecord>,
}

/// Packet counters summed over all CPUs, indexed like `reliw_common::stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub counters: [u64; stat::COUNT as usize],
}

impl Stats {
    /// The counter at a `reliw_common::stat` index.
    pub fn get(&self, index: u32) -> u64 {
        self.counters.get(index as usize).copied().unwrap_or(0)
    }

    /// `(name, value)` pairs in index order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        stat::NAMES
            .iter()
            .copied()
            .zip(self.counters.iter().copied())
    }
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.counters.len()))?;
        for (name, value) in self.named() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

/// The pinned maps, typed.
pub struct ShieldMaps {
    bans: HashMap<MapData, Addr, BanEntry>,
    bans4: HashMap<MapData, [u8; 4], BanEntry>,
    /// Held so the layout is checked and the pin kept; the program owns it.
    _rate: HashMap<MapData, Addr, RateState>,
    allow: LpmTrie<MapData, Addr, CidrEntry>,
    deny: LpmTrie<MapData, Addr, CidrEntry>,
    stats: PerCpuArray<MapData, u64>,
    config: Array<MapData, ShieldConfig>,
}

fn map_err(name: &str) -> impl FnOnce(MapError) -> ShieldError + '_ {
    move |source| ShieldError::Map {
        name: name.to_owned(),
        source,
    }
}

impl ShieldMaps {
    /// Takes the maps out of a freshly loaded object; a missing map is an error.
    pub(crate) fn take_from(ebpf: &mut Ebpf) -> Result<Self, ShieldError> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| ShieldError::MissingMap(name.to_owned()))
        };
        Self::from_maps(Opened {
            bans: take(names::BANS)?,
            bans4: take(names::BANS4)?,
            rate: take(names::RATE)?,
            allow: take(names::ALLOW)?,
            deny: take(names::DENY)?,
            stats: take(names::STATS)?,
            config: take(names::CONFIG)?,
        })
    }

    /// Opens the maps pinned in `dir`, e.g. from the CLI while a server runs.
    pub fn open_pinned(dir: &Path) -> Result<Self, ShieldError> {
        let open = |name: &str| -> Result<Map, ShieldError> {
            let path = dir.join(name);
            if !path.exists() {
                return Err(ShieldError::NotPinned(dir.to_owned()));
            }
            check_pinned_layout(&path, name)?;
            let data = MapData::from_pin(&path).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        Self::from_maps(Opened {
            bans: open(names::BANS)?,
            bans4: open(names::BANS4)?,
            rate: open(names::RATE)?,
            allow: open(names::ALLOW)?,
            deny: open(names::DENY)?,
            stats: open(names::STATS)?,
            config: open(names::CONFIG)?,
        })
    }

    fn from_maps(maps: Opened) -> Result<Self, ShieldError> {
        let Opened {
            bans,
            bans4,
            rate,
            allow,
            deny,
            stats,
            config,
        } = maps;
        let mut maps = Self {
            bans: HashMap::try_from(bans).map_err(map_err(names::BANS))?,
            bans4: HashMap::try_from(bans4).map_err(map_err(names::BANS4))?,
            _rate: HashMap::try_from(rate).map_err(map_err(names::RATE))?,
            allow: LpmTrie::try_from(allow).map_err(map_err(names::ALLOW))?,
            deny: LpmTrie::try_from(deny).map_err(map_err(names::DENY))?,
            stats: PerCpuArray::try_from(stats).map_err(map_err(names::STATS))?,
            config: Array::try_from(config).map_err(map_err(names::CONFIG))?,
        };
        maps.refresh_rules()?;
        Ok(maps)
    }

    /// Bans `ip` for `duration` (`None`: until unbanned). Banning an address
    /// that is already banned replaces its entry.
    pub fn ban(
        &mut self,
        ip: IpAddr,
        duration: Option<Duration>,
        reason: u32,
    ) -> Result<BanRecord, ShieldError> {
        let now = clock::monotonic_ns();
        let expires_ns = match duration {
            None => NEVER_EXPIRES,
            Some(d) => now.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        };
        let expires_jiffies = if expires_ns == NEVER_EXPIRES {
            NEVER_EXPIRES
        } else {
            clock::jiffies_at(expires_ns)
        };
        let entry = BanEntry {
            expires_ns,
            banned_ns: now,
            expires_jiffies,
            reason,
            _pad: 0,
        };
        match ip.to_canonical() {
            IpAddr::V4(v4) => self
                .bans4
                .insert(v4.octets(), entry, 0)
                .map_err(map_err(names::BANS4))?,
            IpAddr::V6(v6) => self
                .bans
                .insert(v6.octets(), entry, 0)
                .map_err(map_err(names::BANS))?,
        }
        Ok(ban_record(ip.to_canonical(), &entry, now))
    }

    /// The ban on `ip`, if the map holds one (expired or not).
    pub fn ban_of(&self, ip: IpAddr) -> Result<Option<BanRecord>, ShieldError> {
        let ip = ip.to_canonical();
        let (found, name) = match ip {
            IpAddr::V4(v4) => (self.bans4.get(&v4.octets(), 0), names::BANS4),
            IpAddr::V6(v6) => (self.bans.get(&v6.octets(), 0), names::BANS),
        };
        match found {
            Ok(entry) => Ok(Some(ban_record(ip, &entry, clock::monotonic_ns()))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_err(name)(source)),
        }
    }

    /// Lifts the ban on `ip`; `false` if there was none.
    pub fn unban(&mut self, ip: IpAddr) -> Result<bool, ShieldError> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => remove_or_absent(self.bans4.remove(&v4.octets()), names::BANS4),
            IpAddr::V6(v6) => remove_or_absent(self.bans.remove(&v6.octets()), names::BANS),
        }
    }

    /// Drops every source inside `cidr` (unless allowed); idempotent.
    pub fn deny(&mut self, cidr: Cidr) -> Result<(), ShieldError> {
        insert_cidr(&mut self.deny, cidr, names::DENY)?;
        self.refresh_rules()
    }

    /// Removes a deny rule; `false` if there was none.
    pub fn undeny(&mut self, cidr: Cidr) -> Result<bool, ShieldError> {
        let removed = remove_or_absent(self.deny.remove(&cidr.lpm_key()), names::DENY)?;
        self.refresh_rules()?;
        Ok(removed)
    }

    /// Passes every source inside `cidr`, whatever bans or deny rules say.
    pub fn allow(&mut self, cidr: Cidr) -> Result<(), ShieldError> {
        insert_cidr(&mut self.allow, cidr, names::ALLOW)?;
        self.refresh_rules()
    }

    /// Removes an allow rule; `false` if there was none.
    pub fn disallow(&mut self, cidr: Cidr) -> Result<bool, ShieldError> {
        let removed = remove_or_absent(self.allow.remove(&cidr.lpm_key()), names::ALLOW)?;
        self.refresh_rules()?;
        Ok(removed)
    }

    /// The program's config entry.
    fn config_entry(&self) -> Result<ShieldConfig, ShieldError> {
        self.config.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Changes one part of the config entry; takes effect on the next packet.
    fn update_config(&mut self, change: impl FnOnce(&mut ShieldConfig)) -> Result<(), ShieldError> {
        let mut config = self.config_entry()?;
        change(&mut config);
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::CONFIG))
    }

    /// Tells the program which tries hold rules (`ShieldConfig::rules`), so
    /// it skips lookups in empty ones. Called after every trie change and on
    /// every sweep: two processes changing rules at the same instant could
    /// leave a stale bit, and the next sweep (the housekeeper's) mends it.
    pub fn refresh_rules(&mut self) -> Result<(), ShieldError> {
        let mut want = 0;
        if self.allow.keys().next().is_some() {
            want |= rules::ALLOW;
        }
        if self.deny.keys().next().is_some() {
            want |= rules::DENY;
        }
        if self.config_entry()?.rules != want {
            self.update_config(|c| c.rules = want)?;
        }
        Ok(())
    }

    /// Whether `ip` falls inside an allow rule.
    pub fn is_allowed(&self, ip: IpAddr) -> Result<bool, ShieldError> {
        let key = aya::maps::lpm_trie::Key::new(128, to_addr(ip));
        match self.allow.get(&key, 0) {
            Ok(_) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(map_err(names::ALLOW)(source)),
        }
    }

    /// Every ban (sorted by address) and rule.
    pub fn list(&self) -> Result<Listing, ShieldError> {
        let now = clock::monotonic_ns();
        let mut bans = Vec::new();
        for item in self.bans4.iter() {
            let (octets, entry) = item.map_err(map_err(names::BANS4))?;
            bans.push(ban_record(IpAddr::from(octets), &entry, now));
        }
        for item in self.bans.iter() {
            let (addr, entry) = item.map_err(map_err(names::BANS))?;
            bans.push(ban_record(from_addr(&addr), &entry, now));
        }
        bans.sort_by_key(|b| b.ip);
        Ok(Listing {
            bans,
            allow: list_cidrs(&self.allow, names::ALLOW)?,
            deny: list_cidrs(&self.deny, names::DENY)?,
        })
    }

    /// Packet counters summed over CPUs.
    pub fn stats(&self) -> Result<Stats, ShieldError> {
        let mut stats = Stats::default();
        for (index, slot) in stats.counters.iter_mut().enumerate() {
            let per_cpu = self
                .stats
                .get(&(index as u32), 0)
                .map_err(map_err(names::STATS))?;
            *slot = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(stats)
    }

    /// The SYN cookie settings the program applies.
    pub fn syn_cookies(&self) -> Result<reliw_common::SynCookies, ShieldError> {
        Ok(self.config_entry()?.syn_cookies)
    }

    /// Sets the SYN cookie settings; takes effect on the next packet.
    pub fn set_syn_cookies(
        &mut self,
        cookies: reliw_common::SynCookies,
    ) -> Result<(), ShieldError> {
        self.update_config(|c| c.syn_cookies = cookies)
    }

    /// Tells the program the length of a jiffy (its budgets' clock).
    pub fn set_jiffy_ns(&mut self, jiffy_ns: u64) -> Result<(), ShieldError> {
        if self.config_entry()?.jiffy_ns != jiffy_ns {
            self.update_config(|c| c.jiffy_ns = jiffy_ns)?;
        }
        Ok(())
    }

    /// One packet counter (a `reliw_common::stat` index) summed over CPUs.
    pub fn counter(&self, index: u32) -> Result<u64, ShieldError> {
        let per_cpu = self.stats.get(&index, 0).map_err(map_err(names::STATS))?;
        Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// Whether the program only counts what it would drop.
    pub fn dry_run(&self) -> Result<bool, ShieldError> {
        Ok(self.config_entry()?.dry_run != 0)
    }

    /// Switches dry-run mode; takes effect on the next packet.
    pub fn set_dry_run(&mut self, on: bool) -> Result<(), ShieldError> {
        self.update_config(|c| c.dry_run = u32::from(on))
    }

    /// The per-source budgets the program applies.
    pub fn rate_limits(&self) -> Result<RateLimits, ShieldError> {
        Ok(self.config_entry()?.rate)
    }

    /// Sets the per-source budgets (all zero: off); takes effect on the
    /// next packet. Sources keep their state, so changing a rate does not
    /// hand every source a fresh burst.
    pub fn set_rate_limits(&mut self, limits: RateLimits) -> Result<(), ShieldError> {
        self.update_config(|c| c.rate = limits)
    }

    /// Removes bans whose expiry has passed; returns how many. Budget
    /// states are left to the LRU: sweeping them would cost a few syscalls
    /// per source, and a full map under a spoofed flood holds 131k.
    pub fn sweep_expired(&mut self) -> Result<usize, ShieldError> {
        let now = clock::monotonic_ns();
        self.refresh_rules()?;
        Ok(
            sweep_map(&mut self.bans4, names::BANS4, |e| e.expires_ns <= now)?
                + sweep_map(&mut self.bans, names::BANS, |e| e.expires_ns <= now)?,
        )
    }
}

/// The maps as the kernel hands them over, before typing.
struct Opened {
    bans: Map,
    bans4: Map,
    rate: Map,
    allow: Map,
    deny: Map,
    stats: Map,
    config: Map,
}

/// Removes the entries of `map` for which `stale` holds; returns how many.
fn sweep_map<K: aya::Pod + Eq, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &str,
    stale: impl Fn(&V) -> bool,
) -> Result<usize, ShieldError> {
    let mut found = Vec::new();
    for item in map.iter() {
        // An entry can vanish mid-iteration (LRU eviction, another
        // sweeper); skip what cannot be read rather than abort the sweep.
        if let Ok((key, value)) = item
            && stale(&value)
        {
            found.push(key);
        }
    }
    let mut removed = 0;
    for key in found {
        // Re-check: the entry may have been renewed meanwhile.
        if let Ok(value) = map.get(&key, 0)
            && stale(&value)
            && remove_or_absent(map.remove(&key), name)?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

fn ban_record(ip: IpAddr, entry: &BanEntry, now: u64) -> BanRecord {
    let permanent = entry.expires_ns == NEVER_EXPIRES;
    BanRecord {
        ip,
        reason: reliw_common::reason::name(entry.reason),
        expires_in_s: (!permanent)
            .then(|| Duration::from_nanos(entry.expires_ns.saturating_sub(now)).as_secs()),
        expires_at_unix: (!permanent).then(|| clock::monotonic_to_unix_seconds(entry.expires_ns)),
        banned_at_unix: clock::monotonic_to_unix_seconds(entry.banned_ns),
        expired: !permanent && entry.expires_ns <= now,
        origin: None,
        rule: None,
    }
}

fn insert_cidr(
    trie: &mut LpmTrie<MapData, Addr, CidrEntry>,
    cidr: Cidr,
    name: &str,
) -> Result<(), ShieldError> {
    let entry = CidrEntry {
        added_unix_s: clock::unix_seconds(),
    };
    trie.insert(&cidr.lpm_key(), entry, 0)
        .map_err(map_err(name))
}

fn list_cidrs(
    trie: &LpmTrie<MapData, Addr, CidrEntry>,
    name: &str,
) -> Result<Vec<CidrRecord>, ShieldError> {
    let mut out = Vec::new();
    for item in trie.iter() {
        let (key, entry) = item.map_err(map_err(name))?;
        if let Some(cidr) = Cidr::from_lpm_key(&key) {
            out.push((cidr, entry.added_unix_s));
        }
    }
    out.sort();
    Ok(out
        .into_iter()
        .map(|(cidr, added)| CidrRecord {
            cidr: cidr.to_string(),
            added_at_unix: added,
        })
        .collect())
}

fn remove_or_absent(result: Result<(), MapError>, name: &str) -> Result<bool, ShieldError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(source) => Err(map_err(name)(source)),
    }
}
