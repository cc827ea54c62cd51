//! Glue rewriting on synthetic systems, without Nix (the real-Nix tests check that Nix accepts
//! and realises the result): the empty mask is the target; masked paths vanish from the glue and
//! come back as sources; every path a rewritten derivation mentions is an input; output paths
//! are what hashDerivationModulo says; masks do not leak into later steps.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::synthetic::{store_dir, system, Params};
use stepwise::drv::{to_aterm, Derivation, Hasher, StorePath};
use stepwise::plan::{plan, Mask, Materialiser};

fn small(changed: usize, seed: u64) -> common::synthetic::Synthetic {
    system(&Params {
        paths: 300,
        units: 60,
        changed,
        dep_change_per_mille: 50,
        seed,
        booted: false,
        free: 10 << 30,
        kernel: false,
    })
}

/// Every store path string in builder, args and env values.
fn mentioned(d: &Derivation) -> BTreeSet<StorePath> {
    let sd = store_dir();
    let prefix = format!("{}/", sd.as_str());
    let mut out = BTreeSet::new();
    let mut scan = |v: &[u8]| {
        let s = String::from_utf8_lossy(v);
        let mut rest: &str = &s;
        while let Some(i) = rest.find(&prefix) {
            let tail = &rest[i..];
            let end = tail[prefix.len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
                .map(|e| e + prefix.len())
                .unwrap_or(tail.len());
            if let Ok(p) = sd.parse(&tail[..end]) {
                out.insert(p);
            }
            rest = &tail[end.max(1)..];
        }
    };
    scan(&d.builder);
    for a in &d.args {
        scan(a);
    }
    for v in d.env.values() {
        scan(v);
    }
    out
}

#[test]
fn empty_mask_is_the_target_itself() {
    let s = small(20, 1);
    let mut m = Materialiser::new(&s.input.target, &s.drvs);
    let r = m.materialise(&Mask::default()).unwrap();
    assert!(r.drvs.is_empty());
    assert_eq!(r.toplevel_drv, s.input.target.root);
    assert_eq!(&r.toplevel_out, s.input.target.root_out().unwrap());
    // And the target's own bytes are canonical: writing them back gives the same .drv path.
    let sd = store_dir();
    for g in &s.input.target.glue {
        let d = &s.input.target.drvs[g];
        let name = g.derivation_name().unwrap();
        assert_eq!(&stepwise::drv::drv_path(&sd, name, d), g);
        let _ = to_aterm(d, &sd);
    }
}

#[test]
fn masked_units_are_replaced_and_every_mention_is_an_input() {
    let s = small(20, 2);
    let planned = plan(&s.input).unwrap();
    let p = planned.outcome.as_ref().unwrap();
    assert!(p.steps.len() >= 2, "masks to test: {} steps", p.steps.len());
    let sd = store_dir();
    let mut m = Materialiser::new(&s.input.target, &s.drvs);
    for step in &p.steps {
        let r = m.materialise(&step.mask).unwrap();
        assert_eq!(r.drvs.is_empty(), step.mask.is_empty());
        if step.mask.is_empty() {
            assert_eq!(r.toplevel_drv, s.input.target.root);
            continue;
        }
        assert_eq!(
            r.drvs.last().unwrap().path,
            r.toplevel_drv,
            "the toplevel comes last"
        );
        let new: BTreeMap<&StorePath, &Derivation> =
            r.drvs.iter().map(|d| (&d.path, &d.drv)).collect();
        let lookup = |p: &StorePath| -> Derivation {
            new.get(p)
                .map(|d| (*d).clone())
                .or_else(|| s.drvs.get(p).cloned())
                .unwrap()
        };
        let mut seen = BTreeSet::new();
        for d in &r.drvs {
            assert!(seen.insert(d.path.clone()));
            // Inputs before their users.
            for i in d.drv.input_drvs.keys() {
                if new.contains_key(i) {
                    assert!(
                        seen.contains(i),
                        "{} is written before its input {}",
                        d.name,
                        i
                    );
                }
            }
            // No masked path survives; every mention is an input output or source.
            let mut inputs: BTreeSet<StorePath> = d.drv.input_srcs.clone();
            for (i, outs) in &d.drv.input_drvs {
                let idrv = lookup(i);
                for o in outs {
                    inputs.insert(idrv.outputs[o].path.clone().unwrap());
                }
            }
            for o in d.drv.outputs.values() {
                inputs.insert(o.path.clone().unwrap());
            }
            for x in mentioned(&d.drv) {
                assert!(
                    !step.mask.0.contains_key(&x),
                    "{} still mentions masked {x}",
                    d.name
                );
                assert!(inputs.contains(&x), "{} mentions {x}, not an input", d.name);
            }
            // Output paths are hashDerivationModulo's.
            let mut source: BTreeMap<StorePath, Derivation> = s.drvs.clone();
            source.extend(r.drvs.iter().map(|x| (x.path.clone(), x.drv.clone())));
            let computed = Hasher::new(sd.clone(), &source)
                .output_paths(&d.drv, &d.name)
                .unwrap();
            for (o, out) in &d.drv.outputs {
                assert_eq!(Some(&computed[o]), out.path.as_ref());
                assert_eq!(
                    d.drv.env.get(o.as_bytes()).unwrap(),
                    &sd.display(&computed[o]).into_bytes()
                );
            }
            assert_eq!(
                stepwise::drv::drv_path(&sd, &d.name, &d.drv),
                d.path,
                "the .drv path"
            );
        }
        // The system-path of this step lists exactly the planned versions.
        let sp = r
            .drvs
            .iter()
            .find(|d| d.name == "system-path")
            .expect("system-path is rewritten when a package is masked");
        let listed: Vec<String> = serde_json::from_slice(sp.drv.env_get("pkgs").unwrap()).unwrap();
        for (pname, (old, new)) in &s.units {
            let want = if step.mask.0.contains_key(new) {
                old
            } else {
                new
            };
            assert!(
                listed.contains(&sd.display(want)),
                "step {}: {pname} should be {}",
                step.index,
                want
            );
        }
    }
    // A later empty mask is still the target: nothing leaks between steps.
    let again = m.materialise(&Mask::default()).unwrap();
    assert_eq!(again.toplevel_drv, s.input.target.root);
}

#[test]
fn materialising_twice_gives_the_same_bytes() {
    let s = small(30, 3);
    let planned = plan(&s.input).unwrap();
    let first = &planned.outcome.as_ref().unwrap().steps[0];
    let mut a = Materialiser::new(&s.input.target, &s.drvs);
    let mut b = Materialiser::new(&s.input.target, &s.drvs);
    let x = a.materialise(&first.mask).unwrap();
    let _ = b.materialise(&Mask::default()).unwrap();
    let y = b.materialise(&first.mask).unwrap();
    assert_eq!(x, y);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whole plans on random small systems: each changed package is upgraded once, every step
    /// before the last masks exactly the packages not yet upgraded (to their G0 version or a
    /// stub), the last step is the target, and every step materialises.
    #[test]
    fn plans_mask_exactly_what_is_not_upgraded_yet(
        seed in 0u64..1_000_000,
        changed in 1usize..12,
        free_mib in 1u64..60,
        booted in proptest::bool::ANY,
        non_vital in proptest::option::of(0usize..12),
    ) {
        let mut s = system(&Params {
            paths: 120,
            units: 14,
            changed,
            dep_change_per_mille: 80,
            seed,
            booted,
            free: free_mib << 20,
            kernel: false,
        });
        s.input.reserve = 0;
        s.input.options.reboot_allowed = booted;
        if let Some(n) = non_vital {
            // A changing package (pkg0..pkg{changed-1} change).
            s.input.options.non_vital = vec![format!("pkg{}", n % changed)];
        }
        let planned = plan(&s.input).unwrap();
        let Ok(p) = &planned.outcome else { return Ok(()) };
        let sd = store_dir();
        let mut upgraded: BTreeSet<String> = BTreeSet::new();
        let mut stubbed: BTreeSet<String> = BTreeSet::new();
        let mut m = Materialiser::new(&s.input.target, &s.drvs);
        for (k, step) in p.steps.iter().enumerate() {
            proptest::prop_assert!(step.space.peak <= s.input.used + s.input.free);
            for u in &step.upgraded {
                proptest::prop_assert!(upgraded.insert(u.clone()), "{} upgraded twice", u);
            }
            stubbed.extend(step.stubbed.iter().cloned());
            for (pname, (old, new)) in &s.units {
                let changes = old != new;
                let masked = step.mask.0.get(new);
                if !changes || upgraded.contains(pname) {
                    proptest::prop_assert!(masked.is_none(), "step {}: {} masked after its upgrade", k + 1, pname);
                } else if stubbed.contains(pname) {
                    let stub = stepwise::plan::Stub::for_package(&sd, pname);
                    proptest::prop_assert_eq!(masked, Some(&stub.path));
                } else {
                    proptest::prop_assert_eq!(masked, Some(old), "step {}: {} should stay old", k + 1, pname);
                }
            }
            let r = m.materialise(&step.mask).unwrap();
            proptest::prop_assert_eq!(r.drvs.is_empty(), step.mask.is_empty());
        }
        proptest::prop_assert!(p.steps.last().unwrap().mask.is_empty(), "the last step is the target");
        let all_changed: BTreeSet<String> = s
            .units
            .iter()
            .filter(|(_, (o, n))| o != n)
            .map(|(k, _)| k.clone())
            .collect();
        proptest::prop_assert_eq!(upgraded, all_changed);
    }
}

/// The stub probe's generation (issue 8): every named package replaced by its stub, every other
/// package with a G0 counterpart at its old version, the rest (no counterpart) at the target's;
/// the rewritten glue mentions the stub and no other version of the named package.
#[test]
fn the_stub_probe_is_g0_with_the_named_packages_stubbed() {
    use stepwise::plan::probe::stub_probe_mask;
    use stepwise::plan::Stub;
    let s = small(20, 3);
    let planned = plan(&s.input).unwrap();
    let sd = store_dir();
    assert_eq!(
        stub_probe_mask(&planned, &sd, &[]),
        None,
        "nothing to probe"
    );
    assert_eq!(
        stub_probe_mask(&planned, &sd, &["no-such-package".into()]),
        None
    );
    let victim = planned
        .units
        .units
        .iter()
        .find(|u| u.maskable() && u.old_mask().next().is_some())
        .expect("a changed unit with a counterpart");
    let name = victim.name.clone();
    let mask = stub_probe_mask(&planned, &sd, std::slice::from_ref(&name)).unwrap();
    let stub = Stub::for_package(&sd, &name);
    for u in &planned.units.units {
        for (o, p) in &u.new {
            let got = mask.0.get(p);
            if u.name == name {
                assert_eq!(got, Some(&stub.path), "{} {o} is stubbed", u.name);
            } else if u.maskable() && u.old[o] != *p {
                assert_eq!(got, Some(&u.old[o]), "{} {o} stays old", u.name);
            } else {
                assert_eq!(got, None, "{} {o} is as in the target", u.name);
            }
        }
    }
    let r = Materialiser::new(&s.input.target, &s.drvs)
        .materialise(&mask)
        .unwrap();
    let all: BTreeSet<StorePath> = r.drvs.iter().flat_map(|d| mentioned(&d.drv)).collect();
    assert!(all.contains(&stub.path), "some glue takes the stub");
    for (u, paths) in planned
        .units
        .units
        .iter()
        .filter(|u| u.name == name)
        .map(|u| (u, u.new.values().chain(u.old.values())))
    {
        for p in paths {
            assert!(!all.contains(p), "{} {p} left in the probe's glue", u.name);
        }
    }
}

/// Local derivations (not glue by attributes, on no substituter) are read as glue: each step
/// rewrites those that read a masked package, and none of its derivations names a masked path;
/// their build tools are build inputs, never units of the runtime diff.
#[test]
fn local_derivations_are_rewritten_under_the_mask() {
    let s = common::synthetic::system_with_locals(
        &Params {
            paths: 300,
            units: 60,
            changed: 20,
            dep_change_per_mille: 50,
            seed: 5,
            booted: false,
            free: 10 << 30,
            kernel: false,
        },
        12,
    );
    assert_eq!(s.input.target.local.len(), 12);
    let planned = plan(&s.input).unwrap();
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
        .all(|r| !r.name.starts_with("local")));
    let p = planned.outcome.as_ref().unwrap();
    let mut m = Materialiser::new(&s.input.target, &s.drvs);
    let mut locals_rewritten = 0;
    for step in &p.steps {
        let r = m.materialise(&step.mask).unwrap();
        for d in &r.drvs {
            let named = mentioned(&d.drv);
            for masked in step.mask.0.keys() {
                assert!(!named.contains(masked), "{} still names {masked}", d.name);
            }
            locals_rewritten += d.name.starts_with("local") as usize;
        }
    }
    assert!(
        locals_rewritten > 0,
        "some local derivation read a masked package"
    );
}

/// A run planned by a stepwise that did not mark context-free restart triggers recorded its steps'
/// toplevels as that version derived them: the planner source finds them (derived again without
/// marks) and gives their derivations byte for byte, while this version's own steps carry the
/// marks.
#[test]
fn steps_recorded_without_trigger_marks_are_derived_again_without_them() {
    use stepwise::effects::model_store::{DrvSpec, ModelStore};
    use stepwise::engine::run_plan::GenSource;
    use stepwise::engine::steps::{PlannerSource, StepMasks};
    use stepwise::plan::units::TargetGraph;

    let ms = ModelStore::new(store_dir(), 1 << 30);
    let pkg = |name: &str| {
        let d = ms.add_derivation(&DrvSpec::new(name, 4096));
        ms.make_substitutable(&d);
        d
    };
    let (a1, a2) = (pkg("a-1.0"), pkg("a-2.0"));
    let out = |d: &StorePath| ms.outputs_of(d)["out"].clone();
    ms.prebuild(&a1).unwrap();
    let unit = ms.add_derivation(
        &DrvSpec::new("unit-sshd.service", 1024)
            .env("preferLocalBuild", "1")
            .env("text", "[Unit]\nX-Restart-Triggers=9f86d081884c7d65\n"),
    );
    let top = ms.add_derivation(
        &DrvSpec::new("nixos-system-t-2", 4096)
            .env("preferLocalBuild", "1")
            .input(&a2, &["out"])
            .input(&unit, &["out"])
            .arg(&format!("/nix/store/{}", out(&a2))),
    );
    let mask = Mask([(out(&a2), out(&a1))].into());
    let graph = TargetGraph::read(
        store_dir(),
        top.clone(),
        &stepwise::engine::plan_inputs::StoreDrvs(&ms),
    )
    .unwrap();
    let drvs = stepwise::engine::plan_inputs::StoreDrvs(&ms);
    let marked = Materialiser::new(&graph, &drvs).materialise(&mask).unwrap();
    let unmarked = Materialiser::new(&graph, &drvs)
        .without_trigger_marks()
        .materialise(&mask)
        .unwrap();
    assert_ne!(marked.toplevel_drv, unmarked.toplevel_drv);
    let masks = StepMasks {
        target_drv: top.clone(),
        g0_toplevel: out(&a1),
        masks: [(1, mask), (2, Mask::default())].into(),
        reboot_after: 0,
        local: Some(Default::default()),
    };
    let source = PlannerSource::new(&ms, masks);
    let paths = |drvs: Vec<stepwise::engine::run_plan::DrvWrite>| -> Vec<StorePath> {
        drvs.into_iter().map(|d| d.path).collect()
    };
    let want = |m: &stepwise::plan::Materialised| -> Vec<StorePath> {
        m.drvs.iter().map(|d| d.path.clone()).collect()
    };
    assert_eq!(
        paths(source.derivations(&marked.toplevel_drv).unwrap()),
        want(&marked)
    );
    assert_eq!(
        paths(source.derivations(&unmarked.toplevel_drv).unwrap()),
        want(&unmarked)
    );
    // G0 (not a step) is neither.
    assert!(source.derivations(&a1).unwrap().is_empty());
}
