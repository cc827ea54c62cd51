//! The planner with G0 paths shared with other GC roots (a user profile holding the same
//! package): what stays live stays counted. Random model worlds are planned by the real
//! `gather` + `plan`, then each step is realised on the model store and everything no root holds
//! is collected; the bytes the store really holds at each step's peak never exceed the plan's.

mod common;
use common::model::{collect_all_but_current, outputs_bytes};

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::model_store::{DrvSpec, ModelStore, DEFAULT_BUILD_SIZE};
use stepwise::effects::{Store, System};
use stepwise::engine::plan_inputs::{gather, SystemLinks};
use stepwise::engine::steps::{PlannerSource, StepMasks};
use stepwise::plan::PlanOptions;

const KIB: u64 = 1024;
const PROFILE: &str = "/nix/var/nix/profiles/system";
const CURRENT: &str = "/run/current-system";
const BOOTED: &str = "/run/booted-system";
/// Roots are entries of the model, never files: a path no directory can be made under.
const ROOTS: &str = "/dev/null/stepwise-roots";

/// `sizes.len()` packages (old, new KiB) under a system-path and a toplevel; G0 running. The
/// glue is the size the model gives rewritten glue, so the plan's glue estimate is exact and
/// the comparison is about the packages.
/// Returns the store, G0's package outputs, and the target's toplevel `.drv`.
fn world(sizes: &[(u64, u64)]) -> (ModelStore, Vec<StorePath>, StorePath) {
    let ms = ModelStore::new(StoreDir::new("/nix/store").unwrap(), 1 << 40);
    ms.set_system_links(CURRENT, BOOTED);
    let mut tops = Vec::new();
    let mut g0_pkgs = Vec::new();
    for (gi, release) in ["23.05", "23.11"].iter().enumerate() {
        let mut sp = DrvSpec::new("system-path", DEFAULT_BUILD_SIZE).env("preferLocalBuild", "1");
        for (i, (old, new)) in sizes.iter().enumerate() {
            let (v, size) = if gi == 0 {
                ("1.0", *old)
            } else {
                ("2.0", *new)
            };
            let d = ms.add_derivation(&DrvSpec::new(&format!("pkg{i}-{v}"), size * KIB));
            ms.make_substitutable(&d);
            let out = ms.outputs_of(&d)["out"].clone();
            if gi == 0 {
                g0_pkgs.push(out.clone());
            }
            sp = sp.input(&d, &["out"]).arg(&format!("/nix/store/{out}"));
        }
        let sp = ms.add_derivation(&sp);
        tops.push(
            ms.add_derivation(
                &DrvSpec::new(&format!("nixos-system-model-{release}"), DEFAULT_BUILD_SIZE)
                    .env("preferLocalBuild", "1")
                    .input(&sp, &["out"])
                    .system(),
            ),
        );
    }
    ms.prebuild(&tops[0]).unwrap();
    let g0_out = ms.outputs_of(&tops[0])["out"].clone();
    ms.set_profile(Path::new(PROFILE), &g0_out).unwrap();
    ms.set_running_system(&g0_out, false);
    (ms, g0_pkgs, tops[1].clone())
}

/// Collect: drop every generation but the current one, delete what no root holds.
fn collect(ms: &ModelStore) {
    collect_all_but_current(ms, Path::new(PROFILE));
}

/// Plan, run every step on the model, and return (plan's peak − used, the store's) per step.
fn run(sizes: &[(u64, u64)], shared: &[bool]) -> Vec<(i64, i64)> {
    let (ms, g0_pkgs, target) = world(sizes);
    for (i, p) in g0_pkgs.iter().enumerate() {
        if shared[i] {
            ms.add_external_root(format!("/home/u{i}/.nix-profile"), p);
        }
    }
    let links = SystemLinks {
        profile: PROFILE.into(),
        current_system: CURRENT.into(),
        booted_system: BOOTED.into(),
    };
    let input = gather(&ms, &ms, &target, &links, Some(0), PlanOptions::default()).unwrap();
    for (i, p) in g0_pkgs.iter().enumerate() {
        assert_eq!(input.keep.contains(p), shared[i], "pkg{i}: kept iff shared");
    }
    let planned = stepwise::plan::plan(&input).unwrap();
    let plan = planned.outcome.expect("an unlimited disk always fits");
    let masks = StepMasks {
        target_drv: target.clone(),
        g0_toplevel: input.g0.toplevel.clone().unwrap(),
        masks: plan
            .steps
            .iter()
            .map(|s| (s.index as u32, s.mask.clone()))
            .collect::<BTreeMap<_, _>>(),
        reboot_after: 0,
        local: None,
    };
    let source = PlannerSource::new(&ms, masks);
    let tops = source.toplevels().unwrap();
    // The target's `.drv` stays (every step is written against it), as the engine roots it.
    ms.add_root(&Path::new(ROOTS).join("target-drv"), &target)
        .unwrap();
    let start = outputs_bytes(&ms);
    let mut out = Vec::new();
    for (step, (drv, top)) in plan.steps.iter().zip(&tops) {
        use stepwise::engine::run_plan::GenSource;
        for d in source.derivations(drv).unwrap() {
            ms.add_text(&d.name, &d.contents, &d.references).unwrap();
        }
        let root = Path::new(ROOTS).join(format!("step-{}", step.index));
        // The step's `.drv` names G0's outputs it keeps as sources: rooted only while it is
        // realised, or it would hold them after the step.
        let drv_root = Path::new(ROOTS).join(format!("step-{}-drv", step.index));
        ms.add_root(&drv_root, drv).unwrap();
        ms.realise(drv, &root, &mut |_| {}).unwrap();
        let peak = outputs_bytes(&ms);
        ms.set_profile(Path::new(PROFILE), top).unwrap();
        ms.set_running_system(top, false);
        ms.remove_root(&root).unwrap();
        ms.remove_root(&drv_root).unwrap();
        collect(&ms);
        out.push((
            step.space.peak as i64 - input.used as i64,
            peak as i64 - start as i64,
        ));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The plan's peak (above the start) is never below what the store really held.
    #[test]
    fn the_peak_is_never_underestimated_with_shared_roots(
        sizes in prop::collection::vec((1u64..64, 1u64..64), 2..6),
        shared_bits in any::<u8>(),
    ) {
        let shared: Vec<bool> = (0..sizes.len()).map(|i| shared_bits & (1 << i) != 0).collect();
        for (k, (planned, real)) in run(&sizes, &shared).into_iter().enumerate() {
            prop_assert!(
                real <= planned,
                "step {}: the store held {} bytes above the start, the plan said {}",
                k + 1, real, planned
            );
        }
    }
}

/// One package shared with a user profile: the plan counts it as kept, so the step that moves
/// the other package peaks with both old versions on disk.
#[test]
fn a_package_in_a_user_profile_is_not_freed() {
    let steps = run(&[(40, 40), (40, 40)], &[true, false]);
    for (planned, real) in steps {
        assert!(real <= planned, "{real} > {planned}");
    }
}
