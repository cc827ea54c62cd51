//! The engine on real Nix (doc/design.md, "Test beds"): private stores, tmpfs disks, a file:// cache, the
//! NixOS-shaped fixture, and the real `stepwise` binary. Root only (tmpfs): skipped otherwise,
//! failing when STEPWISE_REQUIRE_ROOT_TESTS=1.

use std::process::Output;

use stepwise_testbed::{require_root, Bed, Disk, Fixture, FixtureSpec, PackageSpec};

fn stepwise(bed: &Bed, args: &[&str]) -> Output {
    bed.stepwise(env!("CARGO_BIN_EXE_stepwise"), args)
        .output()
        .expect("running stepwise")
}

fn upgrade(bed: &Bed, fx: &Fixture, extra: &[&str]) -> Output {
    let mut cmd = bed.command(env!("CARGO_BIN_EXE_stepwise"));
    cmd.arg("--journal").arg(bed.journal_path());
    cmd.args(["upgrade", "--target", &fx.new.drv]);
    cmd.args(bed.system_args());
    cmd.args(extra);
    cmd.output().expect("running stepwise upgrade")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What "nothing changed" compares: the profile and current-system links, the profile's
/// generation links, and the store's valid paths.
type SystemState = (
    Option<String>,
    Option<String>,
    std::collections::BTreeSet<std::ffi::OsString>,
    std::collections::BTreeSet<String>,
);

fn system_state(bed: &Bed) -> SystemState {
    (
        bed.profile_target(),
        bed.current_system(),
        std::fs::read_dir(bed.profile().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect(),
        bed.valid_paths().unwrap(),
    )
}

fn verify(bed: &Bed) {
    let v = stepwise(bed, &["journal", "verify"]);
    assert_eq!(v.status.code(), Some(0), "journal verify: {}", show(&v));
}

#[test]
fn plain_upgrade_reaches_the_exact_target() {
    if !require_root("engine: plain upgrade on real Nix") {
        return;
    }
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::two_big(2), |_| Disk::Unlimited);
    let g0 = bed.install(&fx.old.drv).unwrap();
    let o = upgrade(&bed, &fx, &["--strategy", "direct"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    // booted-system still pins G0 (only a reboot frees it): never delete a live path.
    assert!(bed.is_valid(&g0).unwrap(), "G0 is booted, hence live");
    verify(&bed);
    let s = stepwise(&bed, &["status", "--json"]);
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(text.contains("the target was reached"), "{text}");
}

#[test]
fn a_failing_package_unwinds_to_the_exact_g0() {
    if !require_root("engine: build failure on real Nix") {
        return;
    }
    let spec = FixtureSpec::two_big(2).package(PackageSpec::changed("broken", 1, 1).new_fails());
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    let g0 = bed.install(&fx.old.drv).unwrap();
    let o = upgrade(&bed, &fx, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken"),
        "the message names the package: {err}"
    );
    assert!(err.contains("G0"), "the message says what was done: {err}");
    assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
    assert!(bed.is_valid(&g0).unwrap());
    verify(&bed);
    // The run is over: nothing to resume (exit 0, one line).
    let r = stepwise(&bed, &["resume"]);
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("nothing to resume"));
}

#[test]
fn unwind_after_reaching_the_target_is_refused_but_status_works() {
    if !require_root("engine: status on real Nix") {
        return;
    }
    let (bed, _fx) = Bed::prepared_with(&FixtureSpec::two_big(1), |_| Disk::Unlimited);
    let s = stepwise(&bed, &["status"]);
    assert_eq!(s.status.code(), Some(0), "{}", show(&s));
    let r = stepwise(&bed, &["resume"]);
    assert_eq!(r.status.code(), Some(0), "no run to resume: {}", show(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("nothing to resume"));
}

#[test]
fn stepwise_reaches_the_target_where_the_plain_upgrade_does_not_fit() {
    if !require_root("engine: stepwise on a tight tmpfs") {
        return;
    }
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |f| {
        Disk::TmpfsMib(f.tight_disk_mib())
    });
    let g0 = bed.install(&fx.old.drv).unwrap();
    // The booted system pins G0 until a reboot: with it, no order fits and nothing changes.
    let o = upgrade(&bed, &fx, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
    assert!(
        !bed.journal_path().exists() || {
            let s = stepwise(&bed, &["status"]);
            String::from_utf8_lossy(&s.stdout).contains("no run")
        }
    );
    // A machine switched since boot: old paths free at once.
    std::fs::remove_file(bed.booted_system_link()).unwrap();
    let o = upgrade(&bed, &fx, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("steps instead"), "auto chose the steps: {err}");
    // Exactly the target: its own output path, running and in the profile.
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    assert!(!bed.is_valid(&g0).unwrap(), "G0 was collected");
    verify(&bed);
}

#[test]
fn stepwise_build_failure_walks_back_through_the_steps_to_g0() {
    if !require_root("engine: stepwise failure on a tight tmpfs") {
        return;
    }
    let spec =
        FixtureSpec::standard().package(PackageSpec::changed("zz-broken", 16, 16).new_fails());
    let (bed, fx) = Bed::prepared_with(&spec, |f| Disk::TmpfsMib(f.tight_disk_mib()));
    let g0 = bed.install(&fx.old.drv).unwrap();
    std::fs::remove_file(bed.booted_system_link()).unwrap();
    let o = upgrade(&bed, &fx, &["--strategy", "stepwise"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("zz-broken"), "names the package: {err}");
    eprintln!("{err}");
    assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
    verify(&bed);
}

/// Issue 8: the booted system pins G0; with `--reboot when-needed` the run reboots (a command
/// that re-points booted-system at the running system) where the plan says, stops with exit 3,
/// and `stepwise resume` at "boot" continues until the target is reached.
#[test]
fn reboots_when_needed_until_the_target_is_reached() {
    if !require_root("engine: reboots on a tight tmpfs") {
        return;
    }
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |f| {
        Disk::TmpfsMib(f.tight_disk_mib())
    });
    let g0 = bed.install(&fx.old.drv).unwrap();
    assert_eq!(bed.booted_system().as_deref(), Some(g0.as_str()));
    let reboot = format!(
        "cp -P -T --remove-destination {} {}",
        bed.current_system_link().display(),
        bed.booted_system_link().display()
    );
    let o = upgrade(
        &bed,
        &fx,
        &["--reboot", "when-needed", "--reboot-command", &reboot],
    );
    let mut reboots = 0;
    let mut last = o;
    while last.status.code() == Some(3) {
        let err = String::from_utf8_lossy(&last.stderr);
        assert!(err.contains("rebooting into"), "{}", show(&last));
        eprintln!("{err}");
        reboots += 1;
        assert_eq!(
            bed.booted_system(),
            bed.current_system(),
            "the reboot happened"
        );
        verify(&bed);
        assert!(reboots < 10, "too many reboots");
        last = stepwise(&bed, &["resume"]);
    }
    assert_eq!(last.status.code(), Some(0), "{}", show(&last));
    assert!(reboots >= 1, "the booted pin needs at least one reboot");
    eprintln!("reboots used: {reboots}");
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    verify(&bed);
}

/// A resume before the reboot happened waits (exit 3) and changes nothing.
#[test]
fn resume_before_the_reboot_waits() {
    if !require_root("engine: resume before reboot") {
        return;
    }
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |f| {
        Disk::TmpfsMib(f.tight_disk_mib())
    });
    bed.install(&fx.old.drv).unwrap();
    // A reboot command that does nothing: the machine did not go down (yet).
    let o = upgrade(
        &bed,
        &fx,
        &["--reboot", "when-needed", "--reboot-command", "true"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let before = bed.profile_target();
    let r = stepwise(&bed, &["resume"]);
    assert_eq!(r.status.code(), Some(3), "{}", show(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("waiting for the reboot"));
    assert_eq!(bed.profile_target(), before);
    // The hourly timer's next `upgrade` continues the unfinished run first, which still waits
    // for the reboot (exit 3): it neither deletes nor journals anything.
    let valid = bed.valid_paths().unwrap();
    let records = stepwise(&bed, &["journal", "export"]).stdout;
    let u = upgrade(
        &bed,
        &fx,
        &["--reboot", "when-needed", "--reboot-command", "true"],
    );
    assert_eq!(u.status.code(), Some(3), "{}", show(&u));
    assert!(
        String::from_utf8_lossy(&u.stderr).contains("waiting for the reboot"),
        "{}",
        show(&u)
    );
    assert_eq!(bed.profile_target(), before);
    assert_eq!(bed.valid_paths().unwrap(), valid);
    assert_eq!(stepwise(&bed, &["journal", "export"]).stdout, records);
    verify(&bed);
}

/// Issue 8: a disk where only taking a non-vital package out for the duration makes the upgrade
/// fit. The planner is left 23 MiB of room (as in plan_real's stub case): big-b (22 MiB) fits,
/// big-a (24 MiB) only once big-b's old version is gone. Without `--non-vital big-b`: exit 3,
/// nothing changed. With it: the target exactly, big-b back and upgraded.
#[test]
fn only_a_non_vital_package_out_and_back_makes_room() {
    if !require_root("engine: non-vital package out and back on a tight tmpfs") {
        return;
    }
    // Switched since boot (no booted pin), and a reserve that leaves 23 MiB: only room is short.
    let (bed, fx, g0, reserve) = Bed::squeezed(&FixtureSpec::standard(), 23);
    let before = system_state(&bed);

    let o = upgrade(&bed, &fx, &["--reserve", &reserve]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--non-vital big-"),
        "says what would help: {err}"
    );
    assert!(!err.contains("resume"), "there is no run to resume: {err}");
    eprintln!("{err}");
    assert_eq!(before, system_state(&bed), "nothing changed");

    let o = upgrade(&bed, &fx, &["--reserve", &reserve, "--non-vital", "big-b"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("{err}");
    assert!(
        err.contains("checking that big-b can be taken out"),
        "the stub was probed first: {err}"
    );
    assert!(
        err.contains("1 stub(s) added"),
        "big-b went out as a stub: {err}"
    );
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    let closure = bed.closure(&[&fx.new.out]).unwrap();
    let big_b = fx.package("big-b");
    for p in big_b.new.as_ref().unwrap().outputs.values() {
        assert!(closure.contains(p), "big-b is back, upgraded: {p}");
    }
    assert!(
        !closure.iter().any(|p| p.contains("stepwise-stub-")),
        "no stub in the target"
    );
    assert!(!bed.is_valid(&g0).unwrap(), "G0 was collected");
    for p in big_b.old.as_ref().unwrap().outputs.values() {
        assert!(
            !bed.is_valid(p).unwrap(),
            "big-b's old version is gone: {p}"
        );
    }
    verify(&bed);
}

/// Issue 8: a non-vital package whose files the system's glue reads (here the `etc` glue copies
/// big-b's config) cannot be replaced by a stub. On the same tight disk as above, `--non-vital
/// big-b` is refused before anything changes: exit 2, the glue named with its log, and the
/// profile, links, store and journal exactly as before (the probe's scratch removed).
#[test]
fn a_non_vital_package_the_glue_reads_is_refused_before_anything_changes() {
    if !require_root("engine: non-vital package whose stub breaks a glue build") {
        return;
    }
    let mut spec = FixtureSpec::standard();
    for p in &mut spec.packages {
        if p.pname == "big-b" {
            *p = p.clone().config_read_by_glue();
        }
    }
    let (bed, fx, _g0, reserve) = Bed::squeezed(&spec, 23);
    let before = system_state(&bed);

    let o = upgrade(&bed, &fx, &["--reserve", &reserve, "--non-vital", "big-b"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("{err}");
    assert!(
        err.contains("--non-vital big-b: big-b cannot be taken out"),
        "names the package: {err}"
    );
    assert!(
        err.contains("-etc.drv"),
        "names the glue that breaks: {err}"
    );
    assert!(
        err.contains("stepwise-stub-big-b/etc/"),
        "shows the build's log: {err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(before, system_state(&bed), "nothing changed");
    assert!(
        !bed.journal_path().exists(),
        "no run was started, no journal written"
    );
    let mut probe = bed.journal_path().into_os_string();
    probe.push(".probe");
    assert!(
        !std::path::Path::new(&probe).exists(),
        "the probe's scratch is gone"
    );
}

/// Issue 8, /boot: superseded generations are dropped before the next boot-loader install. The
/// fixture's `switch-to-configuration switch|boot` records how many generation links the profile
/// has (a NixOS boot loader writes one entry per generation). A stepwise run with an older
/// generation of the user's in the profile: every install sees at most one generation more than
/// before the run, there are as many installs as the plan states, and the user's generation is
/// still there at the end. On the tight disk, and on a roomy one where nothing but the order of
/// the transitions keeps the bound.
#[test]
fn every_boot_loader_install_sees_at_most_one_generation_more() {
    if !require_root("engine: boot entries on a tight tmpfs") {
        return;
    }
    boot_entries_run(|f| Disk::TmpfsMib(f.tight_disk_mib()));
}

#[test]
fn every_boot_loader_install_sees_at_most_one_generation_more_on_a_roomy_disk() {
    if !require_root("engine: boot entries on a roomy tmpfs") {
        return;
    }
    boot_entries_run(|f| Disk::TmpfsMib(f.roomy_disk_mib()));
}

fn boot_entries_run(disk: impl FnOnce(&Fixture) -> Disk) {
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), disk);
    // An older generation of the user's: a tiny store path, set before G0.
    let older_dir = tempfile::tempdir().unwrap();
    let older_src = older_dir.path().join("nixos-system-vps-22.11");
    std::fs::create_dir_all(&older_src).unwrap();
    let added = bed
        .command("nix-store")
        .arg("--add")
        .arg(&older_src)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", show(&added));
    let older = String::from_utf8_lossy(&added.stdout).trim().to_string();
    bed.set_profile(&older).unwrap();
    let g0 = bed.install(&fx.old.drv).unwrap();
    std::fs::remove_file(bed.booted_system_link()).unwrap();
    let installs_before = bed.boot_installs().len();
    let generations_before = 2;

    let mut cmd = bed.command(env!("CARGO_BIN_EXE_stepwise"));
    cmd.args(["--json", "plan", "--target", &fx.new.drv]);
    cmd.args(bed.system_args());
    let p = cmd.output().unwrap();
    assert_eq!(p.status.code(), Some(0), "{}", show(&p));
    let plan: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    let boot = &plan["boot"];
    eprintln!("plan's boot figures: {boot}");
    assert_eq!(boot["entries_before"], generations_before);
    assert_eq!(boot["entries_added_max"], 1);
    let planned_installs = boot["installs"].as_u64().unwrap() as usize;
    assert_eq!(planned_installs, plan["steps"].as_array().unwrap().len());
    assert!(planned_installs >= 2, "a stepwise plan: {plan}");

    let o = upgrade(&bed, &fx, &["--strategy", "stepwise"]);
    let installs: Vec<(usize, String, String)> = bed.boot_installs().split_off(installs_before);
    eprintln!("boot-loader installs (generations seen, action, toplevel): {installs:?}");
    for (n, action, top) in &installs {
        assert!(
            *n <= generations_before + 1,
            "the install of {top} ({action}) saw {n} generations; {generations_before} before the run"
        );
    }
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(bed.profile_target().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(installs.len(), planned_installs, "{installs:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "boot loader: {planned_installs} install(s), at most 1 boot entry more than now"
        )),
        "the upgrade states the figures: {err}"
    );
    assert_eq!(
        installs.last().map(|i| i.2.as_str()),
        Some(fx.new.out.as_str())
    );
    assert!(installs.iter().all(|i| i.2 != g0));
    // The user's generation stays; the run leaves one of its own.
    let links: Vec<String> = std::fs::read_dir(bed.profile().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("system-") && n.ends_with("-link"))
        .collect();
    assert_eq!(links.len(), generations_before, "{links:?}");
    assert_eq!(
        bed.read_link(&bed.profile().with_file_name("system-1-link")),
        Some(older)
    );
    verify(&bed);
}

/// `--action test` (as `nixos-rebuild test`): every step is activated with `test`, the boot
/// loader is never installed and its default stays G0, which the booted pin keeps valid until
/// the reboot. A run on a roomy disk reaches the target with the boot default and G0's closure
/// intact. (With G0 pinned, stepping frees nothing: the plan is one step; the model tests cover
/// intermediate steps activated with `test`.)
#[test]
fn action_test_leaves_the_boot_default_at_the_booted_g0() {
    if !require_root("engine: --action test keeps the boot default") {
        return;
    }
    let (bed, fx) = Bed::prepared_with(&FixtureSpec::standard(), |f| {
        Disk::TmpfsMib(f.roomy_disk_mib())
    });
    let g0 = bed.install(&fx.old.drv).unwrap();
    assert_eq!(bed.boot_default().as_deref(), Some(g0.as_str()));
    let installs_before = bed.boot_installs().len();
    let o = upgrade(&bed, &fx, &["--action", "test", "--strategy", "stepwise"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("(test)"), "activated with test: {err}");
    assert!(!err.contains("(switch)"), "no step was switched to: {err}");
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.boot_installs().len(), installs_before, "no install");
    assert_eq!(bed.boot_default().as_deref(), Some(g0.as_str()));
    let closure = bed.closure(&[&g0]).unwrap();
    for p in &closure {
        assert!(
            bed.is_valid(p).unwrap(),
            "the boot default's {p} is still there"
        );
    }
    verify(&bed);
}

/// The journal's records (`stepwise journal export`), as JSON values.
fn export(bed: &Bed) -> Vec<serde_json::Value> {
    let o = stepwise(bed, &["journal", "export"]);
    assert_eq!(o.status.code(), Some(0), "journal export: {}", show(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The intents journaled from the first record of `kind` on, each as "what gen" (gen 0: G0, k:
/// step k; roots by file name).
fn moves_after(records: &[serde_json::Value], kind: &str, g0: &str) -> Vec<String> {
    let plan = records
        .iter()
        .find(|r| r["kind"] == "runStarted")
        .expect("a run")["data"]["plan"]
        .as_array()
        .unwrap()
        .clone();
    let gen_of = |out: &serde_json::Value| {
        let out = out.as_str().unwrap();
        if g0.ends_with(out) {
            return "0".to_string();
        }
        plan.iter()
            .find(|s| s["toplevelOut"] == out)
            .unwrap_or_else(|| panic!("{out} is not a planned generation"))["index"]
            .to_string()
    };
    let from = records
        .iter()
        .position(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} record"));
    records[from..]
        .iter()
        .filter(|r| r["kind"] == "intent")
        .map(|r| {
            let t = r["data"]["transition"].as_object().unwrap();
            let (kind, v) = t.iter().next().unwrap();
            match kind.as_str() {
                "realise" => format!("realise {}", v["step"]),
                "setProfile" => format!("set-profile {}", gen_of(&v["toplevel"])),
                "activate" => format!("activate {}", gen_of(&v["toplevel"])),
                "unpin" => format!(
                    "unpin {}",
                    std::path::Path::new(v["root"].as_str().unwrap())
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                ),
                other => other.to_string(),
            }
        })
        .collect()
}

/// The way back from a failure to build step `n` (the last): its partial results removed, then
/// G_{n-1} → … → G1 → G0, each realised again, switched to, its successor dropped, unpinned and
/// collected; then the run's roots released.
fn expected_way_back(n: u64, roots_dir: &str) -> Vec<String> {
    let root = |k: u64| match k {
        0 => "out-g0-0".to_string(),
        k => format!("out-steps-{k}"),
    };
    let mut v = vec![format!("unpin {}", root(n)), "collect".into()];
    for k in (1..n).rev() {
        v.extend([
            format!("realise {}", k - 1),
            format!("set-profile {}", k - 1),
            format!("activate {}", k - 1),
            "dropGeneration".into(),
            format!("unpin {}", root(k)),
            "collect".into(),
        ]);
    }
    // Format 2 records the release of the run's roots as its own transition.
    let _ = roots_dir;
    v.push("releaseRoots".into());
    v
}

/// Unwinding from an intermediate step through older intermediate steps, on real Nix and the
/// tight disk: four steps, one package each, the last (`zz-broken`) fails to build. The run
/// walks back G3 → G2 → G1 → G0, each intermediate generation rebuilt from its `.drv` (rewritten
/// again: a step's own `.drv`s went with it), the old packages the forward walk had collected
/// coming back from the file:// cache. Exit 1, G0 exactly and whole, the way back journaled in
/// order, no run root left.
#[test]
fn a_failure_at_step_four_walks_back_through_every_step_to_g0() {
    if !require_root("engine: long unwind on a tight tmpfs") {
        return;
    }
    let spec = FixtureSpec::long_chain_failing_last(3);
    let (bed, fx) = Bed::prepared_with(&spec, |f| Disk::TmpfsMib(f.tight_disk_mib()));
    let g0 = bed.install(&fx.old.drv).unwrap();
    std::fs::remove_file(bed.booted_system_link()).unwrap();
    let g0_closure = bed.closure(&[&g0]).unwrap();
    let o = upgrade(&bed, &fx, &["--strategy", "stepwise"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("{err}");
    assert!(err.contains("zz-broken"), "names the package: {err}");
    assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
    verify(&bed);

    let records = export(&bed);
    let plan = records.iter().find(|r| r["kind"] == "runStarted").unwrap()["data"]["plan"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(plan.len(), 4, "one package a step: {plan:?}");
    assert_eq!(
        plan[3]["units"],
        serde_json::json!(["zz-broken"]),
        "the failing package moves last"
    );
    let roots_dir = bed.journal_path().with_extension("redb.roots");
    let roots_name = roots_dir.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(
        moves_after(&records, "failed", &g0),
        expected_way_back(4, &roots_name)
    );
    assert!(
        !roots_dir.exists() || std::fs::read_dir(&roots_dir).unwrap().next().is_none(),
        "no run-owned root is left in {}",
        roots_dir.display()
    );
    // G0's closure is back, the old packages the forward walk collected included: they came
    // from the cache.
    for p in &g0_closure {
        assert!(bed.is_valid(p).unwrap(), "{p} of G0 is back");
    }
    let collected: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "intent")
        .filter_map(|r| {
            r["data"]["transition"]["collect"]["paths"]
                .as_array()
                .cloned()
        })
        .flatten()
        .filter_map(|p| p.as_str().map(|p| format!("{}/{p}", bed.store_dir())))
        .collect();
    for pname in ["step-a", "step-b", "step-c"] {
        let old = fx.package(pname).old.as_ref().unwrap().out().to_string();
        assert!(collected.contains(&old), "the forward walk collected {old}");
        assert!(bed.is_valid(&old).unwrap(), "{old} came back");
    }
}

/// `--on-failure hold`: the failure at step 4 stops the run at G3, the last good generation,
/// its roots kept (exit 1). A later `stepwise unwind`, a new process, walks G3 → G2 → G1 → G0,
/// rebuilding G2 and G1 from rewritten `.drv`s with old packages from the cache: exit 1 (the
/// run failed), G0 exactly and whole, the way back journaled in order, no run root left.
#[test]
fn held_at_step_three_then_unwound_through_every_step_to_g0() {
    if !require_root("engine: hold, then unwind, on a tight tmpfs") {
        return;
    }
    let spec = FixtureSpec::long_chain_failing_last(3);
    let (bed, fx) = Bed::prepared_with(&spec, |f| Disk::TmpfsMib(f.tight_disk_mib()));
    let g0 = bed.install(&fx.old.drv).unwrap();
    std::fs::remove_file(bed.booted_system_link()).unwrap();
    let g0_closure = bed.closure(&[&g0]).unwrap();
    let o = upgrade(
        &bed,
        &fx,
        &["--strategy", "stepwise", "--on-failure", "hold"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stays at step 3"), "{err}");
    let records = export(&bed);
    let plan = records.iter().find(|r| r["kind"] == "runStarted").unwrap()["data"]["plan"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(plan.len(), 4, "one package a step: {plan:?}");
    let g3 = format!(
        "{}/{}",
        bed.store_dir(),
        plan[2]["toplevelOut"].as_str().unwrap()
    );
    assert_eq!(bed.profile_target().as_deref(), Some(g3.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(g3.as_str()));
    let roots_dir = bed.journal_path().with_extension("redb.roots");
    assert!(
        std::fs::read_dir(&roots_dir).unwrap().next().is_some(),
        "a held run keeps its roots"
    );
    verify(&bed);

    let u = stepwise(&bed, &["unwind"]);
    assert_eq!(u.status.code(), Some(1), "{}", show(&u));
    assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
    for p in &g0_closure {
        assert!(bed.is_valid(p).unwrap(), "{p} of G0 is back");
    }
    let records = export(&bed);
    let roots_name = roots_dir.file_name().unwrap().to_string_lossy().to_string();
    // The way back from G3: that of a failure at step 4 without the failed step's cleanup.
    assert_eq!(
        moves_after(&records, "unwindStarted", &g0),
        expected_way_back(4, &roots_name)[2..]
    );
    assert!(
        !roots_dir.exists() || std::fs::read_dir(&roots_dir).unwrap().next().is_none(),
        "no run-owned root is left"
    );
    verify(&bed);
}
