//! The year in a test: a system taken through 12 successive revisions (each bumping another mix
//! of packages, as hourly nixpkgs updates do) on a disk where the big ones do not fit as a plain
//! upgrade, driving the binary exactly as the NixOS module does: the timer's `stepwise upgrade`
//! and the boot's `stepwise resume`. Power cuts (every process of the run's session SIGKILLed)
//! at seeded random moments, each followed by a boot (`resume`) or by the next timer tick, and
//! an hourly `nix-store --gc` before every tick (the module's timer runs after `nix-gc.service`).
//!
//! Checked: after every cut the profile and current-system point at a complete generation; every
//! boot's `resume` exits 0; every revision is reached exactly; `journal verify` passes at the end.
//! `STEPWISE_SOAK_SEED` replays a seed. Root only (tmpfs).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use stepwise_testbed::{
    kill_session, require_root, spawn_own_session, Bed, PackageSpec, Role, Series, SeriesSpec,
    NIX_STATE_ALLOWANCE_MIB,
};

const MIB: u64 = 1 << 20;

/// The packages of revision 0 and, for each later revision, the packages it bumps (`+NAME`
/// adds one, `-NAME` removes it).
const BUMPS: [&[&str]; 12] = [
    &["tool-d"],
    &["big-a"],
    &["big-b", "mid-c"],
    &["linux", "initrd-linux"],
    &["big-a", "big-b"],
    &["tool-d", "mid-c"],
    &["+extra-e"],
    &["-extra-e", "big-a"],
    // A mass rebuild (glibc): everything changes.
    &[
        "big-a",
        "big-b",
        "mid-c",
        "tool-d",
        "linux",
        "initrd-linux",
        "coreutils",
    ],
    &["mid-c"],
    &["big-b"],
    &["tool-d", "linux", "initrd-linux"],
];

fn base_packages() -> Vec<PackageSpec> {
    vec![
        PackageSpec::unchanged("big-a", 12).service(),
        PackageSpec::unchanged("big-b", 10).with_output("man"),
        PackageSpec::unchanged("mid-c", 6),
        PackageSpec::unchanged("tool-d", 2).service(),
        PackageSpec::unchanged("coreutils", 1),
        PackageSpec::unchanged("linux", 4).role(Role::Kernel),
        PackageSpec::unchanged("initrd-linux", 1).role(Role::Initrd),
    ]
}

/// Revision k's packages: revision k-1's with the bumped ones at version k.
fn series_spec() -> SeriesSpec {
    let mut revisions = vec![base_packages()];
    for (k, bumps) in BUMPS.iter().enumerate() {
        let mut next = revisions[k].clone();
        for b in bumps.iter() {
            if let Some(name) = b.strip_prefix('+') {
                next.push(PackageSpec::unchanged(name, 3));
            } else if let Some(name) = b.strip_prefix('-') {
                next.retain(|p| p.pname != name);
            } else {
                let p = next.iter_mut().find(|p| p.pname == *b).expect("a package");
                let v = p.old.as_mut().expect("a version");
                v.version = format!("{}.0", k + 2);
            }
        }
        revisions.push(next);
    }
    SeriesSpec {
        host: "soak".into(),
        revisions,
    }
}

/// A small seeded generator (xorshift), so a failing run can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The bed's `/etc/stepwise/config.toml`, which the NixOS module writes from its options.
fn config_file(bed: &Bed) -> PathBuf {
    bed.root().join("etc/stepwise/config.toml")
}

/// A stepwise command reading the bed's settings file when there is one, as every command the
/// module starts reads `/etc/stepwise/config.toml`.
fn stepwise(bed: &Bed, args: &[&str]) -> Command {
    let mut cmd = bed.stepwise(env!("CARGO_BIN_EXE_stepwise"), args);
    let config = config_file(bed);
    if config.exists() {
        cmd.env("STEPWISE_CONFIG", config);
    }
    cmd
}

/// The timer's run, as the module starts it with `allowReboot`: the reboot command is `true`
/// here, so the run stops (exit 3, "rebooting into …") and the test boots the machine.
fn upgrade(bed: &Bed, target_drv: &str) -> Command {
    let mut cmd = stepwise(bed, &["upgrade", "--target", target_drv]);
    cmd.args(bed.system_args());
    // The machine's reboot: a mark the test boots on (`boot`), also after a power cut.
    let mark = reboot_mark(bed);
    cmd.args(["--reboot", "when-needed", "--reboot-command"]);
    cmd.arg(format!("touch {}", mark.display()));
    cmd
}

/// The file the runs' reboot command touches: the machine is going down.
fn reboot_mark(bed: &Bed) -> std::path::PathBuf {
    bed.root().join("run").join("reboot-requested")
}

/// Whether a run stopped to reboot (and the test must boot the machine).
fn rebooting(o: &Output) -> bool {
    o.status.code() == Some(3) && String::from_utf8_lossy(&o.stderr).contains("rebooting into")
}

fn show(o: &Output) -> String {
    stepwise_testbed::show_output(o)
}

/// The profile and current-system name generations whose closures are complete.
fn complete(bed: &Bed, when: &str) {
    for (what, link) in [
        ("profile", bed.profile_target()),
        ("current-system", bed.current_system()),
    ] {
        let link = link.unwrap_or_else(|| panic!("{when}: {what} is missing"));
        let closure = bed
            .closure(&[&link])
            .unwrap_or_else(|e| panic!("{when}: {what} {link}: {e}"));
        for p in &closure {
            assert!(
                bed.is_valid(p).unwrap(),
                "{when}: {what}'s {p} is not valid"
            );
        }
    }
}

/// A boot (after a power cut or a reboot the run asked for): the boot loader's default becomes
/// the booted and the current system, then the module's `stepwise-resume.service` runs, which
/// exits 0, or asks for the next reboot. Returns the boots.
fn boot(bed: &Bed, when: &str) -> u32 {
    for boots in 1..10 {
        let _ = std::fs::remove_file(reboot_mark(bed));
        let default = bed
            .boot_default()
            .unwrap_or_else(|| panic!("{when}: no boot default"));
        bed.set_booted(&default).unwrap();
        stepwise_testbed::replace_symlink(default.as_ref(), &bed.current_system_link()).unwrap();
        complete(bed, &format!("{when}, boot {boots}"));
        let o = stepwise(bed, &["resume"]).output().unwrap();
        if !rebooting(&o) {
            assert_eq!(
                o.status.code(),
                Some(0),
                "{when}: the boot's resume: {}\n{}",
                show(&o),
                what_happened(bed)
            );
            return boots;
        }
    }
    panic!("{when}: still rebooting after 10 boots");
}

/// The journal's runs, the live paths and the disk, for a failure's message.
fn what_happened(bed: &Bed) -> String {
    let journal = stepwise(bed, &["-v", "journal", "show"]).output().unwrap();
    let live = bed
        .command("nix-store")
        .args(["--gc", "--print-live"])
        .output()
        .unwrap();
    format!(
        "journal show -v:\n{}\nlive paths:\n{}\nbooted {:?}, current {:?}, profile {:?}; \
         disk: {} of {} bytes free",
        String::from_utf8_lossy(&journal.stdout),
        String::from_utf8_lossy(&live.stdout),
        bed.booted_system(),
        bed.current_system(),
        bed.profile_target(),
        bed.available_bytes(),
        bed.capacity()
    )
}

#[derive(Default, Debug)]
struct Figures {
    cuts: u32,
    boots: u32,
    ticks: u32,
    gcs: u32,
    plain_would_not_fit: u32,
}

/// The disk: the largest revision, room for its largest package twice (a power cut's boot may
/// pin an intermediate step until the next reboot), and Nix's state.
#[test]
fn twelve_revisions_through_power_cuts_boots_and_timer_ticks() {
    if !require_root("soak: twelve revisions with power cuts") {
        return;
    }
    soak(
        spec_largest_closure_guess() + 2 * 12 + NIX_STATE_ALLOWANCE_MIB + 4,
        &[],
    );
}

/// On a disk with room for the largest package only once, configured as a user of such a disk
/// does: the module's `nonVital = [ "big-b" ]` (the settings file every command reads), so a
/// revision that bumps both big packages takes big-b out and brings it back upgraded. A power
/// cut, then a boot into an intermediate step pins that step; the rest of the chain is re-planned
/// when a step runs out of space, and a reboot the plan asks for frees what an older booted
/// system pinned of G0. The default seed reaches every revision (80 s on Nix 2.8, two busy
/// cores), and so does seed 12345 (94 s; it stopped at revision 8 before the plan counted Nix's
/// write-ahead log and build logs). Seed 987654321 stops at a planner limit: a new run's plan
/// does not count what an older booted system pins outside G0 as freed by a reboot (revision 6:
/// "1.8 MiB more would be needed to move mid-c", r4 booted; the same seed fails the test above
/// at revision 8 with r4 booted under r7). A run that asked for a reboot before a power cut has
/// the machine boot.
/// Run it with
/// `STEPWISE_REQUIRE_ROOT_TESTS=1 cargo test --test soak_real -- --ignored --nocapture`.
#[test]
#[ignore = "seed 987654321 hits a planner limit (booted pins outside G0); see above"]
fn twelve_revisions_on_the_tightest_disk() {
    if !require_root("soak: twelve revisions on the tightest disk") {
        return;
    }
    soak(
        spec_largest_closure_guess() + 12 + NIX_STATE_ALLOWANCE_MIB + 4,
        &["big-b"],
    );
}

/// Takes the series through every revision on a tmpfs of `disk_mib` MiB, with the module's
/// `nonVital` set to `non_vital`.
fn soak(disk_mib: u64, non_vital: &[&str]) {
    let mut seed: u64 = std::env::var("STEPWISE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_50a4);
    eprintln!("seed {seed} (STEPWISE_SOAK_SEED replays it)");
    let spec = series_spec();
    let (bed, series) = Bed::series(&spec, disk_mib).expect("building the series");
    if !non_vital.is_empty() {
        let names: Vec<String> = non_vital.iter().map(|n| format!("{n:?}")).collect();
        let toml = format!("[upgrade]\nnon-vital = [{}]\n", names.join(", "));
        let config = config_file(&bed);
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, toml).unwrap();
    }
    let mut figures = Figures::default();
    for k in 1..series.revisions.len() {
        let plain_peak = series.union_bytes[k - 1] / MIB + NIX_STATE_ALLOWANCE_MIB;
        if plain_peak > disk_mib {
            figures.plain_would_not_fit += 1;
        }
        reach(&bed, &series, k, &mut seed, &mut figures);
    }
    let o = stepwise(&bed, &["journal", "verify"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "journal verify: {}", show(&o));
    let bytes = std::fs::metadata(bed.journal_path()).unwrap().len();
    eprintln!(
        "soak: {} revisions on a {disk_mib} MiB disk ({} of them too big for a plain upgrade): \
         {} power cuts, {} boots, {} timer ticks, {} GCs; journal {} KiB",
        series.revisions.len() - 1,
        figures.plain_would_not_fit,
        figures.cuts,
        figures.boots,
        figures.ticks,
        figures.gcs,
        bytes / 1024
    );
    assert!(
        figures.plain_would_not_fit > 0,
        "the disk is too roomy: {figures:?}"
    );
    assert!(figures.cuts > 0 && figures.boots > 0, "{figures:?}");
}

/// MiB of the largest revision's closure, from the spec's sizes (packages and their `man`
/// outputs), rounded up, plus a MiB of glue.
fn spec_largest_closure_guess() -> u64 {
    series_spec()
        .revisions
        .iter()
        .map(|r| {
            r.iter()
                .filter_map(|p| p.old.as_ref())
                .map(|v| v.kib.div_ceil(1024))
                .sum::<u64>()
                + 1
        })
        .max()
        .unwrap_or(0)
}

/// Timer ticks (some cut short by a power cut, then a boot or not) until revision `k` runs.
fn reach(bed: &Bed, series: &Series, k: usize, seed: &mut u64, f: &mut Figures) {
    let target = &series.revisions[k];
    let mut cuts_here = 0;
    for attempt in 0.. {
        assert!(attempt < 10, "revision {k} not reached after 10 ticks");
        let when = format!("revision {k}, tick {attempt}");
        f.ticks += 1;
        // The timer evaluates the configuration every time (`--flake`/`--file`): an hourly GC
        // may have taken the last evaluation's `.drv`.
        // The hourly `nix-gc.service` the module's timer runs after (the seed's users collect
        // every hour): garbage a cut run left (a step's glue) is not stepwise's to delete.
        bed.gc().unwrap();
        f.gcs += 1;
        let drv = bed.instantiate(&series.file, Some(&target.name)).unwrap();
        assert_eq!(drv, target.drv, "{when}: the evaluation is deterministic");
        if cuts_here < 2 && next(seed) % 3 != 0 {
            let mut child = spawn_own_session(
                upgrade(bed, &target.drv)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .unwrap();
            // A random moment, not a synchronisation: wherever the run is, the cut must be safe.
            std::thread::sleep(Duration::from_millis(next(seed) % 4000));
            kill_session(&mut child, Signal::SIGKILL).unwrap();
            f.cuts += 1;
            cuts_here += 1;
            complete(bed, &format!("{when}, after the cut"));
            // A boot, or not (an OOM kill, a `systemctl stop`): but a run that had asked for the
            // reboot before the cut has the machine going down all the same.
            let coin = next(seed) % 2 == 0;
            if coin || reboot_mark(bed).exists() {
                f.boots += boot(bed, &when);
            }
            continue;
        }
        let o = upgrade(bed, &target.drv).output().unwrap();
        if rebooting(&o) {
            f.boots += boot(bed, &when);
        } else {
            assert_eq!(
                o.status.code(),
                Some(0),
                "{when}: {}\n{}",
                show(&o),
                what_happened(bed)
            );
        }
        if bed.profile_target().as_deref() == Some(target.out.as_str()) {
            assert_eq!(bed.current_system().as_deref(), Some(target.out.as_str()));
            complete(bed, &when);
            return;
        }
    }
}
