//! The stepwise demo: a NixOS-shaped system on a disk too small for the plain upgrade.
//!
//! Builds the fixture, puts a private Nix store on a tmpfs sized between |old| and |old ∪ new|,
//! installs the old generation G0, shows `nix-store --realise` of the target failing for lack of
//! space, then runs `stepwise upgrade` on the same bed. Needs root (the tmpfs mount).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use stepwise_testbed::{is_root, Bed, Disk, Fixture, FixtureSpec};

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", Fixture::mib(bytes))
}

fn disk_line(bed: &Bed) -> String {
    format!(
        "disk: {} used of {} ({} free)",
        mib(bed.used_bytes()),
        mib(bed.capacity()),
        mib(bed.available_bytes())
    )
}

fn main() -> ExitCode {
    if !is_root() {
        eprintln!(
            "stepwise-demo needs root: it mounts a small tmpfs to stand in for a VPS's full disk.\n\
             Run it as root, e.g. `sudo ./scripts/demo.sh`."
        );
        return ExitCode::from(2);
    }
    match demo() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

fn demo() -> DemoResult<ExitCode> {
    let spec = FixtureSpec::standard();
    println!("== 1. The fixture: a NixOS-shaped system, old and new (built once, then cached)");
    let mut disk_mib = 0;
    let (bed, fx) = Bed::try_prepared_with(&spec, |fx| {
        // Room for G0 and Nix's state, not for the new packages beside the old ones.
        disk_mib = fx.tight_disk_mib();
        Disk::TmpfsMib(disk_mib)
    })?;
    show_fixture(&bed, &fx);

    println!("\n== 2. A small disk: a {disk_mib} MiB tmpfs holds the store and Nix's database");
    println!("   store: {}", bed.store_dir());
    println!("   {}", disk_line(&bed));

    println!("\n== 3. Install G0 (realise, set the profile, switch-to-configuration switch)");
    let g0 = bed.install(&fx.old.drv)?;
    println!("   current-system -> {g0}");
    println!("   {}", disk_line(&bed));

    if !plain_upgrade_fails(&bed, &fx) {
        return Ok(ExitCode::FAILURE);
    }

    // The real `stepwise` binary, with the bed's Nix environment, its journal on the small disk,
    // and the bed's system links. Extend this section as the engine grows; keep asserting the
    // end state from the world, not from stepwise's output.
    println!("\n== 5. stepwise upgrade (the chain of intermediate generations)");
    let stepwise = stepwise_binary();
    if !stepwise.exists() {
        println!("   (not built: run `cargo build --bins` first, as scripts/demo.sh does)");
        return Ok(ExitCode::FAILURE);
    }
    let (status, stderr) = stepwise_upgrade(&bed, &fx, &stepwise)?;
    println!("   stepwise exited with {status}");
    if stderr.contains("is not available in this build") {
        println!("\nThis build of stepwise cannot upgrade yet: the demo ends after the plain upgrade's failure.");
        return Ok(ExitCode::SUCCESS);
    }
    println!("   {}", disk_line(&bed));
    let current = bed.current_system().unwrap_or_default();
    println!("   current-system -> {current}");
    println!("\n== 6. stepwise journal show (the audit of the run)");
    let show = bed
        .command(&stepwise)
        .arg("--journal")
        .arg(bed.journal_path())
        .args(["journal", "show"])
        .output()?;
    for line in String::from_utf8_lossy(&show.stdout).lines() {
        println!("   | {line}");
    }
    if status.success() && current == fx.new.out {
        println!(
            "\nThe target generation is running, on a disk that could not hold the plain upgrade."
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nThe target was not reached (see above); the system stays on a complete generation."
        );
        Ok(ExitCode::FAILURE)
    }
}

/// The fixture's packages, old and new, and where its binary cache is.
fn show_fixture(bed: &Bed, fx: &Fixture) {
    println!("   {}", fx.sizes_line());
    println!("   {:<14} {:>22} {:>22}", "package", "old", "new");
    for p in &fx.packages {
        let show = |v: &Option<stepwise_testbed::PackageVersionInfo>| match v {
            Some(v) => format!("{} {}", v.version, mib(v.bytes())),
            None => "-".to_string(),
        };
        let mark = if p.changes() { "" } else { "  (unchanged)" };
        println!(
            "   {:<14} {:>22} {:>22}{mark}",
            p.pname,
            show(&p.old),
            show(&p.new)
        );
    }
    println!(
        "   binary cache (stands in for cache.nixos.org): {}",
        bed.cache_dir().unwrap().display()
    );
}

/// Step 4: `nix-store --realise` of the target runs out of space and changes nothing. False
/// (the demo failed) when it fits or fails otherwise.
fn plain_upgrade_fails(bed: &Bed, fx: &Fixture) -> bool {
    println!(
        "\n== 4. The plain upgrade: nix-store --realise {}",
        fx.new.drv
    );
    println!(
        "   it needs the new packages beside the old ones: about {} more, {} free",
        mib(fx.union_bytes - fx.old_bytes),
        mib(bed.available_bytes())
    );
    match bed.realise(&[&fx.new.drv]) {
        Ok(_) => {
            println!("   unexpectedly, it fitted: the demo's disk is too large");
            return false;
        }
        Err(e) => {
            for line in e.stderr.lines().filter(|l| l.starts_with("error:")) {
                println!("   {line}");
            }
            if !e.is_out_of_space() {
                println!("   (this is not the out-of-space failure the demo expects)");
                return false;
            }
        }
    }
    println!("   {}", disk_line(bed));
    println!(
        "   current-system still -> {}",
        bed.current_system().unwrap_or_default()
    );
    true
}

/// Step 5: `stepwise upgrade`, then `stepwise resume` after each "reboot" it asks for, as the
/// boot-time service does. Its exit status and last stderr.
fn stepwise_upgrade(
    bed: &Bed,
    fx: &Fixture,
    stepwise: &std::path::Path,
) -> DemoResult<(std::process::ExitStatus, String)> {
    // This disk is sized for the plain upgrade's failure; with G0 also pinned as the booted
    // system it is a few hundred KiB too small even for steps (tests/engine_real.rs covers the
    // booted pin with reboots). Here the machine has switched since its last boot.
    std::fs::remove_file(bed.booted_system_link())?;
    println!("   (booted-system link removed: the machine has switched since its last boot)");
    let mut args: Vec<OsString> = vec!["--journal".into(), bed.journal_path().into_os_string()];
    args.extend([
        "upgrade".into(),
        "--target".into(),
        fx.new.drv.clone().into(),
    ]);
    args.extend(bed.system_args());
    // The booted system pins G0's packages until a reboot: stepwise may reboot where its plan
    // says. The demo's "reboot" re-points booted-system at the running system, as a boot would.
    args.extend([
        "--reboot".into(),
        "when-needed".into(),
        "--reboot-command".into(),
        format!(
            "cp -P -T --remove-destination {} {}",
            bed.current_system_link().display(),
            bed.booted_system_link().display()
        )
        .into(),
    ]);
    println!(
        "   {} {}",
        stepwise.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let run = |args: &[OsString]| -> DemoResult<(std::process::ExitStatus, String)> {
        let out = bed
            .command(stepwise)
            .args(args)
            .stderr(std::process::Stdio::piped())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        for line in stderr.lines() {
            println!("   | {line}");
        }
        Ok((out.status, stderr))
    };
    let (mut status, mut stderr) = run(&args)?;
    // Exit 3 after a reboot: the boot-time `stepwise resume` continues the run.
    let mut reboots = 0;
    while status.code() == Some(3) && stderr.contains("rebooting into") && reboots < 8 {
        reboots += 1;
        println!(
            "   -- \"reboot\" {reboots}: booted-system -> {}",
            bed.booted_system().unwrap_or_default()
        );
        println!(
            "   -- {} --journal {} resume",
            stepwise.display(),
            bed.journal_path().display()
        );
        let resume = [
            "--journal".into(),
            bed.journal_path().into_os_string(),
            "resume".into(),
        ];
        (status, stderr) = run(&resume)?;
    }
    Ok((status, stderr))
}

/// The `stepwise` binary built beside this demo (same target directory), or `$STEPWISE_BIN`.
fn stepwise_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STEPWISE_BIN") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("stepwise")
}
