//! The XDP shield, seen from user space: the only module holding the `Ebpf`
//! handle.
//!
//! - [`Shield`]: what the rest of the server calls (`ban`, `unban`, `deny`,
//!   `allow`, `list`, `stats`). When the kernel or our privileges do not allow
//!   XDP it is a no-op that says so once at start-up, so the server still runs.
//! - [`maps`]: typed map handles and domain operations, also used by the CLI
//!   on pinned maps while a server runs.
//! - [`loader`]: embedded object, pins, attach modes, persisted links.
//! - [`addr`]: address, CIDR and duration parsing; [`clock`]: the clocks.
//! - [`rate`]: `shield.rate_limit` as the program's budget parameters;
//!   [`syncookies`]: `shield.syn_cookies` and the sysctl it needs.
//! - `housekeeper`: the background thread that sweeps expired bans,
//!   forwards escalation reports and the program's log lines.

pub mod addr;
pub mod clock;
mod housekeeper;
pub mod loader;
pub mod maps;
pub mod rate;
pub mod syncookies;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aya::Ebpf;

pub use addr::Cidr;
pub use loader::{AttachMode, Attachment, DEFAULT_PIN_ROOT};
pub use maps::{BanRecord, CidrRecord, Listing, ShieldMaps, Stats};

/// Everything that can go wrong loading or driving the shield.
#[derive(Debug, thiserror::Error)]
pub enum ShieldError {
    /// The kernel refused the object (verifier, privileges, map creation).
    #[error("loading the XDP object failed: {}", chain(.0))]
    Load(Box<aya::EbpfError>),
    /// Loading or managing the program failed.
    #[error("XDP program: {}", chain(.0))]
    Program(Box<aya::programs::ProgramError>),
    /// The object lacks a map user space needs (a build mismatch).
    #[error("the eBPF object has no map named {0}")]
    MissingMap(String),
    /// The object lacks the XDP program.
    #[error("the eBPF object has no program named {}", reliw_common::PROGRAM_NAME)]
    MissingProgram,
    /// A map operation failed.
    #[error("map {name}: {}", chain(source))]
    Map {
        name: String,
        source: aya::maps::MapError,
    },
    /// A pin exists with another layout than this build's.
    #[error(
        "stale pin {}: {detail}; it belongs to another reliw build: stop that one, or remove the pins with `reliw shield detach --purge`",
        path.display()
    )]
    StaleLayout { path: PathBuf, detail: String },
    /// No maps are pinned where the CLI looked.
    #[error(
        "no shield maps pinned at {}: start reliw with shield.interfaces set, or run `reliw shield attach`",
        .0.display()
    )]
    NotPinned(PathBuf),
    /// The pin directory is not on bpffs.
    #[error("{} is not on a BPF filesystem (mount -t bpf bpf {})", .0.display(), .0.display())]
    NotBpffs(PathBuf),
    /// Attaching to an interface failed.
    #[error("cannot attach XDP to {iface} in {mode} mode: {}{hint}", chain(source))]
    Attach {
        iface: String,
        mode: AttachMode,
        source: Box<aya::programs::ProgramError>,
        hint: &'static str,
        /// Another XDP program holds the interface.
        busy: bool,
    },
    /// A link could not be pinned or opened.
    #[error("persisted link on {iface}: {detail}")]
    Persist { iface: String, detail: String },
    /// `detach` named an interface with no persisted link.
    #[error("no persisted reliw link on {0}")]
    NotAttached(String),
    /// `--purge` while links are still persisted.
    #[error("the program is still attached to {0}; detach first")]
    StillAttached(String),
    /// A filesystem operation on the pin directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// aya-log could not be set up.
    #[error("eBPF log: {0}")]
    Log(aya_log::Error),
}

/// An error and its sources, `: `-separated (aya keeps the errno in a source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

impl ShieldError {
    fn attach(iface: &str, mode: AttachMode, source: aya::programs::ProgramError) -> Self {
        let busy = matches!(&source, aya::programs::ProgramError::SyscallError(e)
            if [rustix::io::Errno::BUSY, rustix::io::Errno::EXIST]
                .iter()
                .any(|errno| e.io_error.raw_os_error() == Some(errno.raw_os_error())));
        let hint = if busy {
            " (another XDP program is attached there; if it is a persisted reliw link, run `reliw shield detach`)"
        } else {
            ""
        };
        Self::Attach {
            busy,
            iface: iface.to_owned(),
            mode,
            source: Box::new(source),
            hint,
        }
    }
}

/// How to start the shield.
#[derive(Clone, Debug)]
pub struct ShieldOptions {
    /// Interfaces to attach to; empty loads the maps without attaching.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// Set the dry-run flag at start (`None`: keep what the pinned config says).
    pub dry_run: Option<bool>,
    /// Pin root (`None`: private, unpinned maps, for tests).
    pub pin_root: Option<PathBuf>,
    /// Forward the program's aya-log diagnostics to the `log` crate.
    pub ebpf_log: bool,
    /// How often expired bans are removed.
    pub sweep_every: Duration,
    /// Per-source budgets to set at start (`None`: keep the pinned ones).
    pub rate_limits: Option<reliw_common::RateLimits>,
    /// SYN cookie settings to set at start (`None`: keep the pinned ones).
    pub syn_cookies: Option<reliw_common::SynCookies>,
}

/// A source the program reported for staying over a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalated {
    pub ip: IpAddr,
    /// `packet` or `syn`.
    pub budget: &'static str,
    /// Reported in dry-run: nothing was dropped, and nothing should be banned.
    pub dry_run: bool,
}

/// Reports that wait for the banning side before new ones are dropped.
const ESCALATION_QUEUE: usize = 1024;

impl Default for ShieldOptions {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: AttachMode::Auto,
            dry_run: None,
            pin_root: Some(PathBuf::from(DEFAULT_PIN_ROOT)),
            ebpf_log: false,
            sweep_every: Duration::from_secs(5),
            rate_limits: None,
            syn_cookies: None,
        }
    }
}

struct Active {
    // Field order is drop order: stop the housekeeper, then detach.
    _housekeeper: housekeeper::Housekeeper,
    escalations: Option<tokio::sync::mpsc::Receiver<Escalated>>,
    maps: Arc<Mutex<ShieldMaps>>,
    attachments: Vec<Attachment>,
    pin_dir: Option<PathBuf>,
    ebpf: Ebpf,
}

/// The shield as the server uses it. Dropping it detaches the program (unless
/// the attachments were persisted) and leaves the pinned maps in place.
pub struct Shield {
    active: Option<Active>,
}

impl Shield {
    /// Loads, pins and attaches; any failure is an error.
    pub fn start(options: &ShieldOptions) -> Result<Self, ShieldError> {
        let pin_dir = options.pin_root.as_deref().map(loader::pin_dir);
        let loader::Loaded {
            mut ebpf,
            mut maps,
            events,
            logger,
        } = loader::load(pin_dir.as_deref(), options.ebpf_log)?;
        if let Some(on) = options.dry_run {
            maps.set_dry_run(on)?;
        }
        if let Some(limits) = options.rate_limits {
            maps.set_rate_limits(limits)?;
        }
        if let Some(cookies) = options.syn_cookies {
            maps.set_syn_cookies(cookies)?;
        }
        let mut attachments = Vec::new();
        for iface in &options.interfaces {
            let attachment = loader::attach(&mut ebpf, iface, options.mode)?;
            tracing::info!("shield attached to {iface} in {} mode", attachment.mode);
            attachments.push(attachment);
        }
        // After the attach: a shield that failed to start changes nothing.
        let kernel_cookies = syncookies::KernelCookies::start(&maps.syn_cookies()?);
        let maps = Arc::new(Mutex::new(maps));
        let (to, escalations) = tokio::sync::mpsc::channel(ESCALATION_QUEUE);
        let housekeeper = housekeeper::Housekeeper::spawn(
            Arc::clone(&maps),
            options.sweep_every,
            logger,
            housekeeper::Escalations { ring: events, to },
            kernel_cookies,
        )
        .map_err(|source| ShieldError::Io {
            what: "spawning the shield housekeeper for",
            path: pin_dir.clone().unwrap_or_default(),
            source,
        })?;
        Ok(Self {
            active: Some(Active {
                _housekeeper: housekeeper,
                escalations: Some(escalations),
                maps,
                attachments,
                pin_dir,
                ebpf,
            }),
        })
    }

    /// Like [`Shield::start`], but a failure gives a no-op shield and a
    /// warning, so a server without XDP rights still serves.
    pub fn start_or_disabled(options: &ShieldOptions) -> Self {
        match Self::start(options) {
            Ok(shield) => shield,
            Err(e) => {
                tracing::warn!("XDP shield disabled, bans will not be enforced in the kernel: {e}");
                Self::disabled()
            }
        }
    }

    /// A shield that enforces nothing; every operation succeeds as a no-op.
    pub fn disabled() -> Self {
        Self { active: None }
    }

    /// Whether the program is loaded.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The interfaces this process attached to, with the mode in use.
    pub fn attachments(&self) -> &[Attachment] {
        self.active.as_ref().map_or(&[], |a| &a.attachments)
    }

    /// Pins every attachment's link so the program stays attached after this
    /// process exits (`cargo xtask build-and-load`). Needs a pin root.
    pub fn persist(&mut self) -> Result<Vec<PathBuf>, ShieldError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(Vec::new());
        };
        let Some(pin_dir) = active.pin_dir.clone() else {
            return Err(ShieldError::Persist {
                iface: String::from("*"),
                detail: String::from("no pin root configured"),
            });
        };
        let mut paths = Vec::new();
        for attachment in active.attachments.drain(..) {
            paths.push(loader::persist(&mut active.ebpf, attachment, &pin_dir)?);
        }
        Ok(paths)
    }

    /// The maps, for operations beyond the shortcuts below (`None` when
    /// disabled). Hold the guard briefly: the sweeper needs it too.
    pub fn maps(&self) -> Option<MutexGuard<'_, ShieldMaps>> {
        let active = self.active.as_ref()?;
        // A poisoned lock only means another thread panicked mid-call; the
        // maps live in the kernel and stay consistent, so keep using them.
        Some(active.maps.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Bans `ip` for `duration` (`None`: until unbanned). `Ok(None)` when
    /// the shield is disabled.
    pub fn ban(
        &self,
        ip: IpAddr,
        duration: Option<Duration>,
        reason: u32,
    ) -> Result<Option<BanRecord>, ShieldError> {
        self.maps()
            .map(|mut m| m.ban(ip, duration, reason))
            .transpose()
    }

    /// Lifts a ban; `false` if there was none (or the shield is disabled).
    pub fn unban(&self, ip: IpAddr) -> Result<bool, ShieldError> {
        self.maps().map_or(Ok(false), |mut m| m.unban(ip))
    }

    /// Adds a deny CIDR.
    pub fn deny(&self, cidr: Cidr) -> Result<(), ShieldError> {
        self.maps().map_or(Ok(()), |mut m| m.deny(cidr))
    }

    /// Adds an allow CIDR (overrides bans and deny rules).
    pub fn allow(&self, cidr: Cidr) -> Result<(), ShieldError> {
        self.maps().map_or(Ok(()), |mut m| m.allow(cidr))
    }

    /// Bans and rules; empty when disabled.
    pub fn list(&self) -> Result<Listing, ShieldError> {
        self.maps().map_or(Ok(Listing::default()), |m| m.list())
    }

    /// The loaded XDP program (`None` when disabled), for test runs.
    fn loaded_program(&self) -> Result<Option<&aya::programs::Xdp>, ShieldError> {
        let Some(active) = self.active.as_ref() else {
            return Ok(None);
        };
        active
            .ebpf
            .program(reliw_common::PROGRAM_NAME)
            .ok_or(ShieldError::MissingProgram)?
            .try_into()
            .map(Some)
            .map_err(loader::program_error)
    }

    /// Runs the loaded program `repeat` times on `frame` without attaching
    /// it (`BPF_PROG_TEST_RUN`): the XDP action and the kernel's mean time
    /// per run. Counters and maps are those of the live shield. `None` when
    /// disabled. The kernel wants at least 14 bytes (an Ethernet header).
    pub fn test_run(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<Option<(u32, Duration)>, ShieldError> {
        use aya::programs::{TestRun, TestRunOptions};
        let Some(program) = self.loaded_program()? else {
            return Ok(None);
        };
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(loader::program_error)?;
        Ok(Some((result.return_value, result.duration)))
    }

    /// The sources the program reports for staying over a budget, for the
    /// one caller that bans them (`None` when disabled or already taken).
    pub fn take_escalations(&mut self) -> Option<tokio::sync::mpsc::Receiver<Escalated>> {
        self.active.as_mut()?.escalations.take()
    }

    /// Runs the loaded program once on `frame` and returns the action and
    /// the frame as the program left it (what `XDP_TX` would send).
    pub fn test_run_frame(&self, frame: &[u8]) -> Result<Option<(u32, Vec<u8>)>, ShieldError> {
        use aya::programs::{TestRun, TestRunOptions};
        let Some(program) = self.loaded_program()? else {
            return Ok(None);
        };
        // Room for a frame the program grows.
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(loader::program_error)?;
        out.truncate(result.data_size_out as usize);
        Ok(Some((result.return_value, out)))
    }

    /// Where the maps are pinned (`None` when disabled or unpinned).
    pub fn pin_dir(&self) -> Option<&Path> {
        self.active.as_ref().and_then(|a| a.pin_dir.as_deref())
    }

    /// The map handle, for readers on other threads (the metrics listener).
    pub fn maps_handle(&self) -> Option<Arc<Mutex<ShieldMaps>>> {
        self.active.as_ref().map(|a| Arc::clone(&a.maps))
    }

    /// Packet counters; zero when disabled.
    pub fn stats(&self) -> Result<Stats, ShieldError> {
        self.maps().map_or(Ok(Stats::default()), |m| m.stats())
    }
}
