//! `cargo xtask`: the developer commands.
//!
//! - `setup [--check]`: checks every prerequisite and installs what is missing
//!   (`--check` only reports). Every other command runs it first, so a fresh
//!   machine needs nothing but this repository.
//! - `build`: the XDP object and the release binary (one self-contained file).
//! - `build-and-load --iface IF [--mode skb|drv|auto] [--detach]`: build,
//!   attach, and pin under /sys/fs/bpf/reliw so the program stays attached.
//! - `run`: build and run reliw on the default config with a demo site.
//! - `test`: the whole suite, privileged tests included.
//! - `bench`: reliw against nginx, side by side (see `bench.rs`).
//! - `fuzz [--seconds N]`: the HTTP codec under cargo fuzz.

mod bench;
mod bench_failover;
mod bench_flood;
mod bench_xdp;
mod setup;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check prerequisites and install what is missing.
    Setup {
        /// Only report; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Build the XDP object and the release binary.
    Build,
    /// Build, attach to an interface and pin, so the program stays attached.
    BuildAndLoad {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value = "auto")]
        mode: String,
        /// Remove the pinned attachment instead.
        #[arg(long)]
        detach: bool,
    },
    /// Build and run reliw on the default config with a demo site, the
    /// shield on `lo`, until Ctrl-C.
    Run {
        /// Extra arguments for `reliw serve`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark reliw against nginx on loopback: static files (plain and
    /// through a Redis route), HTTPS, and reverse proxying; and the XDP
    /// shield's cost per packet against xdp-filter, and legitimate traffic
    /// under floods (namespaces).
    Bench {
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Rounds per server and file (alternating A/B).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// wrk connections.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Compare sending bodies from memory with sendfile (100 KiB, 8 MiB).
        #[arg(long)]
        send: bool,
        /// Run one case only: static, tls, h2, proxy, compress, xdp, flood
        /// or failover.
        #[arg(long, value_parser = ["static", "tls", "h2", "proxy", "compress", "xdp", "flood", "failover"])]
        only: Option<String>,
    },
    /// Fuzz the HTTP codec and the proxy's response parser (cargo fuzz,
    /// nightly) for a while, each.
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Run the whole test suite, privileged tests included.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Cmd::Setup { check } => setup::run(check),
        Cmd::Build => {
            setup::run(false)?;
            build(&root)
        }
        Cmd::BuildAndLoad {
            iface,
            mode,
            detach,
        } => {
            setup::run(false)?;
            build(&root)?;
            let mut reliw = Command::new(reliw_binary(&root));
            if detach {
                reliw.args(["shield", "detach", "--iface", &iface]);
            } else {
                reliw.args([
                    "shield",
                    "attach",
                    "--persist",
                    "--iface",
                    &iface,
                    "--mode",
                    &mode,
                ]);
            }
            run_checked(&mut reliw)
        }
        Cmd::Run { args } => {
            setup::run(false)?;
            build(&root)?;
            let config = demo_site(&root)?;
            let mut reliw = Command::new(reliw_binary(&root));
            reliw.arg("serve").arg("--config").arg(config).args(args);
            run_checked(&mut reliw)
        }
        Cmd::Bench {
            duration,
            rounds,
            connections,
            send,
            only,
        } => {
            setup::run(false)?;
            build(&root)?;
            bench::run(&root, duration, rounds, connections, send, only.as_deref())
        }
        Cmd::Fuzz { seconds } => {
            setup::run(false)?;
            setup::cargo_fuzz()?;
            // Each target in turn: client request heads and bodies, and
            // what upstreams send back through the proxy.
            for target in ["http_request", "upstream_response"] {
                // The rustup proxy, not $CARGO: `+nightly` needs it.
                let mut fuzz = Command::new("cargo");
                fuzz.current_dir(root.join("reliw"))
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("CARGO")
                    .env_remove("RUSTC")
                    .args(["+nightly", "fuzz", "run", target, "--", "-max_len=4096"])
                    .arg(format!("-max_total_time={seconds}"));
                run_checked(&mut fuzz)?;
            }
            Ok(())
        }
        Cmd::Test { args } => {
            setup::run(false)?;
            // The black-box tests spawn the release binary.
            build(&root)?;
            test::run(&root, args)
        }
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn build(root: &Path) -> Result<()> {
    println!("xtask: building reliw (release, with the embedded XDP object)");
    run_checked(
        cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", "reliw"]),
    )
}

/// The site `cargo xtask run` serves: the example site in `examples/site`
/// (RELIW keys in `site.json`, files under `www/__`) on the embedded memory
/// store, at RELIW's default address, with the metrics listener, and the
/// XDP shield on `lo` when we may load it (root).
fn demo_site(root: &Path) -> Result<PathBuf> {
    let example = root.join("examples/site");
    let dir = root.join("target/xtask-run");
    std::fs::create_dir_all(&dir)?;
    // The example is written for `localhost`; the same keys also serve
    // `127.0.0.1`, so both URLs work.
    let text = std::fs::read_to_string(example.join("site.json"))
        .context("reading examples/site/site.json")?;
    let mut keys: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).context("examples/site/site.json is not a JSON object")?;
    let copies: Vec<(String, serde_json::Value)> = keys
        .iter()
        .filter(|(k, _)| k.contains(":localhost"))
        .map(|(k, v)| (k.replace(":localhost", ":127.0.0.1"), v.clone()))
        .collect();
    keys.extend(copies);
    let site_file = dir.join("site.json");
    std::fs::write(&site_file, serde_json::to_string_pretty(&keys)?)?;
    let privileged = is_root();
    let mut config = serde_json::json!({
        "data_dir": example.join("www"),
        "store": {"backend": "memory", "site_file": site_file},
        "site_cache_ttl_ms": 1000,
    });
    if privileged {
        config["shield"] =
            serde_json::json!({"interfaces": ["lo"], "pin_root": "/sys/fs/bpf/reliw"});
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    println!("xtask: the example site from examples/site (Ctrl-C stops). Try:");
    for (url, what) in [
        ("http://localhost:8080/", "a markdown page"),
        ("http://localhost:8080/docs/", "a djot page"),
        (
            "http://localhost:8080/hello?who=you",
            "a Lua page in template.lua",
        ),
        (
            "http://localhost:8080/css/default.css",
            "a static asset with an ETag",
        ),
        (
            "http://localhost:8080/members",
            "a login-protected page (/login: demo, demo)",
        ),
        ("http://localhost:8080/limited", "a rate-limited route"),
        ("http://localhost:8080/wp-login.php", "a WAF rule (403)"),
        ("http://127.0.0.1:9101/metrics", "metrics"),
    ] {
        println!("  curl -i {url:<42} # {what}");
    }
    if privileged {
        println!("  target/release/reliw shield status                # the XDP shield on lo");
    } else {
        println!("xtask: not root, so the XDP shield stays off (run as root to attach it to lo)");
    }
    Ok(path)
}

/// Whether this process runs as root (from /proc, no libc call needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn reliw_binary(root: &Path) -> PathBuf {
    root.join("target/release/reliw")
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

pub(crate) fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
