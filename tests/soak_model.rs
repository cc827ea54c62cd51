//! The model soak: the module's life for many hours on the in-memory model store, through the
//! engine's API and a real redb journal. Each hour: the store's GC (the module's timer runs after
//! nix-gc), a new revision of a generated system when the last one is reached (an hourly
//! nixpkgs bump: one to three packages get a new version), then the timer's `upgrade` to the
//! newest revision. Faults at random: power cuts (the model dies after a random effect; then
//! either a boot, with the boot-time `resume`, or just the next tick), `systemctl stop`s (the
//! stop flag at a random checkpoint), capacity faults (the disk fuller for an hour), activations
//! that exit 4 or 100. After every event: the profile, current- and booted-system complete,
//! nothing live deleted, the journal verifies; every revision is reached. Seeded: a failure
//! replays with the seed it prints.
//!
//!     cargo test --test soak_model -- --nocapture                   # CI size
//!     STEPWISE_SOAK_MODEL_HOURS=8760 cargo test --release --test soak_model -- --nocapture
//!     STEPWISE_SOAK_SEED=N …                                        # another seed
//!
//! Not yet a year on every seed. Power cuts end the process at the next checkpoint, so a cut is
//! never journaled as the effect's failure. A realise that runs out of space leaves nothing of
//! its output (as Nix does). When a re-plan mid-run does not fit while another system is booted
//! (the run's G0, or an older system a plain upgrade left booted), the run reboots into the
//! generation it stands at, collects what the old boot pinned (named by its `bootedBefore`
//! record) and re-plans, so the soak's operator no longer reboots for a re-plan
//! (`operator_boots` stays 0). It still reboots when a new run's plan does not fit while an older
//! generation is booted (the planner plans reboots only into a step it made), counted apart; a
//! boot's `resume` that then stops for room waits for the module's GC before the next tick.
//! Seeds 1, 2 and 3 run the 8760 hours. The default seed stops at a boot's `resume` after a power
//! cut that unpinned a system older than the run's G0: the run never recorded that system (it
//! rebooted nothing), so its collect cannot name it, and no re-plan from G0 fits until the
//! module's GC deletes it before the next tick.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use common::model::{check_system, continue_req, gc, request, FixedClock, Series, CURRENT, KIB};
use common::synthetic::Rng;
use stepwise::drv::StorePath;
use stepwise::effects::journal::Journal;
use stepwise::effects::System;
use stepwise::engine::{ContinueOutcome, JournalFile, RunEnd, Seams, UpgradeOutcome};

const DEFAULT_HOURS: u64 = 48;
const DEFAULT_SEED: u64 = 0x5eed_50a4;
/// A revision not reached within this many hours fails the soak.
const PATIENCE: u64 = 24;

#[derive(Debug, Default)]
struct Figures {
    hours: u64,
    revisions: u64,
    reached: u64,
    ticks: u64,
    cuts: u64,
    boots: u64,
    stops: u64,
    capacity_faults: u64,
    exit_4: u64,
    exit_100: u64,
    run_reboots: u64,
    exit_3: u64,
    /// Boots the soak made because a re-plan mid-run did not fit while an older generation
    /// stayed booted (the engine reboots for a re-plan itself: this stays 0).
    operator_boots: u64,
    /// Boots the soak made because a new run's plan did not fit while an older generation stayed
    /// booted (the planner plans reboots only to free what G0 pins as the booted system).
    operator_boots_new_run: u64,
    /// Boots whose `resume` stopped (exit 3) because the disk was fuller for that hour: the run
    /// waits at a complete generation and the next tick continues it.
    boot_stops: u64,
}

struct Soak {
    s: Series,
    rng: Rng,
    journal: PathBuf,
    clock: FixedClock,
    target_drv: Option<StorePath>,
    target_out: StorePath,
    published_at: u64,
    capacity: u64,
    /// The packages' sizes at revision 0, in bytes.
    base_sizes: Vec<u64>,
    f: Figures,
    /// Why the last tick stopped early, for the failure message.
    last_stop: String,
    /// A capacity fault holds part of the disk this hour.
    faulted: bool,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn running(s: &Series) -> StorePath {
    s.store
        .read_system_link(Path::new(CURRENT))
        .unwrap()
        .unwrap()
}

/// Who rebooted the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    /// A run's reboot, or a power cut's.
    Planned,
    /// The soak, as an operator, after no plan fitted with an older generation booted.
    Operator,
}

impl Soak {
    fn new(seed: u64, dir: &Path) -> Soak {
        let mut rng = Rng::new(seed);
        let sizes: Vec<u64> = (0..6).map(|_| 50 + rng.below(350)).collect();
        let total: u64 = sizes.iter().sum();
        let largest = *sizes.iter().max().unwrap();
        // Room for the system and its largest package four times over: a plain upgrade of
        // several big packages does not fit, a step of one always does.
        let capacity = (total + 4 * largest + 300) * KIB;
        let s = Series::new(&sizes, capacity);
        let target_out = running(&s);
        Soak {
            s,
            rng,
            journal: dir.join("journal.redb"),
            clock: FixedClock(0.into()),
            target_drv: None,
            target_out,
            published_at: 0,
            capacity,
            base_sizes: sizes.iter().map(|k| k * KIB).collect(),
            f: Figures::default(),
            last_stop: String::new(),
            faulted: false,
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    /// The invariants after every event.
    fn check(&self, event: &str) {
        let at = format!("hour {} ({event})", self.f.hours);
        check_system(&self.s.store).unwrap_or_else(|e| panic!("{at}: {e}"));
        if self.journal.exists() {
            Journal::open_read_only(&self.journal)
                .unwrap_or_else(|e| panic!("{at}: the journal does not verify: {e}"));
        }
    }

    /// Publish the next revision once the last is reached: one to three packages bumped, each
    /// growing or shrinking by up to a fifth; sometimes its switch fails units or needs a reboot.
    fn maybe_publish(&mut self) {
        if running(&self.s) != self.target_out && self.target_drv.is_some() {
            return;
        }
        let n = self.s.packages() as u64;
        let bumps: Vec<usize> = (0..1 + self.rng.below(3))
            .map(|_| self.rng.below(n) as usize)
            .collect();
        // Sizes wander around the first revision's, as a package's do over a year.
        let pct = 80 + self.rng.below(41);
        let base = &self.base_sizes;
        let drv = self.s.revise(&bumps, |i, _| base[i] * pct / 100);
        self.target_out = self.s.out(&drv);
        self.target_drv = Some(drv);
        self.published_at = self.f.hours;
        self.f.revisions += 1;
        if self.chance(5) {
            self.f.exit_4 += 1;
            self.s
                .store
                .set_activation_exit(&self.target_out, 4, &["flaky.service"]);
        } else if self.chance(3) {
            self.f.exit_100 += 1;
            self.s.store.set_activation_exit(&self.target_out, 100, &[]);
        }
    }

    /// The engine's seams. `stop_at`: the stop flag is set at that checkpoint (a `systemctl
    /// stop`). `cut_after`: the power is cut once the model has counted that many effects; the
    /// next checkpoint (right after the effect, before its outcome is journaled) ends the process,
    /// so that, as after a real cut, nothing more reaches the journal (a cut is never recorded
    /// as the effect's failure).
    fn seams<'a>(
        &'a self,
        stop: &'a AtomicBool,
        stop_at: Option<u64>,
        cut_after: Option<u64>,
    ) -> Seams<'a> {
        let mut n = 0;
        let store = &self.s.store;
        Seams {
            store,
            system: store,
            clock: &self.clock,
            stop,
            reserve: None,
            progress: Box::new(|_| {}),
            checkpoint: Some(Box::new(move |_: &str| {
                n += 1;
                if Some(n) == stop_at {
                    stop.store(true, Ordering::SeqCst);
                }
                cut_after.is_some_and(|c| store.effect_count() >= c)
            })),
        }
    }

    /// One timer tick: `upgrade` to the newest revision, maybe cut or stopped on the way.
    fn tick(&mut self) {
        let cut = self.chance(15).then(|| 1 + self.rng.below(40));
        let stop_at = (cut.is_none() && self.chance(8)).then(|| 1 + self.rng.below(40));
        let start = self.s.store.effect_count();
        if let Some(k) = cut {
            self.s.store.crash_after_effect(start + k);
        }
        let stop = AtomicBool::new(false);
        let req = request(self.target_drv.as_ref().unwrap(), &self.journal);
        let mut journal = JournalFile::new(self.journal.clone());
        let cut_after = cut.map(|k| start + k);
        let got = stepwise::engine::upgrade(
            &req,
            &mut self.seams(&stop, stop_at, cut_after),
            &mut journal,
        );
        drop(journal);
        self.f.ticks += 1;
        if stop.load(Ordering::SeqCst) {
            self.f.stops += 1;
        }
        let was_cut = cut.is_some_and(|k| self.s.store.effect_count() >= start + k);
        if was_cut {
            self.f.cuts += 1;
            self.s.store.revive();
            self.check("power cut");
            if self.chance(50) {
                self.boot();
            }
            return;
        }
        self.s.store.revive();
        match got {
            Ok(UpgradeOutcome::Ran(RunEnd::Stopped { why })) if why.contains("rebooting") => {
                self.f.run_reboots += 1;
                self.boot();
            }
            Ok(UpgradeOutcome::Ran(RunEnd::Stopped { why })) => {
                self.f.exit_3 += 1;
                let no_room = why.contains("no re-plan fits");
                self.last_stop = why;
                if no_room {
                    self.boot_if_an_older_generation_is_booted(false);
                }
            }
            Ok(_) => {}
            Err(e @ stepwise::error::Error::NoRoom { .. }) => {
                self.f.exit_3 += 1;
                self.last_stop = e.to_string();
                self.boot_if_an_older_generation_is_booted(true);
            }
            Err(e @ stepwise::error::Error::Stopped { .. }) => {
                self.f.exit_3 += 1;
                self.last_stop = e.to_string();
            }
            Err(e) => panic!("hour {}: upgrade: {e}", self.f.hours),
        }
        self.check("tick");
    }

    /// What an operator does when no plan fits (a new run's, or a re-plan mid-run) while a
    /// generation older than the running one is booted: reboot, so that what only the booted
    /// system pins can go (the module's GC before the next tick deletes it). The planner plans
    /// reboots only into a step it made, not into the generation a run starts or stands at.
    fn boot_if_an_older_generation_is_booted(&mut self, new_run: bool) {
        let booted = self
            .s
            .store
            .read_system_link(Path::new(common::model::BOOTED))
            .unwrap();
        if booted.is_some_and(|b| b != running(&self.s)) {
            if new_run {
                self.f.operator_boots_new_run += 1;
            } else {
                self.f.operator_boots += 1;
            }
            self.boot_as(Boot::Operator);
        }
    }

    /// The machine boots (its boot default), and `stepwise-resume.service` runs; a run that
    /// reboots again boots again.
    fn boot(&mut self) {
        self.boot_as(Boot::Planned)
    }

    fn boot_as(&mut self, why_booted: Boot) {
        for _ in 0..10 {
            self.s.store.reboot(&["reboot".into()]).unwrap();
            self.f.boots += 1;
            self.check("boot");
            let stop = AtomicBool::new(false);
            let mut journal = JournalFile::new(self.journal.clone());
            let got = stepwise::engine::resume(
                continue_req(false),
                &mut self.seams(&stop, None, None),
                &mut journal,
            );
            drop(journal);
            self.check("resume at boot");
            match got {
                Ok(ContinueOutcome::Ran(RunEnd::Stopped { why })) if why.contains("rebooting") => {
                    self.f.run_reboots += 1;
                }
                Ok(ContinueOutcome::Ran(RunEnd::Stopped { why }))
                    if (self.faulted || why_booted == Boot::Operator)
                        && why.contains("no re-plan fits") =>
                {
                    // The disk is fuller this hour, or what the old boot pinned is dead but
                    // still on disk until the module's GC before the next tick: the run waits
                    // at a complete generation.
                    self.f.boot_stops += 1;
                    self.last_stop = why;
                    return;
                }
                Ok(ContinueOutcome::Ran(RunEnd::Stopped { why })) => {
                    panic!("hour {}: the boot's resume stopped: {why}", self.f.hours)
                }
                Ok(_) => return,
                Err(e) => panic!("hour {}: the boot's resume failed: {e}", self.f.hours),
            }
        }
        panic!("hour {}: ten reboots in a row", self.f.hours);
    }

    fn hour(&mut self) {
        self.f.hours += 1;
        self.clock.0.set(((self.f.hours % 24) * 60) as u16);
        gc(&self.s.store);
        self.check("gc");
        self.maybe_publish();
        // The timer evaluates the configuration again (after the GC, before any fault).
        self.target_drv = Some(self.s.evaluate());
        let fault = self.chance(4);
        self.faulted = fault;
        if fault {
            self.f.capacity_faults += 1;
            self.s.store.set_used_elsewhere(self.s.largest());
        }
        self.tick();
        if fault {
            self.s.store.set_used_elsewhere(0);
            self.faulted = false;
        }
        if running(&self.s) == self.target_out {
            if self.published_at != u64::MAX {
                self.f.reached += 1;
                self.published_at = u64::MAX;
            }
        } else {
            assert!(
                self.f.hours - self.published_at < PATIENCE,
                "hour {}: revision {} not reached after {PATIENCE} hours ({:?}); last stop: {}; running {}, booted {:?}, target {}, used {} of {}",
                self.f.hours,
                self.f.revisions,
                self.f,
                self.last_stop,
                running(&self.s),
                self.s.store.read_system_link(Path::new(common::model::BOOTED)).unwrap(),
                self.target_out,
                self.s.store.used() / KIB,
                self.capacity / KIB
            );
        }
    }
}

#[test]
fn a_model_year_of_hourly_upgrades_with_faults() {
    let hours = env_u64("STEPWISE_SOAK_MODEL_HOURS").unwrap_or(DEFAULT_HOURS);
    let seed = env_u64("STEPWISE_SOAK_SEED").unwrap_or(DEFAULT_SEED);
    eprintln!("model soak: seed {seed:#x}, {hours} hours (STEPWISE_SOAK_SEED replays)");
    let dir = match std::fs::metadata("/dev/shm") {
        Ok(m) if m.is_dir() => tempfile::tempdir_in("/dev/shm").unwrap(),
        _ => tempfile::tempdir().unwrap(),
    };
    let mut soak = Soak::new(seed, dir.path());
    let started = std::time::Instant::now();
    for _ in 0..hours {
        soak.hour();
    }
    // The last revision, without new faults.
    for _ in 0..PATIENCE {
        if running(&soak.s) == soak.target_out {
            break;
        }
        soak.f.hours += 1;
        gc(&soak.s.store);
        let stop = AtomicBool::new(false);
        let req = request(&soak.s.evaluate(), &soak.journal);
        let got = stepwise::engine::upgrade(
            &req,
            &mut soak.seams(&stop, None, None),
            &mut JournalFile::new(soak.journal.clone()),
        );
        if matches!(&got, Ok(UpgradeOutcome::Ran(RunEnd::Stopped { why })) if why.contains("rebooting"))
        {
            soak.boot();
        }
        soak.check("last tick");
    }
    if running(&soak.s) == soak.target_out && soak.published_at != u64::MAX {
        soak.f.reached += 1;
    }
    let f = &soak.f;
    assert_eq!(
        running(&soak.s),
        soak.target_out,
        "the last revision: {f:?}"
    );
    assert_eq!(f.reached, f.revisions, "every revision reached: {f:?}");
    assert_eq!(
        f.operator_boots, 0,
        "a re-plan that does not fit reboots by itself: {f:?}"
    );
    let generations = soak
        .s
        .store
        .generations(Path::new(common::model::PROFILE))
        .unwrap()
        .len();
    eprintln!(
        "profile generations at the end: {generations}; valid paths: {}",
        soak.s.store.all_valid().len()
    );
    let journal = Journal::open_read_only(&soak.journal).unwrap();
    let runs = journal.runs().len() as u64;
    let bytes = std::fs::metadata(&soak.journal).unwrap().len();
    eprintln!(
        "model soak (seed {seed:#x}): {} hours, {} revisions all reached, {} timer ticks, {} power cuts, \
         {} boots ({} reboots by runs; by the operator: {} after a re-plan did not fit, {} after a new run's plan did not fit), {} stops, {} capacity faults, {} exit-3 ticks, activations exiting 4: {}, 100: {}; \
         disk {} KiB; journal {} KiB with {runs} runs retained ({} KiB per run) in {:.1} s",
        f.hours,
        f.revisions,
        f.ticks,
        f.cuts,
        f.boots,
        f.run_reboots,
        f.operator_boots,
        f.operator_boots_new_run,
        f.stops,
        f.capacity_faults,
        f.exit_3,
        f.exit_4,
        f.exit_100,
        soak.capacity / KIB,
        bytes / 1024,
        bytes as f64 / runs.max(1) as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
}
