//! Loading the embedded XDP object, pinning its maps, attaching it to
//! interfaces, and pinning or removing persistent links.
//!
//! Pin layout under the pin root (default `/sys/fs/bpf/reliw`):
//!
//! ```text
//! v<LAYOUT_VERSION>/RELIW_BANS, RELIW_BANS4, RELIW_ALLOW, RELIW_DENY,
//!                   RELIW_STATS, RELIW_CONFIG, RELIW_RATE
//! v<LAYOUT_VERSION>/links/<interface>      (only for persisted attachments)
//! ```
//!
//! Maps are pinned by the first loader and reused by every later one of the
//! same layout, so bans survive a restart and the CLI can reach them from
//! another shell. A pin whose kernel layout differs is refused.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use reliw_common::{LAYOUT_VERSION, PROGRAM_NAME, maps as names};

use super::ShieldError;
use super::maps::{ShieldMaps, check_pinned_layout};

/// The compiled XDP program, built by `build.rs` and embedded in the binary.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reliw-shield"))
}

/// Default pin root.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/reliw";

/// The directory holding this layout's pins under a pin root.
pub fn pin_dir(root: &Path) -> PathBuf {
    root.join(format!("v{LAYOUT_VERSION}"))
}

fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
const BPF_FS_MOUNT: &str = "/sys/fs/bpf";

#[allow(clippy::unnecessary_cast)] // f_type's integer type differs by arch
fn is_bpffs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|st| st.f_type as u64 == BPF_FS_MAGIC)
}

/// Creates `dir` on a BPF filesystem, mounting bpffs on `/sys/fs/bpf` first
/// when the directory lives there and nothing is mounted yet.
pub(crate) fn ensure_pin_dir(dir: &Path) -> Result<(), ShieldError> {
    let mount = Path::new(BPF_FS_MOUNT);
    if dir.starts_with(mount) && !is_bpffs(mount) {
        std::fs::create_dir_all(mount).map_err(|source| ShieldError::Io {
            what: "creating",
            path: mount.to_owned(),
            source,
        })?;
        rustix::mount::mount(
            "bpf",
            mount,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(|errno| ShieldError::Io {
            what: "mounting bpffs on",
            path: mount.to_owned(),
            source: errno.into(),
        })?;
        tracing::info!("mounted bpffs on {BPF_FS_MOUNT}");
    }
    std::fs::create_dir_all(dir).map_err(|source| ShieldError::Io {
        what: "creating",
        path: dir.to_owned(),
        source,
    })?;
    if !is_bpffs(dir) {
        return Err(ShieldError::NotBpffs(dir.to_owned()));
    }
    Ok(())
}

/// How to attach: native (driver), generic (skb), or native with a fallback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum AttachMode {
    #[serde(rename = "skb", alias = "generic")]
    Skb,
    #[serde(rename = "drv", alias = "native")]
    Drv,
    #[default]
    #[serde(rename = "auto")]
    Auto,
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skb" | "generic" => Ok(Self::Skb),
            "drv" | "native" => Ok(Self::Drv),
            "auto" => Ok(Self::Auto),
            _ => Err(format!("'{s}' is not an XDP mode (skb, drv, auto)")),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Skb => "skb",
            Self::Drv => "drv",
            Self::Auto => "auto",
        })
    }
}

/// The loaded object: the program (not yet attached) and its maps.
pub(crate) struct Loaded {
    pub(crate) ebpf: Ebpf,
    pub(crate) maps: ShieldMaps,
    /// The program's escalation reports (not pinned: this process reads them).
    pub(crate) events: aya::maps::RingBuf<aya::maps::MapData>,
    pub(crate) logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// Loads the embedded object into the kernel. With `pin_dir`, maps are reused
/// from (or pinned to) that directory; without, they are private to this
/// process (tests). `ebpf_log` turns the program's diagnostics on.
pub(crate) fn load(pin_dir: Option<&Path>, ebpf_log: bool) -> Result<Loaded, ShieldError> {
    let mut loader = EbpfLoader::new();
    let pins: Vec<(&str, PathBuf)> = match pin_dir {
        Some(dir) => {
            ensure_pin_dir(dir)?;
            names::ALL
                .iter()
                .map(|name| (*name, dir.join(name)))
                .collect()
        }
        None => Vec::new(),
    };
    for (name, path) in &pins {
        check_pinned_layout(path, name)?;
        loader.map_pin_path(name, path.as_path());
    }
    // aya-log's level: 0 silences every statement in the program.
    let level: u8 = if ebpf_log { u8::MAX } else { 0 };
    loader.override_global(aya_log::LEVEL, &level, false);
    let mut ebpf = loader
        .load(object())
        .map_err(|e| ShieldError::Load(Box::new(e)))?;
    program(&mut ebpf)?.load().map_err(program_error)?;
    let logger = if ebpf_log {
        Some(aya_log::EbpfLogger::init(&mut ebpf).map_err(ShieldError::Log)?)
    } else {
        None
    };
    let mut maps = ShieldMaps::take_from(&mut ebpf)?;
    maps.set_jiffy_ns(u64::try_from(super::clock::tick().as_nanos()).unwrap_or(0))?;
    let events = ebpf
        .take_map(names::EVENTS)
        .ok_or_else(|| ShieldError::MissingMap(names::EVENTS.to_owned()))?;
    let events = aya::maps::RingBuf::try_from(events).map_err(|source| ShieldError::Map {
        name: names::EVENTS.to_owned(),
        source,
    })?;
    Ok(Loaded {
        ebpf,
        maps,
        events,
        logger,
    })
}

pub(crate) fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, ShieldError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(ShieldError::MissingProgram)?
        .try_into()
        .map_err(program_error)
}

pub(crate) fn program_error(e: ProgramError) -> ShieldError {
    ShieldError::Program(Box::new(e))
}

/// One attachment held by this process.
pub struct Attachment {
    pub iface: String,
    /// The mode actually in use: `drv` or `skb`.
    pub mode: AttachMode,
    pub(crate) link: aya::programs::xdp::XdpLinkId,
}

/// Attaches the loaded program to `iface`.
pub(crate) fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
) -> Result<Attachment, ShieldError> {
    let prog = program(ebpf)?;
    let mut try_mode = |mode: AttachMode| {
        let xdp_mode = match mode {
            AttachMode::Skb => XdpMode::Skb,
            AttachMode::Drv | AttachMode::Auto => XdpMode::Driver,
        };
        prog.attach(iface, xdp_mode)
            .map(|link| Attachment {
                iface: iface.to_owned(),
                mode,
                link,
            })
            .map_err(|source| ShieldError::attach(iface, mode, source))
    };
    match mode {
        AttachMode::Auto => match try_mode(AttachMode::Drv) {
            Ok(a) => Ok(a),
            // Occupied is occupied in every mode; say so instead of retrying.
            Err(busy @ ShieldError::Attach { busy: true, .. }) => Err(busy),
            Err(native) => {
                tracing::info!("{native}; falling back to generic (skb) mode");
                try_mode(AttachMode::Skb)
            }
        },
        mode => try_mode(mode),
    }
}

/// Pins the link of `attachment` so the program stays attached after this
/// process exits. Returns the pin path.
pub(crate) fn persist(
    ebpf: &mut Ebpf,
    attachment: Attachment,
    pin_dir: &Path,
) -> Result<PathBuf, ShieldError> {
    let dir = links_dir(pin_dir);
    ensure_pin_dir(&dir)?;
    let path = dir.join(&attachment.iface);
    let link = program(ebpf)?
        .take_link(attachment.link)
        .map_err(program_error)?;
    let fd_link = FdLink::try_from(link).map_err(|e| ShieldError::Persist {
        iface: attachment.iface.clone(),
        detail: format!("the kernel attached it without a bpf_link ({e})"),
    })?;
    fd_link.pin(&path).map_err(|e| ShieldError::Persist {
        iface: attachment.iface.clone(),
        detail: e.to_string(),
    })?;
    Ok(path)
}

/// Interfaces that have a persisted link under `pin_dir`.
pub fn persisted_links(pin_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(links_dir(pin_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// Removes persisted links (all, or the named interfaces), which detaches
/// the program from them. Returns the interfaces detached.
pub fn detach_persisted(pin_dir: &Path, ifaces: &[String]) -> Result<Vec<String>, ShieldError> {
    let targets = if ifaces.is_empty() {
        persisted_links(pin_dir)
    } else {
        ifaces.to_vec()
    };
    let mut done = Vec::new();
    for iface in targets {
        let path = links_dir(pin_dir).join(&iface);
        if !path.exists() {
            return Err(ShieldError::NotAttached(iface));
        }
        let pinned = PinnedLink::from_pin(&path).map_err(|e| ShieldError::Persist {
            iface: iface.clone(),
            detail: e.to_string(),
        })?;
        // Unpinning drops the last reference once this fd closes: detached.
        drop(pinned.unpin().map_err(|source| ShieldError::Io {
            what: "unpinning",
            path: path.clone(),
            source,
        })?);
        done.push(iface);
    }
    Ok(done)
}

/// Removes this layout's map pins (bans, rules, counters are lost).
/// Refuses while links are persisted.
pub fn purge(pin_dir: &Path) -> Result<(), ShieldError> {
    let links = persisted_links(pin_dir);
    if !links.is_empty() {
        return Err(ShieldError::StillAttached(links.join(", ")));
    }
    let _ = std::fs::remove_dir(links_dir(pin_dir));
    for name in names::ALL {
        let path = pin_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ShieldError::Io {
                    what: "removing",
                    path,
                    source,
                });
            }
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(())
}
