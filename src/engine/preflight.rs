//! What `upgrade` checks before anything changes: G0 complete with its deriver, `--action test`
//! keeping a bootable default, room on /boot, the stub probe of non-vital packages, and the
//! shortfall message when nothing fits. Each refuses with a clear error and changes nothing.

use std::collections::BTreeSet;
use std::path::Path;

use super::stub_probe::{probe_stubs, ProbeError, ProbeOutcome};
use crate::drv::StorePath;
use crate::effects::journal::{human_bytes, Action, RebootPolicy};
use crate::effects::{Store, System};
use crate::error::Error;
use crate::plan::{BootPlan, PlanInput, Planned, Shortfall};

/// G0's closure must be complete and its deriver valid: an exact unwind rebuilds from it.
pub fn g0_closure_and_deriver(
    store: &dyn Store,
    g0: &StorePath,
) -> Result<(BTreeSet<StorePath>, StorePath), Error> {
    let closure = store.closure(std::slice::from_ref(g0)).map_err(|e| {
        Error::bad_input(
            format!("G0 {g0} is not complete in the store: {e}"),
            "repair the store (`nix-store --verify --repair`) before upgrading",
        )
    })?;
    let deriver = store
        .path_infos(std::slice::from_ref(g0))?
        .get(g0)
        .and_then(|i| i.deriver.clone());
    match deriver {
        Some(d) if !store.valid_paths(std::slice::from_ref(&d))?.is_empty() => Ok((closure, d)),
        other => Err(Error::bad_input(
            format!(
                "G0 {g0} has no valid deriver ({}): an exact unwind to it would be impossible",
                other.map_or("none recorded".into(), |d| format!(
                    "{d} is not in the store"
                ))
            ),
            "instantiate the running configuration again (so its .drv is in the store), then retry",
        )),
    }
}

/// `--action test` never installs the boot loader, so its default stays the running system's
/// (G0). The run deletes G0's generation and, unless a pin keeps them, its paths: the default
/// stays bootable only where G0 is the booted system (pinned until the reboot, which returns to
/// it, as after `nixos-rebuild test`). A reboot in the middle would boot G0, not the step.
pub fn test_action_keeps_a_bootable_default(
    system: &dyn System,
    action: Action,
    reboot: RebootPolicy,
    booted_system: &Path,
    g0: &StorePath,
) -> Result<(), Error> {
    if action != Action::Test {
        return Ok(());
    }
    if reboot == RebootPolicy::WhenNeeded {
        return Err(Error::bad_input(
            "--action test with --reboot when-needed: a reboot boots the boot loader's default, which --action test leaves at the running system, not at the step to boot into",
            "use --action switch (or boot) to reboot between steps, or --reboot never",
        ));
    }
    let booted = system.read_system_link(booted_system)?;
    if booted.as_ref() != Some(g0) {
        return Err(Error::bad_input(
            format!(
                "--action test leaves the boot loader's default at the running system {g0}, which this upgrade deletes: {} {}, so nothing keeps it until the next boot",
                booted_system.display(),
                booted.map_or("does not point at a system".to_string(), |b| format!("is {b}"))
            ),
            "use --action switch or --action boot (the boot default moves with the upgrade)",
        ));
    }
    Ok(())
}

/// Unrooted results of an earlier attempt (a plain upgrade that ran out of space): dead paths of
/// the target's closure, never a live one or one of G0's. Returns them with their bytes.
pub fn leftovers(
    store: &dyn Store,
    input: &PlanInput,
    g0_closure: &BTreeSet<StorePath>,
) -> Result<(Vec<StorePath>, u64), Error> {
    let live = store.live_paths()?;
    let paths: Vec<StorePath> = input
        .facts
        .iter()
        .filter(|(p, f)| f.present && !live.contains(*p) && !g0_closure.contains(*p))
        .map(|(p, _)| p.clone())
        .collect();
    let paths = super::garbage::with_dead_referrers(store, paths, &live)?;
    let bytes = paths
        .iter()
        .filter_map(|p| input.facts.get(p))
        .map(|f| f.size)
        .sum();
    Ok((paths, bytes))
}

/// Build the stub probe (`plan::probe`) for the plan's non-vital packages `names`: an error
/// naming the packages that cannot be taken out, before anything changed.
pub fn check_stubs(
    store: &dyn Store,
    input: &PlanInput,
    planned: &Planned,
    names: &[String],
    scratch: &Path,
    g0_closure: &BTreeSet<StorePath>,
    hk: &mut dyn super::housekeeping::Housekeeping,
) -> Result<(), Error> {
    let mut probe = |names: &[String]| {
        probe_stubs(
            store,
            &input.target,
            planned,
            names,
            scratch,
            g0_closure,
            hk,
        )
        .map_err(|e| match e {
            ProbeError::Store(e) => Error::Store(e),
            ProbeError::Journal(e) => e,
            ProbeError::Rewrite(e) => Error::bad_input(
                format!(
                    "rewriting the derivations without {}: {e}",
                    names.join(", ")
                ),
                "report this with `stepwise drv inspect` of the target's toplevel .drv",
            ),
        })
    };
    let (drv, log_tail) = match probe(names)? {
        ProbeOutcome::Builds => {
            let _ = std::fs::remove_dir(scratch);
            return Ok(());
        }
        ProbeOutcome::OutOfSpace { message } => {
            return Err(Error::NoRoom {
                what: format!(
                    "checking that {} can be taken out ran out of space: {message}",
                    names.join(", ")
                ),
                help: vec![
                    "free some space on the store's filesystem (`nix-collect-garbage -d` removes old generations), then retry".into(),
                ],
            })
        }
        ProbeOutcome::Breaks { drv, log_tail } => (drv, log_tail),
    };
    // Name the culprits: each alone, when there are several.
    let mut culprits = Vec::new();
    if names.len() > 1 {
        for n in names {
            if matches!(probe(std::slice::from_ref(n))?, ProbeOutcome::Breaks { .. }) {
                culprits.push(n.clone());
            }
        }
    }
    let _ = std::fs::remove_dir(scratch);
    let blamed = if culprits.is_empty() {
        names.to_vec()
    } else {
        culprits
    };
    Err(stub_breaks(store, &blamed, &drv, &log_tail))
}

fn stub_breaks(store: &dyn Store, blamed: &[String], drv: &StorePath, log_tail: &str) -> Error {
    let flags = blamed
        .iter()
        .map(|n| format!("--non-vital {n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let one = blamed.len() == 1;
    Error::bad_input(
        format!(
            "{flags}: {} cannot be taken out for the upgrade: {} does not build with {} replaced by an empty stub (the system's configuration reads {}):\n{log_tail}\nnothing was changed",
            blamed.join(", "),
            store.store_dir().display(drv),
            if one { "it" } else { "them" },
            if one { "its files" } else { "their files" },
        ),
        format!(
            "drop {flags} (services.stepwise.nonVital in the NixOS module); `stepwise plan` shows what else would make room"
        ),
    )
}

/// Whether `dir` (the boot partition) can take the kernel+initrd pairs the run adds beyond what
/// it holds, each sized as G0's `kernel` and `initrd` (through the toplevel's links). Skipped
/// when `dir` is on the store's filesystem (nothing separate to fill) or nothing is added.
/// `note` hears why a check was skipped.
pub fn check_boot_room(
    store: &dyn Store,
    dir: &Path,
    profile: &Path,
    g0: &StorePath,
    boot: Option<&BootPlan>,
    note: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let not_a_boot_dir =
        "pass the directory the boot loader installs into (e.g. /boot), or leave --boot-dir out";
    let meta = std::fs::metadata(dir).map_err(|e| {
        Error::bad_input(format!("--boot-dir {}: {e}", dir.display()), not_a_boot_dir)
    })?;
    if !meta.is_dir() {
        return Err(Error::bad_input(
            format!("--boot-dir {} is not a directory", dir.display()),
            not_a_boot_dir,
        ));
    }
    let store_root = Path::new(store.store_dir().as_str());
    let same_fs = std::fs::metadata(store_root).is_ok_and(|s| s.dev() == meta.dev());
    let Some(boot) = boot else { return Ok(()) };
    if same_fs || boot.pairs_added_max == 0 {
        return Ok(());
    }
    let top = store.store_dir().to_path(g0);
    let size = |name: &str| std::fs::metadata(top.join(name)).map(|m| m.len());
    let pair = match (size("kernel"), size("initrd")) {
        (Ok(k), Ok(i)) => k + i,
        // Without G0's files there is nothing to size them by: say so, do not guess.
        _ => {
            note(&format!(
                "{} has no kernel and initrd to size /boot's needs by: {} not checked",
                top.display(),
                dir.display()
            ));
            return Ok(());
        }
    };
    let needed = pair * boot.pairs_added_max as u64;
    let free = crate::effects::fs::space(dir)?.free;
    if free >= needed {
        return Ok(());
    }
    Err(Error::NoRoom {
        what: format!(
            "{} has {} free; the run adds up to {} kernel+initrd pair(s) of about {} each ({}): {} more is needed",
            dir.display(),
            human_bytes(free),
            boot.pairs_added_max,
            human_bytes(pair),
            human_bytes(needed),
            human_bytes(needed - free)
        ),
        help: vec![
            format!(
                "delete old generations (`nix-env --profile {} --delete-generations old` deletes all but the current one), then let the boot loader drop their files (`{}/bin/switch-to-configuration boot`)",
                profile.display(),
                top.display()
            ),
            "keep fewer boot entries for good: boot.loader.systemd-boot.configurationLimit (or boot.loader.grub.configurationLimit)".into(),
        ],
    })
}

/// Nothing fits: what is missing and what would help, before anything changed.
pub fn no_room(sf: &Shortfall) -> Error {
    let what = format!(
        "no order of steps fits: {} more would be needed to move {} ({} for the whole upgrade without stubs or reboots)",
        human_bytes(sf.missing_next),
        sf.bottleneck.join(", "),
        human_bytes(sf.missing_total)
    );
    let mut help = Vec::new();
    if !sf.non_vital_that_fits.is_empty() {
        help.push(format!(
            "--non-vital {} makes the upgrade fit (out for the duration, back upgraded at the end)",
            sf.non_vital_that_fits.join(" --non-vital ")
        ));
    } else if !sf.non_vital_candidates.is_empty() {
        help.push(format!(
            "--non-vital {} would free room",
            sf.non_vital_candidates
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" / --non-vital ")
        ));
    }
    if sf.reboot_would_free > 0 {
        help.push(format!(
            "a reboot would free {} the booted system pins{}",
            human_bytes(sf.reboot_would_free),
            if sf.fits_with_reboot {
                ", enough to fit: --reboot when-needed"
            } else {
                ""
            }
        ));
    }
    help.push(format!(
        "or free at least {} on the store's filesystem (`nix-collect-garbage -d` removes old generations); `stepwise plan` shows the details",
        human_bytes(sf.missing_next)
    ));
    Error::NoRoom { what, help }
}
