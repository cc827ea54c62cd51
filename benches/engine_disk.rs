//! The smallest disk on which the fixture's upgrade completes, per filesystem: `stepwise upgrade`
//! (all packages vital, and with the big packages `--non-vital`, the seed user's practice)
//! against the plain upgrade (realise + set profile + switch), the vital bound and the lower
//! bound, each found by bisection over disk sizes (MiB).
//! - The lower bound holds the larger generation alone: no upgrade needs less.
//! - The vital bound is the least any chain of whole-package moves needs while every package stays
//!   installed: when the package whose larger version is the largest moves, the disk holds a
//!   complete generation with its old version plus its new one. At best every other package is
//!   then at its smaller version (a package the upgrade removes already gone, one it adds not yet
//!   there). Measured as the plain upgrade of a fixture made of exactly that: that generation, then
//!   the same with the package's new version (the same store paths as the real fixture's).
//!
//! Filesystems: tmpfs, ext4 and btrfs `compress-force=zstd` on loop devices; fixtures: package
//! files of half random bytes (about 2:1 under zstd), and the same with half of each package
//! identical in its old and new version under `auto-optimise-store`. The store and Nix's
//! database share the disk, as on a VPS. Prints a table; needs root.
//! `cargo bench --bench engine_disk` (`--profile dev` to reuse the debug build)
//! (`STEPWISE_BIN` for another binary; `ENGINE_DISK_ROWS=tmpfs,btrfs` for some rows only).

use std::time::Instant;

use stepwise_testbed::bench::{should_measure, smallest, stepwise_bin};
use stepwise_testbed::{Bed, Disk, Fixture, FixtureSpec, PackageSpec, Payload};

const MIB: u64 = 1024 * 1024;

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

struct Row {
    name: String,
    lower: Option<u64>,
    vital: Option<u64>,
    plain: Option<u64>,
    steps: Option<u64>,
    non_vital: Option<u64>,
}

/// The packages the seed user declares non-vital: the two big ones.
const BIG: [&str; 2] = ["big-a", "big-b"];

/// The vital bound's fixture (see the module's text): every package at its smaller version but
/// the one whose larger version is the largest, which changes; the removed and the added packages
/// left out. Sizes are the real fixture's NAR bytes.
fn vital_spec(fx: &Fixture) -> (FixtureSpec, String) {
    let larger = |pname: &str| {
        let p = fx.package(pname);
        let size = |v: &Option<stepwise_testbed::PackageVersionInfo>| v.as_ref().map(|v| v.bytes());
        size(&p.old).zip(size(&p.new)).map(|(o, n)| o.max(n))
    };
    let mover = fx
        .spec
        .packages
        .iter()
        .filter(|p| fx.package(&p.pname).changes())
        .filter_map(|p| larger(&p.pname).map(|b| (b, p.pname.clone())))
        .max()
        .expect("the fixture changes a package")
        .1;
    let mut spec = FixtureSpec {
        packages: vec![],
        ..fx.spec.clone()
    };
    for p in &fx.spec.packages {
        let info = fx.package(&p.pname);
        let (Some(old), Some(new)) = (&info.old, &info.new) else {
            continue;
        };
        let mut q: PackageSpec = p.clone();
        if p.pname != mover {
            let smaller = if new.bytes() < old.bytes() {
                &p.new
            } else {
                &p.old
            };
            q.old = smaller.clone();
            q.new = smaller.clone();
        }
        spec = spec.package(q);
    }
    (spec, mover)
}

fn measure(name: String, spec: &FixtureSpec, fx: &Fixture, fs: Fs) -> Row {
    // ext4's journal and inode tables and btrfs's metadata need room of their own on a disk
    // this small: search from a quarter of G0 (btrfs compresses) to well above the union.
    let lo = fx.old_bytes.div_ceil(MIB) / 4;
    let hi = fx.union_bytes.div_ceil(MIB) * 2 + 64;
    let alone = |new| smallest(lo, hi, |m| completes(spec, fs, m, Trial::Alone { new }));
    let lower = alone(false).zip(alone(true)).map(|(a, b)| a.max(b));
    // Every upgrade ends holding the new generation: search above the lower bound.
    let from = lower.unwrap_or(lo);
    let (vspec, _) = vital_spec(fx);
    let vital = smallest(lo, hi, |m| completes(&vspec, fs, m, Trial::Plain));
    let plain = smallest(from, hi, |m| completes(spec, fs, m, Trial::Plain));
    let steps = smallest(from, hi, |m| completes(spec, fs, m, Trial::Stepwise(&[])));
    let non_vital_args = BIG.map(|p| format!("--non-vital={p}"));
    let non_vital_args: Vec<&str> = non_vital_args.iter().map(String::as_str).collect();
    let non_vital = smallest(from, hi, |m| {
        completes(spec, fs, m, Trial::Stepwise(&non_vital_args))
    });
    let row = Row {
        name,
        lower,
        vital,
        plain,
        steps,
        non_vital,
    };
    print_row(&row);
    row
}

fn show(x: Option<u64>) -> String {
    x.map_or("none".into(), |m| m.to_string())
}

const HEADER: [&str; 9] = [
    "filesystem, fixture",
    "plain",
    "stepwise",
    "stepwise, big non-vital",
    "vital bound",
    "lower bound",
    "stepwise / plain",
    "stepwise / vital",
    "non-vital / lower",
];

fn print_cells(cells: [String; 9]) {
    let widths = HEADER.map(str::len);
    let mut line = String::from("|");
    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
        if i == 0 {
            line += &format!(" {c:<28} |");
        } else {
            line += &format!(" {c:>w$} |");
        }
    }
    println!("{line}");
}

fn print_row(r: &Row) {
    let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a as f64 / b as f64),
        _ => "-".into(),
    };
    print_cells([
        r.name.clone(),
        show(r.plain),
        show(r.steps),
        show(r.non_vital),
        show(r.vital),
        show(r.lower),
        ratio(r.steps, r.plain),
        ratio(r.steps, r.vital),
        ratio(r.non_vital, r.lower),
    ]);
}

fn main() {
    if !should_measure("engine_disk") {
        return;
    }
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
    let started = Instant::now();
    println!("fixture: {}", fixtures[0].sizes_line());
    let (_, mover) = vital_spec(&fixtures[0]);
    println!(
        "smallest disk (MiB) on which each completes; non-vital: {}; vital bound: {mover} moving; \
         lower bound: the larger generation alone",
        BIG.map(|p| format!("--non-vital {p}")).join(" ")
    );
    print_cells(HEADER.map(String::from));
    println!("|{}|", ["---"; 9].join("|"));
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
    println!("measured in {:.0} s", started.elapsed().as_secs_f64());
}
