//! The planner with configuration-specific derivations that are not glue by their attributes
//! (an initrd, modules-shrunk, etc-metadata, a config check): no substituter has them, so they are
//! built locally and rewritten under each step's mask like glue. Random model worlds: packages
//! (some changed) read at runtime by `system-path` and by the local derivations, which share
//! them and read each other; build tools (`jq`, `cpio`) named only in `nativeBuildInputs`.
//! Planned by the real `gather` + `plan`, each step realised on the model store:
//! - every intermediate generation's closure holds exactly the package versions its mask states
//!   (and what they hold), and no build tool;
//! - the plan's peak is never below what the store really held.

mod common;
use common::model::{collect_all_but_current, outputs_bytes};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;

use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::model_store::{DrvSpec, ModelStore, DEFAULT_BUILD_SIZE};
use stepwise::effects::{Store, System};
use stepwise::engine::plan_inputs::{gather, SystemLinks};
use stepwise::engine::run_plan::GenSource;
use stepwise::engine::steps::{PlannerSource, StepMasks};
use stepwise::plan::{PlanInput, PlanOptions};

const KIB: u64 = 1024;
const PROFILE: &str = "/nix/var/nix/profiles/system";
const CURRENT: &str = "/run/current-system";
const BOOTED: &str = "/run/booted-system";
/// Roots are entries of the model, never files: a path no directory can be made under.
const ROOTS: &str = "/dev/null/stepwise-roots";
const LOCAL_NAMES: [&str; 4] = [
    "initrd-linux",
    "modules-shrunk",
    "etc-metadata",
    "check-sshd",
];
const TOOLS: [&str; 2] = ["jq-1.7", "cpio-2.15"];

/// A generated system: packages and the local derivations that read them.
#[derive(Debug, Clone)]
struct World {
    /// (old KiB, new KiB, changed)
    packages: Vec<(u64, u64, bool)>,
    /// Per local derivation: the packages it reads (bits), whether it reads the local
    /// derivation before it, the tools it builds with (bits), its size in KiB.
    locals: Vec<(u16, bool, u8, u64)>,
}

struct Built {
    ms: ModelStore,
    target: StorePath,
    /// Every package output of both generations, and the tools' outputs.
    packages: BTreeSet<StorePath>,
    tools: BTreeSet<StorePath>,
}

fn out(ms: &ModelStore, d: &StorePath) -> StorePath {
    ms.outputs_of(d)["out"].clone()
}

fn build(w: &World) -> Built {
    let ms = ModelStore::new(StoreDir::new("/nix/store").unwrap(), 1 << 40);
    ms.set_system_links(CURRENT, BOOTED);
    let mut tools = Vec::new();
    for t in TOOLS {
        let d = ms.add_derivation(&DrvSpec::new(t, 24 * KIB));
        ms.make_substitutable(&d);
        tools.push(d);
    }
    let tool_outs: BTreeSet<StorePath> = tools.iter().map(|d| out(&ms, d)).collect();
    let mut packages = BTreeSet::new();
    let mut tops = Vec::new();
    for (gi, release) in ["23.05", "23.11"].iter().enumerate() {
        let mut pkgs = Vec::new();
        for (i, (old, new, changed)) in w.packages.iter().enumerate() {
            let (v, size) = if gi == 1 && *changed {
                ("2.0", *new)
            } else {
                ("1.0", *old)
            };
            let d = ms.add_derivation(&DrvSpec::new(&format!("pkg{i}-{v}"), size * KIB));
            ms.make_substitutable(&d);
            packages.insert(out(&ms, &d));
            pkgs.push(d);
        }
        let mut sp = DrvSpec::new("system-path", DEFAULT_BUILD_SIZE).env("preferLocalBuild", "1");
        for d in &pkgs {
            sp = sp
                .input(d, &["out"])
                .arg(&format!("/nix/store/{}", out(&ms, d)));
        }
        let mut top = DrvSpec::new(&format!("nixos-system-model-{release}"), DEFAULT_BUILD_SIZE)
            .env("preferLocalBuild", "1")
            .system();
        let sp = ms.add_derivation(&sp);
        top = top.input(&sp, &["out"]);
        let mut previous: Option<StorePath> = None;
        for (li, (reads, chained, tool_bits, kib)) in w.locals.iter().enumerate() {
            // Not glue by attributes, never made substitutable: local by the substituters.
            let mut l = DrvSpec::new(&format!("{}-{release}", LOCAL_NAMES[li]), kib * KIB);
            for (i, d) in pkgs.iter().enumerate() {
                if reads & (1 << i) != 0 {
                    l = l
                        .input(d, &["out"])
                        .arg(&format!("/nix/store/{}", out(&ms, d)));
                }
            }
            if let (true, Some(p)) = (*chained, &previous) {
                l = l
                    .input(p, &["out"])
                    .arg(&format!("/nix/store/{}", out(&ms, p)));
            }
            let mut native = Vec::new();
            for (t, d) in tools.iter().enumerate() {
                if tool_bits & (1 << t) != 0 {
                    l = l.input(d, &["out"]);
                    native.push(format!("/nix/store/{}", out(&ms, d)));
                }
            }
            if !native.is_empty() {
                l = l.env("nativeBuildInputs", &native.join(" "));
            }
            if l.input_drvs.is_empty() {
                // A derivation reading nothing is a package whatever the cache says.
                l = l.input(&pkgs[0], &["out"]).arg("reads pkg0 at build time");
            }
            let l = ms.add_derivation(&l);
            top = top.input(&l, &["out"]);
            previous = Some(l);
        }
        tops.push(ms.add_derivation(&top));
    }
    ms.prebuild(&tops[0]).unwrap();
    let g0_out = out(&ms, &tops[0]);
    ms.set_profile(Path::new(PROFILE), &g0_out).unwrap();
    ms.set_running_system(&g0_out, false);
    // The target's `.drv` stays (every step is written against it), as the engine roots it; the
    // build tools G0 was built with are garbage, as on a collected system.
    ms.add_root(&Path::new(ROOTS).join("target-drv"), &tops[1])
        .unwrap();
    collect(&ms);
    Built {
        ms,
        target: tops[1].clone(),
        packages,
        tools: tool_outs,
    }
}

/// Collect: drop every generation but the current one, delete what no root holds.
fn collect(ms: &ModelStore) {
    collect_all_but_current(ms, Path::new(PROFILE));
}

fn plan_input(b: &Built) -> PlanInput {
    let links = SystemLinks {
        profile: PROFILE.into(),
        current_system: CURRENT.into(),
        booted_system: BOOTED.into(),
    };
    gather(
        &b.ms,
        &b.ms,
        &b.target,
        &links,
        Some(0),
        PlanOptions::default(),
    )
    .unwrap()
}

/// What one realised step showed.
struct StepSeen {
    planned_peak: i64,
    real_peak: i64,
    /// Package outputs in the closure, and those the mask says.
    versions: BTreeSet<StorePath>,
    expected: BTreeSet<StorePath>,
    tools_in_closure: BTreeSet<StorePath>,
}

/// Plan, run every step on the model.
fn run(w: &World) -> Vec<StepSeen> {
    run_built(&build(w)).1
}

/// Plan `b`'s upgrade and run every step on the model: the plan and what each step showed.
fn run_built(b: &Built) -> (stepwise::plan::Planned, Vec<StepSeen>) {
    let input = plan_input(b);
    let planned = stepwise::plan::plan(&input).unwrap();
    let plan = planned
        .outcome
        .clone()
        .expect("an unlimited disk always fits");
    let masks = StepMasks {
        target_drv: b.target.clone(),
        g0_toplevel: input.g0.toplevel.clone().unwrap(),
        masks: plan
            .steps
            .iter()
            .map(|s| (s.index as u32, s.mask.clone()))
            .collect::<BTreeMap<_, _>>(),
        reboot_after: 0,
        local: None,
    };
    let ms = &b.ms;
    let source = PlannerSource::new(ms, masks);
    let tops = source.toplevels().unwrap();
    let target_pkgs: Vec<StorePath> = input
        .target
        .unit_outputs()
        .values()
        .flat_map(|m| m.values().cloned())
        .filter(|p| b.packages.contains(p))
        .collect();
    let start = outputs_bytes(ms);
    let mut seen = Vec::new();
    for (step, (drv, top)) in plan.steps.iter().zip(&tops) {
        for d in source.derivations(drv).unwrap() {
            ms.add_text(&d.name, &d.contents, &d.references).unwrap();
        }
        let root = Path::new(ROOTS).join(format!("step-{}", step.index));
        let drv_root = Path::new(ROOTS).join(format!("step-{}-drv", step.index));
        ms.add_root(&drv_root, drv).unwrap();
        ms.realise(drv, &root, &mut |_| {}).unwrap();
        let peak = outputs_bytes(ms);
        let closure = ms.closure(std::slice::from_ref(top)).unwrap();
        seen.push(StepSeen {
            planned_peak: step.space.peak as i64 - input.used as i64,
            real_peak: peak as i64 - start as i64,
            versions: closure.intersection(&b.packages).cloned().collect(),
            expected: {
                // The mask's versions and what they hold (an old version kept by the mask holds
                // the old versions of its own dependencies).
                let stated: Vec<StorePath> = target_pkgs
                    .iter()
                    .map(|p| step.mask.0.get(p).unwrap_or(p).clone())
                    .collect();
                let mut held = ms.closure(&stated).unwrap();
                held.extend(stated);
                held.intersection(&b.packages).cloned().collect()
            },
            tools_in_closure: closure.intersection(&b.tools).cloned().collect(),
        });
        ms.set_profile(Path::new(PROFILE), top).unwrap();
        ms.set_running_system(top, false);
        ms.remove_root(&root).unwrap();
        ms.remove_root(&drv_root).unwrap();
        collect(ms);
    }
    (planned, seen)
}

fn world() -> impl Strategy<Value = World> {
    let packages = prop::collection::vec((1u64..64, 1u64..64, any::<bool>()), 2..8);
    // At least the model's size of a rewritten build (4 KiB): a step's rewritten copy is then no
    // larger than G0's, which is what the plan's glue estimate stands on.
    let locals = prop::collection::vec((any::<u16>(), any::<bool>(), 0u8..4, 4u64..48), 1..5);
    (packages, locals).prop_map(|(packages, locals)| World { packages, locals })
}

fn check(w: &World) -> Result<(), TestCaseError> {
    for (k, s) in run(w).into_iter().enumerate() {
        prop_assert_eq!(
            &s.versions,
            &s.expected,
            "step {}: the closure's package versions are not the mask's",
            k + 1
        );
        prop_assert!(
            s.tools_in_closure.is_empty(),
            "step {}: build tools in the closure: {:?}",
            k + 1,
            s.tools_in_closure
        );
        prop_assert!(
            s.real_peak <= s.planned_peak,
            "step {}: the store held {} bytes above the start, the plan said {}",
            k + 1,
            s.real_peak,
            s.planned_peak
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn local_derivations_follow_the_mask_and_the_peak_holds(w in world()) {
        check(&w)?;
    }
}

/// The initrd reads systemd (changed) and builds with jq and cpio: it is local glue, systemd is
/// a unit masked in the step before it moves, and jq/cpio are build inputs listed apart.
#[test]
fn the_initrd_is_local_glue_and_its_tools_are_build_inputs() {
    let w = World {
        packages: vec![(40, 48, true), (20, 24, true)],
        locals: vec![(0b01, false, 0b11, 16)],
    };
    let b = build(&w);
    let input = plan_input(&b);
    assert_eq!(input.target.local.len(), 1, "the initrd is local");
    let planned = stepwise::plan::plan(&input).unwrap();
    let build: Vec<&str> = planned
        .diff
        .build_inputs
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(build, ["cpio", "jq"]);
    assert!(planned
        .diff
        .rows
        .iter()
        .all(|r| r.name != "jq" && r.name != "cpio" && !r.name.starts_with("initrd")));
    assert!(
        planned
            .g0
            .glue
            .iter()
            .any(|p| p.name().starts_with("initrd-linux")),
        "G0's initrd is read as glue"
    );
    check(&w).unwrap();
}

/// A run derives its steps again after a crash from what it recorded: with the local
/// derivations recorded when it was planned, the steps' derivations are the planned ones even if
/// the substituters are gone (a boot without a network); asking them again would not be.
#[test]
fn steps_derived_again_from_the_recorded_local_derivations_need_no_substituter() {
    let w = World {
        packages: vec![(40, 48, true), (20, 24, true), (8, 8, false)],
        locals: vec![(0b011, false, 0b11, 16), (0b100, true, 0b01, 4)],
    };
    let b = build(&w);
    let input = plan_input(&b);
    assert!(!input.target.local.is_empty());
    let plan = stepwise::plan::plan(&input).unwrap().outcome.unwrap();
    let masks = |local: Option<BTreeSet<StorePath>>| StepMasks {
        target_drv: b.target.clone(),
        g0_toplevel: input.g0.toplevel.clone().unwrap(),
        masks: plan
            .steps
            .iter()
            .map(|s| (s.index as u32, s.mask.clone()))
            .collect(),
        reboot_after: 0,
        local,
    };
    let local = input.target.local.clone();
    let derive = |local: Option<BTreeSet<StorePath>>| {
        PlannerSource::new(&b.ms, masks(local)).toplevels().unwrap()
    };
    let planned = derive(None);
    // The cache changed since (someone pushed the local derivations' outputs): asked again,
    // the substituters would make other steps; the recorded set makes the planned ones.
    for d in &local {
        b.ms.make_substitutable(d);
    }
    assert_ne!(
        derive(None),
        planned,
        "the substituters decide the graph when asked"
    );
    assert_eq!(derive(Some(local.clone())), planned);
    // No substituter at all (a boot without a network): the same.
    b.ms.forget_substitutes();
    assert_eq!(derive(Some(local)), planned);
}

/// What a revision of the NixOS-shaped system changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revision {
    /// A leaf package (`hello`).
    Leaf,
    /// The kernel: modules-shrunk and the initrd follow it, the bootspec label too.
    Kernel,
    /// systemd: the initrd copies it, units name it.
    Systemd,
    /// glibc: every package is rebuilt.
    Glibc,
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
    /// Log-uniform between 4 KiB and 2 MiB: most packages small, a few large.
    fn size(&mut self) -> u64 {
        let e = 12.0 + self.below(10_000) as f64 / 10_000.0 * 9.0;
        2f64.powf(e) as u64
    }
}

const SHAPE_UNITS: usize = 60;

/// Packages and local derivations of the NixOS-shaped system: real scale (1,300 packages,
/// 200 local derivations: 1,500+ paths) with `STEPWISE_NIXOS_SHAPE=1` (minutes on the model
/// store), else a quarter of it.
fn shape_scale() -> (usize, usize) {
    if std::env::var("STEPWISE_NIXOS_SHAPE").as_deref() == Ok("1") {
        (1_300, 200)
    } else {
        (300, 50)
    }
}

/// One generation of the NixOS-shaped system (the shapes of nixpkgs' top-level.nix, system-path,
/// etc.nix, systemd-lib's units and make-initrd-ng): glibc under every package; systemd, the
/// kernel and `hello` among them; `system-path` and `unit-*.service` glue; local derivations:
/// modules-shrunk (reads the kernel), the initrd (reads systemd, modules-shrunk and glibc, builds
/// with jq and cpio), `check-sshd`, etc-metadata (reads the etc glue) and config files that each
/// read a few packages. Returns the toplevel `.drv`.
fn shape_generation(
    ms: &ModelStore,
    release: &str,
    rev: Option<Revision>,
    tools: &[StorePath],
    packages: &mut BTreeSet<StorePath>,
) -> StorePath {
    let mut rng = Rng(0x5eed_cafe_f00d);
    let (shape_packages, shape_locals) = shape_scale();
    let bumped = |r: Revision| rev == Some(r);
    let native: Vec<String> = tools
        .iter()
        .map(|d| format!("/nix/store/{}", out(ms, d)))
        .collect();
    let mut pkgs: Vec<StorePath> = Vec::new();
    let mut add = |spec: DrvSpec, pkgs: &mut Vec<StorePath>| {
        let d = ms.add_derivation(&spec);
        ms.make_substitutable(&d);
        packages.insert(out(ms, &d));
        pkgs.push(d);
    };
    let reading = |mut spec: DrvSpec, inputs: &[&StorePath]| {
        for d in inputs {
            spec = spec
                .input(d, &["out"])
                .arg(&format!("/nix/store/{}", out(ms, d)));
        }
        spec
    };
    let glibc_v = if bumped(Revision::Glibc) {
        "2.40"
    } else {
        "2.39"
    };
    add(
        DrvSpec::new(&format!("glibc-{glibc_v}"), 2 << 20),
        &mut pkgs,
    );
    let glibc = pkgs[0].clone();
    let systemd_v = if bumped(Revision::Systemd) {
        "256"
    } else {
        "255"
    };
    let systemd = reading(
        DrvSpec::new(&format!("systemd-{systemd_v}"), 3 << 20),
        &[&glibc],
    );
    add(systemd, &mut pkgs);
    let linux_v = if bumped(Revision::Kernel) {
        "6.6.2"
    } else {
        "6.6.1"
    };
    add(
        DrvSpec::new(&format!("linux-{linux_v}"), 4 << 20),
        &mut pkgs,
    );
    let hello_v = if bumped(Revision::Leaf) {
        "2.13"
    } else {
        "2.12"
    };
    add(
        reading(
            DrvSpec::new(&format!("hello-{hello_v}"), 64 << 10),
            &[&glibc],
        ),
        &mut pkgs,
    );
    while pkgs.len() < shape_packages {
        let i = pkgs.len();
        let size = rng.size();
        let mut deps = vec![glibc.clone()];
        for _ in 0..rng.below(3) {
            // Any earlier package but the kernel (index 2).
            deps.push(pkgs[3 + rng.below((i - 3) as u64) as usize].clone());
        }
        deps.sort();
        deps.dedup();
        let deps: Vec<&StorePath> = deps.iter().collect();
        add(
            reading(DrvSpec::new(&format!("pkg{i}-1.{}", i % 7), size), &deps),
            &mut pkgs,
        );
    }
    let (systemd, linux) = (pkgs[1].clone(), pkgs[2].clone());
    let runtime: Vec<&StorePath> = pkgs.iter().filter(|d| **d != linux).collect();
    let sp = ms.add_derivation(&reading(
        DrvSpec::new("system-path", 64 << 10).env("preferLocalBuild", "1"),
        &runtime,
    ));
    let glue = |name: &str, inputs: &[&StorePath]| {
        ms.add_derivation(&reading(
            DrvSpec::new(name, DEFAULT_BUILD_SIZE)
                .env("preferLocalBuild", "1")
                .env("allowSubstitutes", ""),
            inputs,
        ))
    };
    let local = |name: &str, size: u64, inputs: &[&StorePath], tools: bool| {
        let mut spec = reading(DrvSpec::new(name, size), inputs);
        if tools {
            for t in &tool_list(ms, &native) {
                spec = spec.input(t, &["out"]);
            }
            spec = spec.env("nativeBuildInputs", &native.join(" "));
        }
        ms.add_derivation(&spec)
    };
    let mut units = vec![glue("unit-systemd-journald.service", &[&systemd])];
    for u in 0..SHAPE_UNITS {
        let p = &pkgs[4 + (u * 17) % (shape_packages - 4)];
        units.push(glue(&format!("unit-svc{u}.service"), &[p]));
    }
    let mut configs = Vec::new();
    for c in 0..shape_locals - 4 {
        let reads: Vec<&StorePath> = (0..1 + rng.below(3))
            .map(|_| &pkgs[rng.below(shape_packages as u64) as usize])
            .collect();
        let mut reads = reads;
        reads.sort();
        reads.dedup();
        configs.push(local(&format!("cfg{c}.conf"), 8 << 10, &reads, c % 10 == 0));
    }
    let etc_inputs: Vec<&StorePath> = units.iter().chain(&configs).collect();
    let etc = glue("etc", &etc_inputs);
    let modules = local("linux-6.6-modules-shrunk", 512 << 10, &[&linux], false);
    let initrd = local("initrd-linux", 1 << 20, &[&systemd, &modules, &glibc], true);
    let check = local("check-sshd", 8 << 10, &[&pkgs[10]], false);
    let metadata = local("etc-metadata", 32 << 10, &[&etc], true);
    ms.add_derivation(
        &reading(
            DrvSpec::new(&format!("nixos-system-shape-{release}"), DEFAULT_BUILD_SIZE)
                .env("preferLocalBuild", "1"),
            &[&sp, &etc, &linux, &initrd, &check, &metadata],
        )
        .system(),
    )
}

/// The tools' derivations (jq, cpio), found again from their outputs' paths.
fn tool_list(ms: &ModelStore, native: &[String]) -> Vec<StorePath> {
    TOOLS
        .iter()
        .map(|t| ms.add_derivation(&DrvSpec::new(t, 24 * KIB)))
        .filter(|d| native.contains(&format!("/nix/store/{}", out(ms, d))))
        .collect()
}

/// G0 and the target after `rev`, G0 running and collected.
fn shape(rev: Revision) -> Built {
    let ms = ModelStore::new(StoreDir::new("/nix/store").unwrap(), 1 << 40);
    ms.set_system_links(CURRENT, BOOTED);
    let tools: Vec<StorePath> = TOOLS
        .iter()
        .map(|t| {
            let d = ms.add_derivation(&DrvSpec::new(t, 24 * KIB));
            ms.make_substitutable(&d);
            d
        })
        .collect();
    let tool_outs = tools.iter().map(|d| out(&ms, d)).collect();
    let mut packages = BTreeSet::new();
    let g0 = shape_generation(&ms, "24.05", None, &tools, &mut packages);
    let target = shape_generation(&ms, "24.11", Some(rev), &tools, &mut packages);
    ms.prebuild(&g0).unwrap();
    let g0_out = out(&ms, &g0);
    ms.set_profile(Path::new(PROFILE), &g0_out).unwrap();
    ms.set_running_system(&g0_out, false);
    ms.add_root(&Path::new(ROOTS).join("target-drv"), &target)
        .unwrap();
    collect(&ms);
    Built {
        ms,
        target,
        packages,
        tools: tool_outs,
    }
}

/// The NixOS-shaped system at real scale (1,500+ paths, 200 local derivations), one revision
/// of each kind: every step's closure holds exactly its mask's versions, the plan's peak is
/// never below the model's. Prints a table.
#[test]
fn nixos_shape_every_revision_kind() {
    println!(
        "{:<8} {:>6} {:>6} {:>6} {:>12} {:>12} {:>12}",
        "revision", "paths", "locals", "steps", "planned KiB", "measured KiB", "plain KiB"
    );
    for rev in [
        Revision::Leaf,
        Revision::Kernel,
        Revision::Systemd,
        Revision::Glibc,
    ] {
        let b = shape(rev);
        let input = plan_input(&b);
        let (paths, input_locals) = (input.g0.paths.len(), input.target.local.len());
        let (shape_packages, shape_locals) = shape_scale();
        assert!(
            paths > shape_packages + shape_locals,
            "{rev:?}: G0 has {paths} paths"
        );
        let (planned, seen) = run_built(&b);
        // `linux-6.6-modules-shrunk` is a local derivation whose pname is the kernel's: the
        // kernel stays a package of G0, changed only by the kernel's revision, never "added".
        let linux: Vec<String> = planned
            .units
            .units
            .iter()
            .filter(|u| u.name == "linux")
            .map(|u| format!("{:?}", u.change))
            .collect();
        let expected = if rev == Revision::Kernel {
            "Changed"
        } else {
            "Unchanged"
        };
        assert_eq!(linux, [expected], "{rev:?}: the kernel's unit");
        assert!(
            input_locals >= shape_locals,
            "{rev:?}: {input_locals} local"
        );
        for (k, s) in seen.iter().enumerate() {
            let extra: Vec<_> = s.versions.difference(&s.expected).collect();
            let missing: Vec<_> = s.expected.difference(&s.versions).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "{rev:?} step {}: in the closure, not the mask's: {extra:?}; the mask's, not in the closure: {missing:?}",
                k + 1
            );
            assert!(s.tools_in_closure.is_empty(), "{rev:?} step {}", k + 1);
            assert!(
                s.real_peak <= s.planned_peak,
                "{rev:?} step {}: real {} > planned {}",
                k + 1,
                s.real_peak,
                s.planned_peak
            );
        }
        let max = |f: fn(&StepSeen) -> i64| seen.iter().map(f).max().unwrap_or(0) / 1024;
        println!(
            "{:<8} {:>6} {:>6} {:>6} {:>12} {:>12} {:>12}",
            format!("{rev:?}"),
            paths,
            input_locals,
            seen.len(),
            max(|s| s.planned_peak),
            max(|s| s.real_peak),
            (planned.frame.plain_peak - planned.frame.used) / 1024
        );
    }
}
