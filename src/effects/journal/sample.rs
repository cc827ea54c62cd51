//! A realistic run for tests, the golden file, the benchmark and the fuzz corpus.

use std::path::PathBuf;

use super::codes::{Action, OnFailedUnits, OnFailure, RebootPolicy, Strategy};
use super::record::{ChosenStrategy, Outcome, PlannedStep, Record, RunHeader, RunOptions, Target};
use super::transition::Transition;
use crate::drv::StorePath;
use crate::plan::mask::Mask;

/// A store path `<hash>-name` whose hash is derived from `name`.
pub fn store_path(name: &str) -> StorePath {
    // nix32 alphabet, deterministic per name.
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let hash: String = (0..32)
        .map(|i| {
            for b in name.bytes().chain([i as u8]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            ALPHABET[(h >> 59) as usize % 32] as char
        })
        .collect();
    // The first nix32 character of a 20-byte hash carries only 0..8.
    let hash = format!("{}{}", (b'0' + (h % 8) as u8) as char, &hash[1..]);
    StorePath::from_base_name(&format!("{hash}-{name}")).expect("sample store path")
}

pub fn header() -> RunHeader {
    RunHeader {
        stepwise_version: "0.1.0".into(),
        pid: 4242,
        store_dir: "/nix/store".into(),
        target: Target::Flake {
            reference: "/etc/nixos".into(),
            host: Some("web".into()),
        },
        target_drv: store_path("nixos-system-web-24.11.drv"),
        profile: PathBuf::from("/nix/var/nix/profiles/system"),
        current_system: PathBuf::from("/run/current-system"),
        booted_system: PathBuf::from("/run/booted-system"),
        action: Action::Switch,
        strategy: Strategy::Auto,
        on_failure: OnFailure::Unwind,
        reboot: RebootPolicy::Never,
        reboot_command: vec!["systemctl".into(), "reboot".into()],
        non_vital: vec!["firefox".into()],
        together: vec![vec!["openssl".into(), "curl".into()]],
        reserve: 64 << 20,
        g0_toplevel: store_path("nixos-system-web-24.05"),
        g0_drv: Some(store_path("nixos-system-web-24.05.drv")),
        plan: (1..=2)
            .map(|i| PlannedStep {
                index: i,
                toplevel_drv: store_path(&format!("nixos-system-web-step{i}.drv")),
                toplevel_out: store_path(&format!("nixos-system-web-step{i}")),
                units: vec![format!("unit-{i}a"), format!("unit-{i}b")],
                adds: 150 << 20,
                frees: 120 << 20,
                // Step 1 keeps unit-2a at its G0 version; the last step masks nothing.
                mask: Some(Mask(if i == 1 {
                    [(store_path("unit-2a-2.0"), store_path("unit-2a-1.0"))].into()
                } else {
                    Default::default()
                })),
                reboot_after: Some(false),
            })
            .collect(),
        reboot_window: None,
        options: RunOptions::default(),
        local_derivations: Vec::new(),
    }
}

/// A header with what format 3 added: options that are not the defaults and a local derivation.
pub fn header_v3() -> RunHeader {
    RunHeader {
        options: RunOptions {
            keep_previous: true,
            on_failed_units: OnFailedUnits::Stop,
        },
        local_derivations: vec![store_path("initrd-linux-6.6.drv")],
        ..header()
    }
}

/// The housekeeping a later `upgrade` journals in the last, finished run (format 3's
/// transitions): an earlier attempt's leftovers deleted, a stub probe built and cleaned up.
pub fn housekeeping_records(first_seq: u64) -> Vec<Record> {
    let mut run = SampleRun::new(first_seq);
    run.effect(
        Transition::DeleteLeftovers {
            paths: vec![store_path("etc"), store_path("unit-1a-2.0")],
            bytes: 12 << 20,
        },
        None,
        Some(12 << 20),
    );
    run.effect(
        Transition::ProbeStubs {
            root: PathBuf::from("/var/lib/stepwise/journal.redb.probe/root"),
            scratch: vec![store_path("stepwise-stub-firefox")],
        },
        None,
        Some(4 << 10),
    );
    run.out
}

/// The records of a stepwise run after its header, with `Done`/`Failed` naming their intent by
/// the sequence number the intent will get when the run's `RunStarted` is record `first_seq`.
pub fn records(first_seq: u64) -> Vec<Record> {
    let mut run = SampleRun::new(first_seq);
    run.out.push(Record::StrategyChosen {
        strategy: ChosenStrategy::Stepwise,
        why: "the plain upgrade needs 1.2 GiB, 800 MiB are free".into(),
    });
    run.effect(
        Transition::PinDerivations {
            drvs: vec![
                store_path("nixos-system-web-24.05.drv"),
                store_path("nixos-system-web-24.11.drv"),
            ],
        },
        None,
        None,
    );
    for step in 1..=2u32 {
        sample_step(&mut run, step);
    }
    let i = run.intent(Transition::ReleaseRoots {
        dir: PathBuf::from("/nix/var/nix/gcroots/stepwise"),
    });
    run.out.push(Record::Failed {
        intent: i,
        message: "permission denied".into(),
    });
    run.out.push(Record::RunFinished {
        outcome: Outcome::ReachedTarget,
    });
    run.out
}

/// Records being made, numbered from `first_seq` (the run's `RunStarted`).
struct SampleRun {
    out: Vec<Record>,
    first_seq: u64,
}

impl SampleRun {
    fn new(first_seq: u64) -> Self {
        SampleRun {
            out: Vec::new(),
            first_seq,
        }
    }

    /// An intent; returns the sequence number it gets.
    fn intent(&mut self, transition: Transition) -> u64 {
        self.out.push(Record::Intent { transition });
        self.first_seq + self.out.len() as u64
    }

    /// An intent and its `Done`.
    fn effect(&mut self, transition: Transition, added: Option<u64>, freed: Option<u64>) {
        let intent = self.intent(transition);
        self.out.push(Record::Done {
            intent,
            added,
            freed,
        });
    }
}

/// One planned step's effects, each done: write, realise, set the profile, activate, drop the
/// generation left, collect.
fn sample_step(run: &mut SampleRun, step: u32) {
    let profile = PathBuf::from("/nix/var/nix/profiles/system");
    let drv = store_path(&format!("nixos-system-web-step{step}.drv"));
    let top = store_path(&format!("nixos-system-web-step{step}"));
    let drvs = vec![drv.clone(), store_path(&format!("system-path-{step}.drv"))];
    run.effect(
        Transition::WriteDerivations { step, drvs },
        Some(8 << 10),
        None,
    );
    let root = PathBuf::from(format!("/nix/var/nix/gcroots/stepwise/step-{step}"));
    run.effect(
        Transition::Realise { step, drv, root },
        Some(150 << 20),
        None,
    );
    run.effect(
        Transition::SetProfile {
            profile: profile.clone(),
            toplevel: top.clone(),
        },
        None,
        None,
    );
    run.effect(
        Transition::Activate {
            toplevel: top,
            action: Action::Switch,
        },
        None,
        None,
    );
    run.effect(
        Transition::DropGeneration {
            profile,
            number: 40 + u64::from(step),
        },
        None,
        None,
    );
    run.effect(
        Transition::Collect {
            paths: vec![
                store_path(&format!("unit-{step}a-1.0")),
                store_path(&format!("unit-{step}b-1.0")),
            ],
            bytes: 120 << 20,
        },
        None,
        Some(120 << 20),
    );
}

/// A second, interrupted run: an unwind whose last intent has no outcome.
pub fn interrupted_records(first_seq: u64) -> Vec<Record> {
    let mut out = vec![
        Record::PlainAttemptFailed {
            why: "out of space while realising: No space left on device".into(),
        },
        Record::StrategyChosen {
            strategy: ChosenStrategy::Stepwise,
            why: "the plain upgrade ran out of space".into(),
        },
        Record::Intent {
            transition: Transition::Realise {
                step: 1,
                drv: store_path("nixos-system-web-step1.drv"),
                root: PathBuf::from("/nix/var/nix/gcroots/stepwise/step-1"),
            },
        },
    ];
    build_failed_then_unwinding(&mut out, first_seq + 3);
    out
}

/// The realise at `intent` failed to build; the run turns back, a later `unwind` takes it over,
/// and its reboot into G0 has no outcome recorded (interrupted).
fn build_failed_then_unwinding(out: &mut Vec<Record>, intent: u64) {
    out.push(Record::Failed {
        intent,
        message: "build of hello-2.12.drv failed".into(),
    });
    out.push(Record::UnwindStarted {
        why: "a build failed".into(),
    });
    out.push(Record::Resumed {
        pid: 777,
        command: "unwind".into(),
    });
    out.push(Record::Intent {
        transition: Transition::Reboot {
            expected_booted: store_path("nixos-system-web-24.05"),
        },
    });
}

/// A format-3 run (after `header_v3`): step 1 runs out of space and the chain is planned again
/// (`spaceRanOut`, `replanned`), then a build fails and the run unwinds, its last intent without
/// an outcome. Kept apart from `interrupted_records` so the format-2 golden stays what format 2
/// wrote.
pub fn replanned_records(first_seq: u64) -> Vec<Record> {
    let root = PathBuf::from("/nix/var/nix/gcroots/stepwise/step-1");
    let mut out = vec![
        Record::PlainAttemptFailed {
            why: "out of space while realising: No space left on device".into(),
        },
        Record::StrategyChosen {
            strategy: ChosenStrategy::Stepwise,
            why: "the plain upgrade ran out of space".into(),
        },
    ];
    let intent = |out: &mut Vec<Record>, t: Transition| {
        out.push(Record::Intent { transition: t });
        first_seq + out.len() as u64
    };
    let i = intent(
        &mut out,
        Transition::Realise {
            step: 1,
            drv: store_path("nixos-system-web-step1.drv"),
            root: root.clone(),
        },
    );
    out.push(Record::SpaceRanOut {
        step: 1,
        estimated: 150 << 20,
        free: 180 << 20,
    });
    out.push(Record::Failed {
        intent: i,
        message: "writing /nix/store/…-unit-1a-2.0: No space left on device".into(),
    });
    let i = intent(&mut out, Transition::Unpin { root: root.clone() });
    out.push(Record::Done {
        intent: i,
        added: None,
        freed: None,
    });
    let i = intent(
        &mut out,
        Transition::Collect {
            paths: vec![store_path("unit-1a-2.0")],
            bytes: 90 << 20,
        },
    );
    out.push(Record::Done {
        intent: i,
        added: None,
        freed: Some(90 << 20),
    });
    out.push(Record::Replanned {
        at: 0,
        cost_ppm: 1_320_000,
        steps: (1..=3)
            .map(|i| PlannedStep {
                index: i,
                toplevel_drv: store_path(&format!("nixos-system-web-replanned{i}.drv")),
                toplevel_out: store_path(&format!("nixos-system-web-replanned{i}")),
                units: vec![format!("unit-{i}")],
                adds: 100 << 20,
                frees: 80 << 20,
                mask: Some(Mask(if i == 3 {
                    Default::default()
                } else {
                    [(store_path("unit-3-2.0"), store_path("unit-3-1.0"))].into()
                })),
                reboot_after: Some(i == 1),
            })
            .collect(),
    });
    let i = intent(
        &mut out,
        Transition::Realise {
            step: 1,
            drv: store_path("nixos-system-web-replanned1.drv"),
            root,
        },
    );
    build_failed_then_unwinding(&mut out, i);
    out
}

/// Format 3's `activated` (kind 12) as a run writes it: an activation that switched with a
/// failed unit, then one that takes effect after a reboot. Kept apart from `records` so that the
/// format-2 golden stays what format 2 wrote; `first_seq` is the seq the first record will get.
pub fn activated_records(first_seq: u64) -> Vec<Record> {
    let mut out = Vec::new();
    for (k, (units, reboot_required)) in
        [(vec!["nginx.service".to_string()], false), (vec![], true)]
            .into_iter()
            .enumerate()
    {
        let intent = first_seq + out.len() as u64;
        out.push(Record::Intent {
            transition: Transition::Activate {
                toplevel: store_path(&format!("nixos-system-web-step{}", k + 1)),
                action: Action::Switch,
            },
        });
        out.push(Record::Activated {
            intent,
            units_failed: units,
            reboot_required,
        });
        out.push(Record::Done {
            intent,
            added: None,
            freed: None,
        });
    }
    out
}

/// Format 3's `bootedBefore` (kind 13) as a run writes it: no re-plan fitted from step 1 while an
/// older system was booted, so the run reboots into step 1. Kept apart from the golden runs;
/// `first_seq` is the seq the first record will get.
pub fn booted_before_records(first_seq: u64) -> Vec<Record> {
    vec![
        Record::BootedBefore {
            toplevel: store_path("nixos-system-web-old"),
        },
        Record::Intent {
            transition: Transition::Reboot {
                expected_booted: store_path("nixos-system-web-step1"),
            },
        },
        Record::Done {
            intent: first_seq + 1,
            added: None,
            freed: None,
        },
    ]
}
