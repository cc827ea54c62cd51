//! The smallest disk on which the fixture's upgrade completes, per filesystem: `stepwise upgrade`
//! against the plain upgrade (realise + set profile + switch), and the lower bound (the smallest
//! disk that holds the larger generation alone), each found by bisection over disk sizes (MiB).
//! Filesystems: tmpfs, ext4 and btrfs `compress-force=zstd` on loop devices; fixtures: package
//! files of half random bytes (about 2:1 under zstd), and the same with half of each package
//! identical in its old and new version under `auto-optimise-store`. The store and Nix's
//! database share the disk, as on a VPS. Prints a table; needs root.
//! `cargo bench --bench engine_disk` (`--profile dev` to reuse the debug build)
//! (`STEPWISE_BIN` for another binary; `ENGINE_DISK_ROWS=tmpfs,btrfs` for some rows only).

use stepwise_testbed::{is_root, Bed, Disk, Fixture, FixtureSpec, Payload};

const MIB: u64 = 1024 * 1024;

fn stepwise_bin() -> std::path::PathBuf {
    std::env::var_os("STEPWISE_BIN")
        .map(Into::into)
        .unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap();
            me.parent().unwrap().parent().unwrap().join("stepwise")
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fs {
    Tmpfs,
    Ext4,
    BtrfsZstd,
}

impl Fs {
    fn disk(self, mib: u64) -> Disk {
        match self {
            Fs::Tmpfs => Disk::TmpfsMib(mib),
            Fs::Ext4 => Disk::Ext4Mib(mib),
            Fs::BtrfsZstd => Disk::BtrfsZstdMib(mib),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fs::Tmpfs => "tmpfs",
            Fs::Ext4 => "ext4",
            Fs::BtrfsZstd => "btrfs zstd",
        }
    }
}

/// What to run on a fresh disk.
#[derive(Clone, Copy)]
enum Trial<'a> {
    /// Install one generation alone (the lower bound: the larger one).
    Alone {
        new: bool,
    },
    Plain,
    Stepwise(&'a [&'a str]),
}

/// Does the trial complete on a `fs` of `mib` MiB?
fn completes(spec: &FixtureSpec, fs: Fs, mib: u64, trial: Trial) -> bool {
    let Ok((bed, fx)) = Bed::try_prepared_with(spec, |_| fs.disk(mib)) else {
        return false;
    };
    if let Trial::Alone { new } = trial {
        let drv = if new { &fx.new.drv } else { &fx.old.drv };
        return bed.install(drv).is_ok();
    }
    if bed.install(&fx.old.drv).is_err() {
        return false;
    }
    // A machine switched since boot (the booted pin is issue 8's reboot).
    let _ = std::fs::remove_file(bed.booted_system_link());
    match trial {
        Trial::Stepwise(extra) => {
            let o = bed
                .command(stepwise_bin())
                .arg("--journal")
                .arg(bed.journal_path())
                .args(["-q", "upgrade", "--target", &fx.new.drv])
                .args(bed.system_args())
                .args(extra)
                .output()
                .unwrap();
            o.status.success() && bed.current_system().as_deref() == Some(fx.new.out.as_str())
        }
        _ => bed.install(&fx.new.drv).is_ok(),
    }
}

/// The smallest size in [lo, hi] where `ok` holds (assumed monotone), or None.
fn smallest(mut lo: u64, mut hi: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
    if !ok(hi) {
        return None;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi)
}

struct Row {
    name: String,
    lower: Option<u64>,
    plain: Option<u64>,
    steps: Option<u64>,
}

fn measure(name: String, spec: &FixtureSpec, fx: &Fixture, fs: Fs) -> Row {
    // ext4's journal and inode tables and btrfs's metadata need room of their own on a disk
    // this small: search from a quarter of G0 (btrfs compresses) to well above the union.
    let lo = fx.old_bytes.div_ceil(MIB) / 4;
    let hi = fx.union_bytes.div_ceil(MIB) * 2 + 64;
    let alone = |new| smallest(lo, hi, |m| completes(spec, fs, m, Trial::Alone { new }));
    let lower = alone(false).zip(alone(true)).map(|(a, b)| a.max(b));
    let plain = smallest(lo, hi, |m| completes(spec, fs, m, Trial::Plain));
    let steps = smallest(lo, hi, |m| completes(spec, fs, m, Trial::Stepwise(&[])));
    let row = Row {
        name,
        lower,
        plain,
        steps,
    };
    print_row(&row);
    row
}

fn show(x: Option<u64>) -> String {
    x.map_or("none".into(), |m| m.to_string())
}

fn print_row(r: &Row) {
    let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a as f64 / b as f64),
        _ => "-".into(),
    };
    println!(
        "| {:<26} | {:>9} | {:>12} | {:>15} | {:>16} | {:>16} |",
        r.name,
        show(r.plain),
        show(r.steps),
        show(r.lower),
        ratio(r.steps, r.plain),
        ratio(r.steps, r.lower),
    );
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "engine_disk: run with `cargo bench --bench engine_disk`; skipped under cargo test"
        );
        return;
    }
    if !is_root() {
        eprintln!("engine_disk: needs root (tmpfs, loop devices); skipped");
        return;
    }
    assert!(stepwise_bin().exists(), "build the binary first");
    let rows = std::env::var("ENGINE_DISK_ROWS").unwrap_or_default();
    let wanted = |key: &str| rows.is_empty() || rows.split(',').any(|r| r == key);
    let compressible = FixtureSpec::standard().with_payload(Payload::HalfRandom);
    let dedup = FixtureSpec::standard().deduplicated(50);
    let mut fixtures = Vec::new();
    for spec in [&compressible, &dedup] {
        let (bed, fx): (Bed, Fixture) = Bed::prepared_with(spec, |_| Disk::Unlimited);
        drop(bed);
        fixtures.push(fx);
    }
    println!("fixture: {}", fixtures[0].sizes_line());
    println!("smallest disk (MiB) on which each completes; the lower bound holds the larger generation alone");
    println!(
        "| {:<26} | {:>9} | {:>12} | {:>15} | {:>16} | {:>16} |",
        "filesystem, fixture",
        "plain",
        "stepwise",
        "lower bound",
        "stepwise / plain",
        "stepwise / lower"
    );
    println!("|{}|", ["-"; 6].map(|_| "---").join("|"));
    let cases = [
        ("tmpfs", Fs::Tmpfs, 0, "half-random"),
        ("ext4", Fs::Ext4, 0, "half-random"),
        ("btrfs", Fs::BtrfsZstd, 0, "half-random"),
        ("tmpfs-dedup", Fs::Tmpfs, 1, "50% shared, optimised"),
    ];
    for (key, fs, f, what) in cases {
        if wanted(key) {
            let spec = if f == 0 { &compressible } else { &dedup };
            measure(format!("{}, {what}", fs.name()), spec, &fixtures[f], fs);
        }
    }
}
