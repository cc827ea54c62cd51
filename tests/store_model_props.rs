//! Properties of the model store under random sequences of effects: the store stays closed under
//! references, the disk never holds more than its capacity, a delete never removes a live path,
//! and an injected crash leaves the effect done but every later effect refused until revived.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::model_store::{DrvSpec, ModelStore};
use stepwise::effects::store::{Action, Store, StoreError, System};

struct World {
    s: ModelStore,
    drvs: Vec<StorePath>,
    outs: Vec<StorePath>,
}

/// A small system: packages of different sizes, a failing one, glue referencing them, two
/// toplevels; a disk that holds some but not all of it.
fn world() -> World {
    let s = ModelStore::new(StoreDir::new("/nix/store").unwrap(), 600_000);
    let mut drvs = Vec::new();
    let a = s.add_derivation(&DrvSpec::new("a-1.0", 100_000));
    let b = s.add_derivation(&DrvSpec::new("b-1.0", 150_000).input(&a, &["out"]));
    let c = s.add_derivation(&DrvSpec::new("c-2.0", 250_000));
    let broken = s.add_derivation(&DrvSpec::new("d-1.0", 10).failing("d: fails"));
    let m = s.add_derivation(
        &DrvSpec::new("m-1.0", 5_000)
            .output("dev", 1_000)
            .input(&a, &["out"]),
    );
    let path1 = s.add_derivation(
        &DrvSpec::new("system-path", 2_000)
            .input(&b, &["out"])
            .input(&m, &["out", "dev"]),
    );
    let path2 = s.add_derivation(
        &DrvSpec::new("system-path", 2_000)
            .input(&c, &["out"])
            .input(&m, &["out"]),
    );
    let t1 = s.add_derivation(
        &DrvSpec::new("nixos-system-x-1", 1_000)
            .input(&path1, &["out"])
            .system(),
    );
    let t2 = s.add_derivation(
        &DrvSpec::new("nixos-system-x-2", 1_000)
            .input(&path2, &["out"])
            .system(),
    );
    s.make_substitutable(&c);
    drvs.extend([a, b, c, broken, m, path1, path2, t1, t2]);
    let outs = drvs
        .iter()
        .flat_map(|d| s.outputs_of(d).into_values())
        .collect();
    World { s, drvs, outs }
}

#[derive(Debug, Clone)]
enum Op {
    Realise(usize, u8),
    RemoveRoot(u8),
    AddRoot(u8, usize),
    Delete(Vec<usize>),
    SetProfile(usize),
    DeleteGeneration(u64),
    Activate(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..9, 0u8..4).prop_map(|(d, r)| Op::Realise(d, r)),
        (0u8..4).prop_map(Op::RemoveRoot),
        (0u8..4, 0usize..10).prop_map(|(r, p)| Op::AddRoot(r, p)),
        proptest::collection::vec(0usize..10, 1..4).prop_map(Op::Delete),
        (0usize..10).prop_map(Op::SetProfile),
        (1u64..5).prop_map(Op::DeleteGeneration),
        (0usize..10, 0u8..3).prop_map(|(p, a)| Op::Activate(p, a)),
    ]
}

fn root(r: u8) -> PathBuf {
    PathBuf::from(format!("/var/lib/stepwise/gcroots/r{r}"))
}

const PROFILE: &str = "/nix/var/nix/profiles/system";

fn apply(w: &World, op: &Op) -> Result<(), String> {
    let s = &w.s;
    let out = |i: usize| w.outs[i % w.outs.len()].clone();
    match op {
        Op::Realise(d, r) => s
            .realise(&w.drvs[*d], &root(*r), &mut |_| {})
            .map(drop)
            .map_err(|e| e.to_string()),
        Op::RemoveRoot(r) => s.remove_root(&root(*r)).map_err(|e| e.to_string()),
        Op::AddRoot(r, p) => s.add_root(&root(*r), &out(*p)).map_err(|e| e.to_string()),
        Op::Delete(ps) => {
            let paths: Vec<StorePath> = ps.iter().map(|p| out(*p)).collect();
            s.delete(&paths).map_err(|e| e.to_string())
        }
        Op::SetProfile(p) => s
            .set_profile(Path::new(PROFILE), &out(*p))
            .map_err(|e| e.to_string()),
        Op::DeleteGeneration(n) => s
            .delete_generations(Path::new(PROFILE), &[*n])
            .map_err(|e| e.to_string()),
        Op::Activate(p, a) => {
            let action = [Action::Switch, Action::Boot, Action::Test][*a as usize];
            s.activate(&out(*p), action, &mut |_| {})
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

fn check_invariants(w: &World) {
    let s = &w.s;
    let valid = s.all_valid();
    let infos = s
        .path_infos(&valid.iter().cloned().collect::<Vec<_>>())
        .unwrap();
    for (p, i) in &infos {
        for r in &i.references {
            assert!(valid.contains(r), "{p} refers to the invalid {r}");
        }
    }
    let space = s.space().unwrap();
    assert!(space.free <= space.total);
    assert!(s.used() <= space.total, "used {} > capacity", s.used());
    for g in s.generations(Path::new(PROFILE)).unwrap() {
        assert!(
            valid.contains(&g.toplevel),
            "generation {} lost its path",
            g.number
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_effects_keep_the_store_consistent(ops in proptest::collection::vec(op(), 1..40)) {
        let w = world();
        for op in &ops {
            let live_before: BTreeSet<StorePath> = w.s.live_paths().unwrap();
            let r = apply(&w, op);
            if let (Op::Delete(_), Ok(())) = (op, &r) {
                let valid = w.s.all_valid();
                for p in &live_before {
                    prop_assert!(valid.contains(p), "delete removed the live path {}", p);
                }
            }
            check_invariants(&w);
        }
        // Every operation here is one effect.
        prop_assert_eq!(w.s.effect_count(), ops.len() as u64);
    }

    #[test]
    fn a_crash_after_effect_k_leaves_it_done_and_refuses_the_rest(
        ops in proptest::collection::vec(op(), 2..20),
        k in 1usize..20,
    ) {
        let k = k.min(ops.len());
        // The reference run: the state after exactly k effects.
        let reference = world();
        for op in &ops[..k] {
            let _ = apply(&reference, op);
        }
        let crashed = world();
        crashed.s.crash_after_effect(k as u64);
        for (i, op) in ops.iter().enumerate() {
            let r = apply(&crashed, op);
            if i + 1 == k {
                prop_assert!(r.as_ref().is_err_and(|e| e.contains("crashed")), "{:?}", r);
            }
            if i + 1 > k {
                prop_assert!(r.is_err());
            }
        }
        prop_assert_eq!(crashed.s.all_valid(), reference.s.all_valid());
        prop_assert_eq!(
            crashed.s.generations(Path::new(PROFILE)).unwrap(),
            reference.s.generations(Path::new(PROFILE)).unwrap()
        );
        crashed.s.revive();
        prop_assert!(!matches!(
            crashed.s.remove_root(&root(0)),
            Err(StoreError::Injected(_))
        ));
    }
}
