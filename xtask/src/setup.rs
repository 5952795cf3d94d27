//! Prerequisites: what reliw needs to build, test and benchmark, how to tell
//! whether it is there, and how to install it on Debian.

use std::process::Command;

use anyhow::{Result, bail};

use crate::run_checked;

/// Debian packages: LLVM 22 for bpf-linker, redis-server for the store tests,
/// nginx and wrk for benchmarks, iproute2 for the namespace tests, bpftool to
/// inspect what is loaded, xdp-tools for the XDP benchmark, nginx's brotli
/// module for the compression benchmark, h2load for the HTTP/2 benchmark,
/// pebble (and its DNS) and curl for the ACME tests.
const APT_PACKAGES: [&str; 16] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "redis-server",
    "nginx",
    "wrk",
    "iproute2",
    "bpftool",
    // nsenter, for the namespace tests that keep the host's /sys/fs/bpf.
    "util-linux",
    // Certificates for the TLS benchmark.
    "openssl",
    // xdp-filter, the reference the XDP benchmark measures the shield against.
    "xdp-tools",
    // nginx's brotli filter, the reference for the brotli compression bench.
    "libnginx-mod-http-brotli-filter",
    // h2load, the HTTP/2 load generator (the nginx side speaks h2 too).
    "nghttp2-client",
    // An ACME CA (pebble) and its test DNS (pebble-challtestsrv).
    "pebble",
    // The ACME test's dns-01 hook and its fetch of pebble's root.
    "curl",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Checks everything; installs what is missing unless `check_only`.
pub(crate) fn run(check_only: bool) -> Result<()> {
    let mut missing = Vec::new();

    if !nightly_installed() {
        // rustup cannot fetch a toolchain on every machine; say so plainly.
        missing.push(String::from(
            "the `nightly` toolchain (install it with `rustup toolchain install nightly`)",
        ));
    } else if !rust_src_installed() {
        if check_only {
            missing.push(String::from("rust-src for nightly"));
        } else {
            step("adding rust-src to the nightly toolchain");
            run_checked(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
    }

    let absent: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if !absent.is_empty() {
        if check_only {
            missing.push(format!("Debian packages: {}", absent.join(" ")));
        } else {
            step(&format!("apt-get install {}", absent.join(" ")));
            run_checked(Command::new("apt-get").arg("update").arg("-q"))?;
            run_checked(
                Command::new("apt-get")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .args(["install", "-y", "-q"])
                    .args(&absent),
            )?;
        }
    }

    if !bpf_linker_ok() {
        if check_only {
            missing.push(format!(
                "bpf-linker {BPF_LINKER_VERSION} built against LLVM 22"
            ));
        } else {
            step(&format!(
                "cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
            ));
            run_checked(
                Command::new("cargo")
                    .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                    .args([
                        "install",
                        "bpf-linker",
                        "--force",
                        "--version",
                        BPF_LINKER_VERSION,
                        "--no-default-features",
                        "--features",
                        "llvm-22",
                    ]),
            )?;
        }
    }

    if missing.is_empty() {
        println!("xtask: prerequisites ok");
        Ok(())
    } else {
        for m in &missing {
            eprintln!("xtask: missing: {m}");
        }
        bail!("{} prerequisite(s) missing", missing.len())
    }
}

fn step(what: &str) {
    println!("xtask: setup: {what}");
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_installed() -> bool {
    output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with("nightly")))
}

fn rust_src_installed() -> bool {
    output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
}

fn deb_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// bpf-linker of the pinned version, linked against LLVM 22 (rustc's LLVM).
fn bpf_linker_ok() -> bool {
    let Some(version) = output(Command::new("bpf-linker").arg("--version")) else {
        return false;
    };
    if !version.contains(BPF_LINKER_VERSION) {
        return false;
    }
    let Some(path) = output(Command::new("which").arg("bpf-linker")) else {
        return false;
    };
    output(Command::new("ldd").arg(path.trim())).is_some_and(|libs| libs.contains("libLLVM.so.22"))
}

/// cargo-fuzz, installed on first use (only `cargo xtask fuzz` needs it).
pub(crate) fn cargo_fuzz() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    step("cargo install cargo-fuzz");
    run_checked(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
