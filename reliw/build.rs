//! Builds the XDP program (`reliw-ebpf`) with the installed nightly toolchain
//! and bpf-linker, so `include_bytes_aligned!` in `shield::object` can embed it.

#[allow(unsafe_code)] // set_var, see below
fn main() -> anyhow::Result<()> {
    // Changes to the shared layouts must rebuild the kernel side too.
    println!("cargo:rerun-if-changed=../reliw-common/src");
    println!("cargo:rerun-if-env-changed=PATH");
    // aya-build relays the nested cargo's stderr as warnings; keep only
    // compiler diagnostics (which it reads from the JSON stream) by quieting
    // cargo's progress lines.
    // SAFETY: build scripts are single-threaded here; nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let ebpf = aya_build::Package {
        name: "reliw-ebpf",
        root_dir: "../reliw-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
