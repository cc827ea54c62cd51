//! Stepwise's memory whatever Nix prints: a child printing a 100 MB log, through the process
//! runner (stderr lines; stdout streamed as a log) and, as root, through a real `nix-store
//! --realise` whose builder prints it. Prints each case's peak RSS (`VmHWM`, reset between cases
//! through `/proc/self/clear_refs`) and throughput; the bound is 50 MiB.
//! `cargo bench --bench runner` (`--profile dev` to reuse the debug build).

use std::time::Instant;

use stepwise::drv::StoreDir;
use stepwise::effects::nix::argv::Invocation;
use stepwise::effects::nix::runner::{RunOptions, Runner, StdoutMode, Stream};
use stepwise::effects::nix::{NixCli, NixCliConfig};
use stepwise::effects::store::Store;
use stepwise_testbed::{is_root, nix_str, Bed};

const LOG_MB: u64 = 100;
const BOUND_MIB: u64 = 50;

/// A shell loop printing `LOG_MB` MB of 100-byte lines to file descriptor `fd`.
fn printer(fd: u8) -> String {
    format!(
        "yes 'a line of a build log, as long as a compiler command line would be in a real build …' | head -c {} >&{fd}",
        LOG_MB * 1_000_000
    )
}

/// The peak resident set of this process since the last reset, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Reset the peak to the current resident set (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn report(case: &str, lines: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    println!(
        "{case:<40} {lines:>9} lines  {:>7.1} MB/s  peak RSS {:>6.1} MiB  (bound {BOUND_MIB} MiB: {})",
        LOG_MB as f64 / secs,
        peak as f64 / 1024.0,
        if peak < BOUND_MIB * 1024 { "ok" } else { "EXCEEDED" }
    );
}

fn through_runner(case: &str, fd: u8, stdout: StdoutMode) {
    let r = Runner::new(vec![], None).unwrap();
    let inv = Invocation::new("/bin/sh").arg("-c").arg(printer(fd));
    let mut lines = 0u64;
    let mut count = |_: Stream, _: &str| lines += 1;
    reset_peak();
    let started = Instant::now();
    let out = r
        .run(
            &inv,
            RunOptions {
                stdout,
                on_line: Some(&mut count),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_str());
    report(case, lines, started);
}

fn through_nix_realise() {
    let bed = Bed::new().unwrap();
    let file = bed.root().join("loud.nix");
    let script = format!("{}; echo done > $out", printer(2));
    std::fs::write(
        &file,
        format!(
            "derivation {{ name = \"loud-1.0\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; args = [ \"-c\" {} ]; }}\n",
            nix_str(&script)
        ),
    )
    .unwrap();
    let drv = bed.instantiate(&file, None).unwrap();
    let drv = StoreDir::new(bed.store_dir())
        .unwrap()
        .parse(drv.trim())
        .unwrap();
    let s = NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .unwrap();
    let mut lines = 0u64;
    reset_peak();
    let started = Instant::now();
    s.realise(&drv, &bed.root().join("roots/loud"), &mut |_| lines += 1)
        .unwrap();
    report("nix-store --realise (builder's log)", lines, started);
}

fn main() {
    reset_peak();
    println!(
        "baseline peak RSS {:.1} MiB; a child printing {LOG_MB} MB:",
        peak_rss_kib() as f64 / 1024.0
    );
    through_runner("runner, stderr lines", 2, StdoutMode::default());
    through_runner("runner, stdout streamed as a log", 1, StdoutMode::Stream);
    if is_root() {
        through_nix_realise();
    } else {
        println!("(not root: the real `nix-store --realise` case is skipped)");
    }
}
