//! What a stepwise run does to the boot loader and `/boot`, from the plan alone.
//!
//! On NixOS the boot loader is installed by `switch-to-configuration switch|boot` (never `test`),
//! with one entry per generation of the system profile; the kernel and initrd of every entry are
//! copied into `/boot` and files no entry uses are removed. The run moves G_{k-1} → G_k as
//! SetProfile (a new generation), Activate (the install), then DropGeneration of G_{k-1}: so at
//! the install of step k the profile holds the user's other generations, G_{k-1} and G_k. G0's
//! generations are dropped after step 1's install, so from step 2 on the run holds two
//! generations where G0 held one: **one entry more than before the run, at most**, provided G0 is
//! a generation of the profile (as after `nixos-rebuild switch`). If it is not, nothing of the
//! run replaces it and the bound is two.
//!
//! Intermediate steps are switched to (`engine::record::activation_action`) and the target is
//! activated with the user's `--action`; with `--action test` every step is activated with
//! `test`, so the run installs nothing (its boot default stays G0's, which `upgrade` requires
//! to be the booted system, pinned until the reboot).
//!
//! The kernel group (kernel, modules, initrd, firmware) moves in one step (`together_groups`).
//! A step's kernel is the kernel unit's old or new output per the step's mask, so its path is
//! known here; so is the initrd's when the initrd is a unit (a substituted package, as the
//! fixture's and NixOS's `initrd-linux` are). An initrd built as glue is rewritten with its
//! inputs: its path is the same in two steps whose masks agree on the units it depends on, and
//! is known only once the step is materialised; against G0's it is counted as changed (a bound).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::mask::Mask;
use super::names::parse_drv_name;
use super::planner::Step;
use super::units::{is_kernel_part, Change, TargetGraph, Unit, Units};
use crate::drv::StorePath;

/// What the system profile holds before the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileFacts {
    /// Generations (boot entries) of the system profile.
    pub generations: usize,
    /// How many of them hold G0's toplevel (the run drops those after its first install).
    pub g0_generations: usize,
}

/// The initrd of one generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Initrd {
    /// A unit's output: its path is known.
    Path(StorePath),
    /// Glue rewritten for the step: its path follows from the masks of the units it depends on
    /// (given here), known once materialised.
    Glue(Vec<StorePath>),
    /// G0's glue initrd: not comparable with a rewritten one.
    Unknown,
    /// No initrd found.
    None,
}

/// One step's boot files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootStep {
    pub index: usize,
    /// The kernel package's `out` in this step's generation (the toplevel's `kernel` links into it).
    pub kernel: Option<StorePath>,
    pub initrd: Initrd,
    /// The kernel+initrd pair differs from the previous generation's (G0's for step 1); for a
    /// glue initrd against G0 this is a bound ("may differ").
    pub new_pair: bool,
}

/// The run's figures for the boot loader and `/boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPlan {
    /// Boot-loader installs of a run that reaches the target with `--action switch` or `boot`:
    /// one per step.
    pub installs: usize,
    /// The same with `--action test`: none (every step is activated with `test`).
    pub installs_with_test: usize,
    /// Boot entries before the run (generations of the system profile).
    pub entries_before: usize,
    /// Boot entries the run adds at most at any install, relative to before the run.
    pub entries_added_max: usize,
    /// Whether G0 is a generation of the profile (the bound of one entry relies on it).
    pub g0_in_profile: bool,
    /// The kernel package (`linux`), if the system has one.
    pub kernel_unit: Option<String>,
    /// The kernel group's units that change (kernel, modules, initrd, firmware).
    pub kernel_group: Vec<String>,
    /// The step in which the kernel changes (none: it does not).
    pub kernel_step: Option<usize>,
    /// Steps whose kernel+initrd pair differs from the previous generation's.
    pub pair_steps: Vec<usize>,
    /// Distinct kernel+initrd pairs of the run's generations in `/boot` at once, at most: at an
    /// install the run's generations are G_{k-1} and G_k.
    pub pairs_max: usize,
    /// The same for a boot loader that copies the new files before removing unused ones (then
    /// G_{k-2}'s pair is still there during the install).
    pub pairs_max_copy_first: usize,
    /// Kernel+initrd pairs other than G0's in `/boot` at once, at most, for any boot loader
    /// (copying first included): what `/boot` must have room for beyond what it holds now.
    pub pairs_added_max: usize,
    /// The initrd is glue: its paths are known only once each step is materialised.
    pub initrd_is_glue: bool,
    pub steps: Vec<BootStep>,
}

/// The kernel+initrd pair of a generation.
type Pair = (Option<StorePath>, Initrd);

/// The boot figures of a plan's `steps` (in order; the last is the target).
pub fn boot_plan(
    units: &Units,
    target: &TargetGraph,
    steps: &[Step],
    profile: &ProfileFacts,
) -> BootPlan {
    let parts = BootParts::find(units, target);
    let mut pairs: Vec<Pair> = vec![parts.g0_pair()];
    pairs.extend(steps.iter().map(|s| parts.pair_at(&s.mask)));
    let n = steps.len();
    let boot_steps: Vec<BootStep> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (kernel, initrd) = pairs[i + 1].clone();
            BootStep {
                index: s.index,
                kernel,
                initrd,
                new_pair: differ(&pairs[i], &pairs[i + 1]),
            }
        })
        .collect();
    let kernel_step = boot_steps
        .iter()
        .zip(&pairs)
        .find(|(s, prev)| s.kernel != prev.0)
        .map(|(s, _)| s.index);
    let pair_steps: Vec<usize> = boot_steps
        .iter()
        .filter(|s| s.new_pair)
        .map(|s| s.index)
        .collect();
    BootPlan {
        installs: n,
        installs_with_test: 0,
        entries_before: profile.generations,
        entries_added_max: entries_added_max(n, profile.g0_generations),
        g0_in_profile: profile.g0_generations > 0,
        kernel_unit: parts.kernel.map(|u| u.name.clone()),
        kernel_group: kernel_group(units),
        kernel_step,
        pair_steps,
        pairs_max: pairs_in_window(&pairs, 1, false),
        pairs_max_copy_first: pairs_in_window(&pairs, 2, false),
        pairs_added_max: pairs_in_window(&pairs, 2, true),
        initrd_is_glue: parts.glue_initrd_inputs.is_some(),
        steps: boot_steps,
    }
}

/// The units and glue a generation's kernel+initrd pair comes from.
struct BootParts<'a> {
    /// The `linux` unit.
    kernel: Option<&'a Unit>,
    /// An `initrd*` unit (a package), if the initrd is one.
    initrd_unit: Option<&'a Unit>,
    /// Otherwise a glue initrd: the unit outputs it is built from (through glue).
    glue_initrd_inputs: Option<Vec<StorePath>>,
}

impl<'a> BootParts<'a> {
    fn find(units: &'a Units, target: &TargetGraph) -> BootParts<'a> {
        let with_out = |pick: &dyn Fn(&str) -> bool| {
            units
                .units
                .iter()
                .find(|u| pick(&u.name) && u.new.contains_key("out"))
        };
        let kernel = with_out(&|n| n == "linux");
        let initrd_unit = with_out(&|n| n.starts_with("initrd"));
        let glue_initrd_inputs = match initrd_unit {
            Some(_) => None,
            None => target
                .glue
                .iter()
                .find(|d| {
                    d.derivation_name()
                        .is_some_and(|n| parse_drv_name(n).0.starts_with("initrd"))
                })
                .map(|d| unit_inputs(target, d)),
        };
        BootParts {
            kernel,
            initrd_unit,
            glue_initrd_inputs,
        }
    }

    /// The pair of a generation whose packages are the target's under `mask`.
    fn pair_at(&self, mask: &Mask) -> Pair {
        let at = |p: &StorePath| mask.0.get(p).cloned().unwrap_or_else(|| p.clone());
        let kernel = self.kernel.map(|u| at(&u.new["out"]));
        let initrd = match (self.initrd_unit, &self.glue_initrd_inputs) {
            (Some(u), _) => Initrd::Path(at(&u.new["out"])),
            (None, Some(inputs)) => Initrd::Glue(inputs.iter().map(at).collect()),
            (None, None) => Initrd::None,
        };
        (kernel, initrd)
    }

    /// G0's pair: its kernel, and its initrd where it is a package (a glue initrd of G0 is not
    /// known by its inputs).
    fn g0_pair(&self) -> Pair {
        let kernel = self.kernel.and_then(|u| u.old.get("out").cloned());
        let initrd = match (self.initrd_unit, &self.glue_initrd_inputs) {
            (Some(u), _) => u
                .old
                .get("out")
                .cloned()
                .map_or(Initrd::Unknown, Initrd::Path),
            (None, Some(_)) => Initrd::Unknown,
            (None, None) => Initrd::None,
        };
        (kernel, initrd)
    }
}

/// The most distinct pairs among the generations k-w..=k, over the steps k (each step installs);
/// `beyond_g0`: only those that may differ from G0's.
fn pairs_in_window(pairs: &[Pair], w: usize, beyond_g0: bool) -> usize {
    let n = pairs.len().saturating_sub(1);
    (1..=n)
        .map(|k| {
            let from = k.saturating_sub(w);
            let mut seen: Vec<&Pair> = Vec::new();
            for (i, p) in pairs.iter().enumerate().take(k + 1).skip(from) {
                if beyond_g0 && (i == 0 || !differ(&pairs[0], p)) {
                    continue;
                }
                if !seen.iter().any(|q| !differ(q, p)) {
                    seen.push(p);
                }
            }
            seen.len()
        })
        .max()
        .unwrap_or(0)
}

/// Boot entries a run of `n` installs adds at most. Install 1: G0's generations and G1: +1.
/// Install k ≥ 2: G0's are gone, G_{k-1} and G_k: +2 − (G0's generations).
fn entries_added_max(n: usize, g0_generations: usize) -> usize {
    match n {
        0 => 0,
        1 => 1,
        _ => 1usize.max(2usize.saturating_sub(g0_generations)),
    }
}

/// The changing units that are part of the kernel (the kernel first), which move in one step.
fn kernel_group(units: &Units) -> Vec<String> {
    let mut group: Vec<String> = units
        .units
        .iter()
        .filter(|u| matches!(u.change, Change::Changed | Change::Added))
        .filter(|u| is_kernel_part(&u.name))
        .map(|u| u.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    group.sort_by_key(|n| n != "linux");
    group
}

/// Whether two generations' pairs may differ: an unknown initrd differs from every other.
fn differ(a: &Pair, b: &Pair) -> bool {
    a.0 != b.0 || a.1 == Initrd::Unknown || b.1 == Initrd::Unknown || a.1 != b.1
}

/// The unit outputs a glue derivation is built from, through glue (sorted, deduplicated).
fn unit_inputs(g: &TargetGraph, root: &StorePath) -> Vec<StorePath> {
    let mut out: BTreeMap<StorePath, ()> = BTreeMap::new();
    let mut seen: BTreeSet<&StorePath> = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(d) = todo.pop() {
        if !seen.insert(d) {
            continue;
        }
        for (i, outs) in &g.drvs[d].input_drvs {
            if g.glue.contains(i) {
                todo.push(i);
            } else {
                for o in outs {
                    if let Some(p) = g.output_path(i, o) {
                        out.insert(p.clone(), ());
                    }
                }
            }
        }
    }
    out.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drv::{Derivation, Output, StoreDir};
    use crate::plan::names::PackageName;
    use crate::plan::space::StepSpace;
    use crate::plan::units::{match_units, G0Reading};

    fn path(i: u32, name: &str) -> StorePath {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&i.to_le_bytes());
        StorePath::from_base_name(&format!("{}-{name}", crate::drv::nix32::encode(&b))).unwrap()
    }

    fn drv(out: StorePath, glue: bool, inputs: &[&StorePath]) -> Derivation {
        let mut d = Derivation::default();
        d.outputs.insert("out".into(), Output::input_addressed(out));
        if glue {
            d.env.insert(b"preferLocalBuild".to_vec(), b"1".to_vec());
        }
        for i in inputs {
            d.input_drvs
                .insert((*i).clone(), ["out".to_string()].into());
        }
        d
    }

    fn step(index: usize, mask: &[(&StorePath, &StorePath)]) -> Step {
        Step {
            index,
            upgraded: vec![],
            stubbed: vec![],
            mask: Mask(
                mask.iter()
                    .map(|(a, b)| ((*a).clone(), (*b).clone()))
                    .collect(),
            ),
            space: StepSpace::default(),
            space_nar: StepSpace::default(),
            reboot_after: false,
        }
    }

    /// A toplevel with the kernel `linux` and a glue initrd built from `kmod` and `busybox`.
    /// Two steps: busybox first, then the kernel with kmod (the target).
    #[test]
    fn a_glue_initrd_changes_with_its_inputs_and_is_a_bound_against_g0() {
        let (linux_old, linux_new) = (path(1, "linux-6.1.30"), path(2, "linux-6.1.60"));
        let (kmod_old, kmod_new) = (path(3, "kmod-30"), path(4, "kmod-31"));
        let (bb_old, bb_new) = (path(5, "busybox-1.35"), path(6, "busybox-1.36"));
        let mut drvs = BTreeMap::new();
        let linux_drv = path(11, "linux-6.1.60.drv");
        let kmod_drv = path(12, "kmod-31.drv");
        let bb_drv = path(13, "busybox-1.36.drv");
        drvs.insert(linux_drv.clone(), drv(linux_new.clone(), false, &[]));
        drvs.insert(kmod_drv.clone(), drv(kmod_new.clone(), false, &[]));
        drvs.insert(bb_drv.clone(), drv(bb_new.clone(), false, &[]));
        let initrd_drv = path(14, "initrd-linux-6.1.60.drv");
        drvs.insert(
            initrd_drv.clone(),
            drv(path(7, "initrd-linux-6.1.60"), true, &[&kmod_drv, &bb_drv]),
        );
        let top = path(15, "nixos-system-h-23.11.drv");
        drvs.insert(
            top.clone(),
            drv(
                path(8, "nixos-system-h-23.11"),
                true,
                &[&linux_drv, &initrd_drv],
            ),
        );
        let sd = StoreDir::new("/nix/store").unwrap();
        let g = TargetGraph::read(sd, top, &drvs).unwrap();
        let mut r = G0Reading::default();
        for p in [&linux_old, &kmod_old, &bb_old] {
            r.units
                .insert(p.clone(), PackageName::from_path_name(p.name()));
        }
        let units = match_units(&g, &r);
        let steps = [
            step(1, &[(&linux_new, &linux_old), (&kmod_new, &kmod_old)]),
            step(2, &[]),
        ];
        // G0 is not in the profile here (a `nixos-rebuild test` since): two entries at most.
        let profile = ProfileFacts {
            generations: 3,
            g0_generations: 0,
        };
        let b = boot_plan(&units, &g, &steps, &profile);
        assert!(b.initrd_is_glue);
        assert_eq!(b.kernel_step, Some(2));
        assert_eq!(b.kernel_group, vec!["linux".to_string()]);
        // Step 1 rebuilds the initrd (busybox moved) and may differ from G0's: both steps count.
        assert_eq!(b.pair_steps, vec![1, 2]);
        assert_eq!(b.pairs_max, 2);
        assert_eq!(b.pairs_max_copy_first, 3);
        assert_eq!(b.pairs_added_max, 2);
        assert_eq!(b.steps[0].kernel.as_ref(), Some(&linux_old));
        assert_eq!(
            b.steps[0].initrd,
            Initrd::Glue(vec![kmod_old.clone(), bb_new.clone()])
        );
        assert_eq!(b.steps[1].kernel.as_ref(), Some(&linux_new));
        assert_eq!((b.installs, b.installs_with_test), (2, 0));
        assert!(!b.g0_in_profile);
        assert_eq!((b.entries_before, b.entries_added_max), (3, 2));
        let with_g0 = boot_plan(
            &units,
            &g,
            &steps,
            &ProfileFacts {
                generations: 3,
                g0_generations: 1,
            },
        );
        assert_eq!(with_g0.entries_added_max, 1);
    }
}
