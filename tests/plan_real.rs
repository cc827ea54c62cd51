//! The planner on real Nix with the NixOS-shaped fixture: every intermediate generation of a plan
//! realises and holds exactly the package versions the plan says; the estimated peak is never
//! below the peak measured on a tmpfs by more than the reserve; the empty mask is the target.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use stepwise::drv::StorePath;
use stepwise::effects::nix::cli::{NixCli, NixCliConfig};
use stepwise::effects::store::{Store, System};
use stepwise::engine::plan_inputs::{gather, StoreDrvs, SystemLinks};
use stepwise::output::write_document;
use stepwise::plan::report::{json_body, write_human, Header};
use stepwise::plan::{plan, Change, Materialiser, PlanInput, PlanOptions, Planned};
use stepwise_testbed::{require_root, Bed, Disk, Fixture, FixtureSpec};

const MIB: u64 = 1024 * 1024;

fn nix_for(bed: &Bed) -> NixCli {
    NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .expect("NixCli on the bed")
}

fn links(bed: &Bed) -> SystemLinks {
    SystemLinks {
        profile: bed.profile(),
        current_system: bed.current_system_link(),
        booted_system: bed.booted_system_link(),
    }
}

fn sp(nix: &NixCli, s: &str) -> StorePath {
    nix.store_dir().parse(s).unwrap()
}

fn gather_and_plan(
    bed: &Bed,
    nix: &NixCli,
    fx: &Fixture,
    reserve: Reserve,
    options: PlanOptions,
) -> (PlanInput, Planned) {
    let mut input = gather(
        nix,
        nix,
        &sp(nix, &fx.new.drv),
        &links(bed),
        Some(MIB),
        options,
    )
    .expect("gathering the plan's inputs");
    input.reserve = match reserve {
        Reserve::Bytes(b) => b,
        // Other processes share the machine's disk: leave the plan an exact room instead.
        Reserve::LeaveRoom(r) => input.free - r,
    };
    let planned = plan(&input).expect("planning");
    let mut text = Vec::new();
    let header = Header::new(
        nix.store_dir(),
        input.g0.toplevel.as_ref(),
        &input.target.root,
        input.target.root_out(),
    );
    write_human(&mut text, &header, &planned).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&text));
    (input, planned)
}

#[derive(Clone, Copy)]
enum Reserve {
    Bytes(u64),
    LeaveRoom(u64),
}

/// Which version of each fixture package a toplevel's closure holds (None: absent).
fn versions_in(nix: &NixCli, fx: &Fixture, out: &StorePath) -> BTreeMap<String, Option<String>> {
    let closure = nix.closure(std::slice::from_ref(out)).unwrap();
    let names: BTreeSet<String> = closure.iter().map(|p| nix.store_dir().display(p)).collect();
    fx.packages
        .iter()
        .map(|p| {
            let has = |v: &stepwise_testbed::PackageVersionInfo| {
                v.outputs.values().all(|o| names.contains(o))
            };
            let old = p.old.as_ref().filter(|v| has(v)).map(|v| v.version.clone());
            let new = p.new.as_ref().filter(|v| has(v)).map(|v| v.version.clone());
            assert!(
                old.is_none() || new.is_none() || p.old == p.new,
                "{}: both versions in one generation",
                p.pname
            );
            (p.pname.clone(), new.or(old))
        })
        .collect()
}

/// What the plan says step k's generation holds.
fn expected_after(
    fx: &Fixture,
    planned: &Planned,
    upgraded: &BTreeSet<String>,
    stubbed: &BTreeSet<String>,
) -> BTreeMap<String, Option<String>> {
    fx.packages
        .iter()
        .map(|p| {
            let removed = planned
                .units
                .units
                .iter()
                .any(|u| u.name == p.pname && u.change == Change::Removed);
            let v = if removed || (stubbed.contains(&p.pname) && !upgraded.contains(&p.pname)) {
                None
            } else if upgraded.contains(&p.pname) || p.old == p.new {
                p.new.as_ref().map(|v| v.version.clone())
            } else {
                p.old.as_ref().map(|v| v.version.clone())
            };
            (p.pname.clone(), v)
        })
        .collect()
}

/// Runs the plan as the engine would (write the step's `.drv`s, realise, switch, drop the
/// previous generation, collect, reboot when the plan says), checking every generation. Returns
/// the measured bytes used after each realise.
fn execute(
    bed: &Bed,
    nix: &NixCli,
    fx: &Fixture,
    input: &PlanInput,
    planned: &Planned,
) -> Vec<u64> {
    let plan = planned.outcome.as_ref().expect("a plan fits");
    // The target's derivations stay: every step is written against them.
    bed.add_root("target-drv", &fx.new.drv).unwrap();
    let store_drvs = StoreDrvs(nix);
    let mut mat = Materialiser::new(&input.target, &store_drvs);
    let mut upgraded = BTreeSet::new();
    let mut stubbed = BTreeSet::new();
    let mut measured = Vec::new();
    // Stubs, as the engine makes them: an empty directory added to the store.
    let stubs = planned.stubs(nix.store_dir());
    let tmp = tempfile::tempdir().unwrap();
    let root = bed.state_dir().join("gcroots").join("stepwise-step");
    for step in &plan.steps {
        for stub in &stubs {
            if step.mask.0.values().any(|r| r == &stub.path) {
                let dir = tmp.path().join(&stub.name);
                fs::create_dir_all(&dir).unwrap();
                let out = bed
                    .command("nix-store")
                    .arg("--add")
                    .arg(&dir)
                    .output()
                    .unwrap();
                assert!(out.status.success());
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim(),
                    nix.store_dir().display(&stub.path),
                    "the stub's path is known in advance"
                );
            }
        }
        let m = mat.materialise(&step.mask).expect("materialising");
        if step.mask.is_empty() {
            assert!(m.drvs.is_empty(), "the empty mask writes nothing");
            assert_eq!(
                m.toplevel_drv, input.target.root,
                "the last step is the target"
            );
        }
        for d in &m.drvs {
            let written = nix
                .add_text(&format!("{}.drv", d.name), &d.aterm, &d.references())
                .expect("writing a step's .drv");
            assert_eq!(written, d.path, "Nix agrees on the .drv path of {}", d.name);
        }
        let outs = nix
            .realise(&m.toplevel_drv, &root, &mut |_| {})
            .unwrap_or_else(|e| panic!("step {} does not realise: {e}", step.index));
        assert_eq!(outs["out"], m.toplevel_out);
        // The kernel and initrd the plan names for this step are the ones the toplevel links.
        if let Some(boot) = &planned.boot {
            let b = &boot.steps[step.index - 1];
            let top = nix.store_dir().to_path(&m.toplevel_out);
            for (link, want) in [
                ("kernel", b.kernel.clone()),
                (
                    "initrd",
                    match &b.initrd {
                        stepwise::plan::Initrd::Path(p) => Some(p.clone()),
                        _ => None,
                    },
                ),
            ] {
                if let Some(want) = want {
                    let got = fs::read_link(top.join(link)).unwrap();
                    assert!(
                        got.starts_with(nix.store_dir().to_path(&want)),
                        "step {}: {link} → {}, the plan said {want}",
                        step.index,
                        got.display()
                    );
                }
            }
        }
        measured.push(bed.used_bytes());
        upgraded.extend(step.upgraded.iter().cloned());
        stubbed.extend(step.stubbed.iter().cloned());
        let got = versions_in(nix, fx, &m.toplevel_out);
        assert_eq!(
            got,
            expected_after(fx, planned, &upgraded, &stubbed),
            "step {}: the generation's package versions",
            step.index
        );
        // Switch, drop the previous generation, collect.
        let out = nix.store_dir().display(&m.toplevel_out);
        bed.set_profile(&out).unwrap();
        bed.switch(&out, "switch").unwrap();
        let old: Vec<u64> = nix
            .generations(&bed.profile())
            .unwrap()
            .into_iter()
            .filter(|g| !g.current)
            .map(|g| g.number)
            .collect();
        nix.delete_generations(&bed.profile(), &old).unwrap();
        nix.remove_root(&root).unwrap();
        if step.reboot_after {
            bed.set_booted(&out).unwrap();
        }
        bed.gc().unwrap();
    }
    assert_eq!(
        bed.current_system().as_deref(),
        Some(fx.new.out.as_str()),
        "the plan ends at the target"
    );
    measured
}

#[test]
fn every_step_realises_with_the_versions_the_plan_says() {
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    bed.install(&fx.old.drv).expect("G0");
    // No booted pin here (a machine switched since boot is the same): old paths free at once.
    fs::remove_file(bed.booted_system_link()).unwrap();
    let nix = nix_for(&bed);
    let (input, planned) =
        gather_and_plan(&bed, &nix, &fx, Reserve::Bytes(MIB), PlanOptions::default());

    // The diff: what changed, was added, removed.
    let changes: BTreeMap<&str, Change> = planned
        .diff
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.change))
        .collect();
    assert_eq!(changes["big-a"], Change::Changed);
    assert_eq!(changes["big-b"], Change::Changed);
    assert_eq!(changes["openssh"], Change::Changed);
    assert_eq!(changes["linux"], Change::Changed);
    assert_eq!(changes["legacy-tool"], Change::Removed);
    assert_eq!(changes["new-tool"], Change::Added);
    assert!(!changes.contains_key("coreutils") && !changes.contains_key("firmware"));
    let big_b = planned
        .diff
        .rows
        .iter()
        .find(|r| r.name == "big-b")
        .unwrap();
    assert_eq!(big_b.outputs, vec!["man".to_string()]);
    assert_eq!(
        (big_b.old_versions.clone(), big_b.new_versions.clone()),
        (vec!["1.0".to_string()], vec!["2.0".to_string()])
    );
    // The kernel and its initrd move together.
    let plan = planned.outcome.as_ref().unwrap();
    let step_of = |n: &str| {
        plan.steps
            .iter()
            .find(|s| s.upgraded.iter().any(|u| u == n))
            .map(|s| s.index)
    };
    assert_eq!(step_of("linux"), step_of("initrd-linux"));
    // The boot figures: one install per step, one entry more at most, the kernel group's step,
    // two kernel+initrd pairs at most (G0's until the kernel step, the target's after).
    let boot = planned
        .boot
        .as_ref()
        .expect("a plan that fits has boot figures");
    assert_eq!(boot.installs, plan.steps.len());
    assert_eq!(boot.installs_with_test, 0, "--action test installs nothing");
    assert_eq!(boot.entries_before, 1);
    assert_eq!(boot.entries_added_max, 1);
    assert_eq!(boot.kernel_step, step_of("linux"));
    assert_eq!(boot.pair_steps, vec![step_of("linux").unwrap()]);
    assert_eq!(boot.pairs_max, 2);
    assert!(!boot.initrd_is_glue);
    let linux = fx.package("linux");
    for b in &boot.steps {
        let v = if b.index < boot.kernel_step.unwrap() {
            &linux.old
        } else {
            &linux.new
        };
        assert_eq!(
            b.kernel.as_ref().map(|k| nix.store_dir().display(k)),
            Some(v.as_ref().unwrap().out().to_string()),
            "step {}'s kernel",
            b.index
        );
    }
    assert_eq!(step_of("new-tool"), Some(1), "an added package moves first");
    assert!(plan.steps.len() >= 2, "the big packages move apart");
    assert_ne!(step_of("big-a"), step_of("big-b"));
    // Every unit upgraded exactly once.
    let all: Vec<&String> = plan.steps.iter().flat_map(|s| s.upgraded.iter()).collect();
    let set: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), set.len());

    // JSON parses and carries its version.
    let mut json = Vec::new();
    let header = Header::new(
        nix.store_dir(),
        input.g0.toplevel.as_ref(),
        &input.target.root,
        input.target.root_out(),
    );
    let body = json_body(&header, &planned, nix.store_dir());
    write_document(&mut json, "plan", &body).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["stepwise"], "plan");
    assert_eq!(v["version"], 1);
    assert_eq!(v["fits"], true);
    assert_eq!(v["steps"].as_array().unwrap().len(), plan.steps.len());
    assert_eq!(v["boot"]["installs"], plan.steps.len());
    assert_eq!(v["boot"]["entries_added_max"], 1);
    assert_eq!(v["boot"]["kernel_step"], step_of("linux").unwrap());

    execute(&bed, &nix, &fx, &input, &planned);
}

#[test]
fn estimated_peak_holds_on_a_tight_tmpfs_with_reboots() {
    if !require_root("estimated_peak_holds_on_a_tight_tmpfs_with_reboots") {
        return;
    }
    tight_tmpfs(true);
}

#[test]
fn estimated_peak_holds_on_a_tight_tmpfs_without_a_booted_pin() {
    if !require_root("estimated_peak_holds_on_a_tight_tmpfs_without_a_booted_pin") {
        return;
    }
    tight_tmpfs(false);
}

/// `booted`: G0 is the booted system (its paths go only after a reboot, which the plan may
/// ask for); otherwise there is no booted-system link.
fn tight_tmpfs(booted: bool) {
    const STATE_MIB: u64 = 16;
    let reserve = 4 * MIB;
    let spec = FixtureSpec::standard();
    let mut disk = 0;
    let (bed, fx) = Bed::prepared_with(&spec, |fx| {
        // Room for G0, the state and the largest package beside it, not for the plain upgrade.
        disk = fx.old_bytes.div_ceil(MIB) + STATE_MIB + 30;
        Disk::TmpfsMib(disk)
    });
    assert!(
        disk * MIB < fx.union_bytes + STATE_MIB * MIB,
        "{}",
        fx.sizes_line()
    );
    bed.install(&fx.old.drv).expect("G0 fits");
    if !booted {
        fs::remove_file(bed.booted_system_link()).unwrap();
    }
    let nix = nix_for(&bed);
    let (input, planned) = gather_and_plan(
        &bed,
        &nix,
        &fx,
        Reserve::Bytes(reserve),
        PlanOptions {
            reboot_allowed: booted,
            ..Default::default()
        },
    );
    assert!(
        !planned.frame.plain_fits,
        "the plain upgrade must not fit here: {:?}",
        planned.frame
    );
    let plan = planned.outcome.as_ref().expect("a plan fits");
    let measured = execute(&bed, &nix, &fx, &input, &planned);
    assert_eq!(
        plan.steps.iter().any(|s| s.reboot_after),
        booted,
        "reboots exactly when the booted system pins G0"
    );
    eprintln!(
        "booted pin: {booted}; tmpfs {disk} MiB; plain upgrade needs {:.1} MiB; lower bound {:.1} MiB; plan peak {:.1} MiB",
        planned.frame.plain_peak as f64 / MIB as f64,
        planned.frame.lower_bound as f64 / MIB as f64,
        plan.peak as f64 / MIB as f64
    );
    for (s, m) in plan.steps.iter().zip(&measured) {
        eprintln!(
            "step {}: estimated peak {:.2} MiB, measured {:.2} MiB",
            s.index,
            s.space.peak as f64 / MIB as f64,
            *m as f64 / MIB as f64
        );
        assert!(
            s.space.peak + reserve >= *m,
            "step {}: estimated {} is below the measured {} by more than the reserve",
            s.index,
            s.space.peak,
            m
        );
    }
}

#[test]
fn no_room_says_what_is_missing() {
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    bed.install(&fx.old.drv).expect("G0");
    let nix = nix_for(&bed);
    // A reserve that eats all free space but 1 MiB: nothing fits.
    let (_input, planned) = gather_and_plan(
        &bed,
        &nix,
        &fx,
        Reserve::LeaveRoom(MIB),
        PlanOptions {
            non_vital: vec!["big-b".into()],
            ..Default::default()
        },
    );
    let s = planned.outcome.as_ref().expect_err("nothing fits");
    assert!(s.missing_next > 0 && s.missing_total >= s.missing_next);
    assert!(!s.bottleneck.is_empty());

    // Unknown names are bad input.
    let e = plan(
        &gather(
            &nix,
            &nix,
            &sp(&nix, &fx.new.drv),
            &links(&bed),
            Some(MIB),
            PlanOptions {
                non_vital: vec!["no-such-package".into()],
                ..Default::default()
            },
        )
        .unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no-such-package"));
}

#[test]
fn a_non_vital_package_is_stubbed_and_returns_upgraded() {
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    bed.install(&fx.old.drv).expect("G0");
    fs::remove_file(bed.booted_system_link()).unwrap();
    let nix = nix_for(&bed);
    // Leave the plan 23 MiB of room: big-b (22 MiB) fits, but big-a (24 MiB) only once big-b's
    // old version is gone.
    let reserve = Reserve::LeaveRoom(23 * MIB);
    let (_, without) = gather_and_plan(&bed, &nix, &fx, reserve, PlanOptions::default());
    let short = without
        .outcome
        .as_ref()
        .expect_err("without a non-vital package nothing fits");
    assert!(
        !short.non_vital_that_fits.is_empty(),
        "the shortfall names non-vital packages that make it fit: {short:?}"
    );
    let (input, planned) = gather_and_plan(
        &bed,
        &nix,
        &fx,
        reserve,
        PlanOptions {
            non_vital: vec!["big-b".into()],
            ..Default::default()
        },
    );
    let plan = planned
        .outcome
        .as_ref()
        .expect("with big-b non-vital a plan fits");
    let stub_step = plan
        .steps
        .iter()
        .find(|s| s.stubbed.contains(&"big-b".to_string()))
        .expect("big-b is stubbed")
        .index;
    let back = plan
        .steps
        .iter()
        .find(|s| s.upgraded.contains(&"big-b".to_string()))
        .unwrap()
        .index;
    assert!(stub_step < back);
    execute(&bed, &nix, &fx, &input, &planned);
}
