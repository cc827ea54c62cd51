//! Re-planning a chain whose step ran out of space (the machine's `Replanning` phase): the disk
//! measured again, the planner run from the generation the run stands at (its closure as G0: what
//! is still to move is what it lacks) with the cost per byte the failure taught, and the new steps
//! journaled (`replanned`) before anything else happens. When nothing fits while another system
//! is booted, it reboots into the generation it stands at first (if it may; a machine that booted
//! it already is not rebooted again), collects what the old boot pinned and re-plans; otherwise
//! the run stops at that complete generation and `resume` re-plans with whatever room there is
//! then.

use super::super::plan_inputs::{gather_from, Gathering, SystemLinks};
use super::super::preflight::no_room as shortfall_why;
use super::super::upgrade::recorded_step;
use super::*;
use crate::effects::journal::{human_bytes, PlannedStep, RebootPolicy};
use crate::plan::replan::retries_without_more_room;
use crate::plan::{Mask, PlanOptions};

/// What a re-plan found.
pub(super) enum Replan {
    /// The new chain (journaled), and the event that tells the machine.
    Fits(Box<Spec>, Event),
    /// Nothing fits from where the run stands: why, for the user (the run stops, exit 3).
    NothingFits(String),
    /// Nothing fits (why) while another system is booted: reboot into the generation the
    /// run stands at (this effect, [`RunState::reboot_to_replan`]) and re-plan after the boot.
    RebootFirst(Effect, String),
}

impl Executor<'_> {
    pub(super) fn replan(
        &mut self,
        spec: &Spec,
        state: &RunState,
        at: Gen,
    ) -> Result<Replan, EngineError> {
        let records = self.log.last_run();
        let cost_ppm = record::learnt_cost_ppm(&records);
        let here = spec.gen(state.chain, at).clone();
        let failed = record::last_ran_out(&records);
        let stop = |why: String| {
            let what = failed.map_or("a step ran out of space".into(), |(step, r)| {
                format!(
                    "step {step} ran out of space (estimated to add {}, had {} free)",
                    human_bytes(r.estimated),
                    human_bytes(r.free)
                )
            });
            Ok(Replan::NothingFits(format!(
                "{what} and no re-plan fits from {} ({}), where the system stays, complete: {why}. \
                 Free room on the store's filesystem, then `stepwise resume` plans the rest again; \
                 `stepwise unwind` walks back to G0",
                here.label, here.out
            )))
        };
        // Only a shortfall of room is what a reboot can help with.
        let reboot = self.reboot_to_make_room(spec, state, at, &here.out);
        let no_room = |why: String| match reboot {
            Some(e) => Ok(Replan::RebootFirst(e, why)),
            None => stop(why),
        };
        let mut input = match self.gather_here(spec, &here.out) {
            Ok(i) => i,
            Err(e) => return stop(format!("measuring the disk again failed: {e}")),
        };
        input.disk.learnt_ppm = cost_ppm;
        // The reserve on the store's filesystem is in the used bytes; the ceiling counts it.
        input.count_held_reserve(self.reserve.as_deref().map_or(0, |r| r.held()));
        let plan = match crate::plan::plan(&input).map(|p| p.outcome) {
            Ok(Ok(plan)) => plan,
            Ok(Err(shortfall)) => {
                return no_room(match shortfall_why(&shortfall) {
                    crate::error::Error::NoRoom { what, help } => std::iter::once(what)
                        .chain(help)
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                })
            }
            Err(e) => return stop(e.to_string()),
        };
        let masks: Vec<Mask> = plan.steps.iter().map(|s| s.mask.clone()).collect();
        let tops = match self.source.add_steps(&masks) {
            Ok(t) => t,
            Err(e) => return stop(format!("rewriting the new steps' derivations: {e}")),
        };
        if let Some((_, ran_out)) = failed {
            let failed_drv = spec.steps.get(at as usize).map(|g| &g.drv);
            let same = tops.first().map(|(drv, _)| drv) == failed_drv;
            if retries_without_more_room(same, ran_out, input.free) {
                return no_room(format!(
                    "the best plan tries the same step again, with {} free where it failed with {}",
                    human_bytes(input.free),
                    human_bytes(ran_out.free)
                ));
            }
        }
        let steps: Vec<PlannedStep> = plan
            .steps
            .iter()
            .zip(tops)
            .map(|(st, top)| recorded_step(st, at + st.index as u32, top))
            .collect();
        let new_spec = spec.replanned(at, &steps)?;
        self.append(Record::Replanned {
            at,
            cost_ppm,
            steps: steps.clone(),
        })?;
        (self.progress)(Progress::Info(&format!(
            "re-planned from {}: {} step(s) to the target (estimates × {:.2})",
            here.label,
            steps.len(),
            cost_ppm.max(crate::plan::disk::PPM) as f64 / 1e6
        )));
        let ev = Event::Replanned {
            at,
            steps: new_spec.steps.len() as Gen,
            reboot_after: new_spec.reboot_after,
        };
        Ok(Replan::Fits(Box::new(new_spec), ev))
    }

    /// The reboot into the generation the run stands at (`here`, generation `at`) while another
    /// system is booted: what that one pins may be what no re-plan finds room for. The run must
    /// be allowed to reboot (`--reboot when-needed`), and outside the reboot window the executor
    /// stops before it. When the machine has booted `here` already (a power cut's boot) but the
    /// run has not journaled booting it, the reboot is journaled as probed and only the collect
    /// of what the generation the run knew booted pinned runs, whatever the reboot policy.
    fn reboot_to_make_room(
        &self,
        spec: &Spec,
        state: &RunState,
        at: Gen,
        here: &StorePath,
    ) -> Option<Effect> {
        let e = state.reboot_to_replan()?;
        let booted = self
            .system
            .read_system_link(&spec.header.booted_system)
            .ok()
            .flatten()?;
        if &booted == here {
            (state.booted != at).then_some(e)
        } else {
            (spec.header.reboot == RebootPolicy::WhenNeeded).then_some(e)
        }
    }

    /// The planner's input from generation `here`, the disk measured now.
    fn gather_here(
        &self,
        spec: &Spec,
        here: &StorePath,
    ) -> Result<crate::plan::PlanInput, crate::error::Error> {
        let h = &spec.header;
        let links = SystemLinks {
            profile: h.profile.clone(),
            current_system: h.current_system.clone(),
            booted_system: h.booted_system.clone(),
        };
        let options = PlanOptions {
            non_vital: h.non_vital.clone(),
            together: h.together.clone(),
            reboot_allowed: h.reboot == RebootPolicy::WhenNeeded,
            merge_headroom_percent: 0,
        };
        let local: BTreeSet<StorePath> = h.local_derivations.iter().cloned().collect();
        let what = Gathering {
            target: &h.target_drv,
            links: &links,
            g0_top: here,
            reserve: Some(h.reserve),
            recorded_local: Some(&local),
        };
        gather_from(self.store, self.system, &what, options)
    }
}
