//! `cargo xtask test`: every test in the workspace, with one closing line
//! that counts them (`tests: N passed, N failed[, N skipped]`).
//!
//! `RELIW_SKIP_PRIVILEGED=1` leaves out the tests in `privileged` modules
//! (they need root for XDP and namespaces) and reports them as skipped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::cargo;

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    filtered: u64,
}

impl Tally {
    /// Adds a libtest closing line: `test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().skip_while(|w| w.ends_with('.'));
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "filtered" => self.filtered += n,
                _ => {}
            }
        }
    }
}

pub(crate) fn run(root: &Path, mut args: Vec<String>) -> Result<()> {
    let skip_privileged = std::env::var("RELIW_SKIP_PRIVILEGED").as_deref() == Ok("1");
    if skip_privileged {
        if !args.iter().any(|a| a == "--") {
            args.push(String::from("--"));
        }
        args.extend(["--skip", "privileged::"].map(String::from));
        println!("xtask: RELIW_SKIP_PRIVILEGED=1: leaving out the privileged tests");
    }
    let mut child = cargo()
        .current_dir(root)
        .args(["test", "--workspace", "--exclude", "reliw-ebpf"])
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut tally = Tally::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            tally.add(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    let skipped = if skip_privileged { tally.filtered } else { 0 };
    let mut summary = format!("tests: {} passed, {} failed", tally.passed, tally.failed);
    if skipped > 0 {
        summary.push_str(&format!(", {skipped} skipped"));
    }
    println!("{summary}");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_libtest_closing_lines() {
        let mut t = Tally::default();
        t.add("test result: ok. 10 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.15s");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 9s");
        t.add("running 4 tests");
        assert_eq!((t.passed, t.failed, t.filtered), (13, 1, 4));
    }
}
