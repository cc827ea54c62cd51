//! `upgrade` before its run: the target and G0 checked, the plan made (leftovers of an earlier
//! attempt deleted first when they take room), the steps rewritten, the strategy chosen, the
//! non-vital packages probed. The result is the run's header, written as the journal's
//! `runStarted`. Nothing here writes the journal; on a refusal nothing changed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::plan_inputs::{gather, SystemLinks};
use super::preflight;
use super::steps::{PlannerSource, StepMasks};
use crate::drv::StorePath;
use crate::effects::journal::{
    human_bytes, Action, OnFailure, PlannedStep, RebootPolicy, RebootWindow, RunHeader, RunOptions,
    Strategy, Target,
};
use crate::effects::{Store, System};
use crate::error::Error;
use crate::plan::{BootPlan, KeepPrevious, PlanInput, PlanOptions, Planned};
use crate::transition::Chain;

/// Everything `upgrade` is asked to do.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// What the user asked for (recorded), and its toplevel `.drv` (resolved by the caller).
    pub target: Target,
    pub target_drv: StorePath,
    pub links: SystemLinks,
    pub action: Action,
    pub strategy: Strategy,
    pub on_failure: OnFailure,
    pub reboot: RebootPolicy,
    pub reboot_command: Vec<String>,
    pub non_vital: Vec<String>,
    pub together: Vec<Vec<String>>,
    /// Bytes of the reserve file; `None`: the default share of the disk.
    pub reserve: Option<u64>,
    pub reboot_window: Option<RebootWindow>,
    /// Options added after journal format 2 (recorded in the run's header).
    pub options: RunOptions,
    /// The boot partition to check for room, when it is its own filesystem.
    pub boot_dir: Option<PathBuf>,
    /// The run's GC roots, and the stub probe's scratch directory.
    pub roots_dir: PathBuf,
    pub probe_dir: PathBuf,
    /// The journal's name, for messages.
    pub journal: PathBuf,
    /// For an unfinished format-1 run continued first: the masks format 1 kept beside it.
    pub legacy_masks: Option<StepMasks>,
}

impl UpgradeRequest {
    pub fn journal_name(&self) -> &str {
        self.journal.to_str().unwrap_or("the journal")
    }
}

/// What preflight found.
#[derive(Debug)]
pub enum Prepared {
    /// The system already runs the target.
    AlreadyThere {
        target_out: StorePath,
    },
    Run(Box<PreparedRun>),
}

/// A run ready to start.
#[derive(Debug)]
pub struct PreparedRun {
    pub header: RunHeader,
    pub chain: Chain,
    /// Why that chain, for the journal and the user.
    pub why: String,
    pub masks: StepMasks,
    pub boot: Option<BootPlan>,
    /// `--keep-previous`: whether G0 stays a generation, and why (`None`: not asked).
    pub keep: Option<KeepPrevious>,
}

impl PreparedRun {
    /// The lines announcing the run.
    pub fn announcement(&self) -> String {
        let target = &self.header.plan.last().map(|s| s.toplevel_out.to_string());
        let mut s = format!(
            "upgrading to {} ({})",
            target.as_deref().unwrap_or("the target"),
            self.why
        );
        if let (Chain::Steps, Some(b)) = (self.chain, &self.boot) {
            let installs = if self.header.action == Action::Test {
                b.installs_with_test
            } else {
                b.installs
            };
            s.push_str(&format!(
                "\nboot loader: {installs} install(s), at most {} boot entr{} more than now{}",
                b.entries_added_max,
                if b.entries_added_max == 1 { "y" } else { "ies" },
                b.kernel_step
                    .map(|k| format!("; the kernel changes in step {k}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(k) = &self.keep {
            s.push('\n');
            s.push_str(&k.why);
        }
        s
    }
}

/// Check and plan an upgrade; `note` hears the lines for people on the way. Its housekeeping
/// (leftovers, the stub probe) is not journaled: `prepare_journaled` is what `upgrade` runs.
pub fn prepare(
    req: &UpgradeRequest,
    store: &dyn Store,
    system: &dyn System,
    note: &mut dyn FnMut(&str),
) -> Result<Prepared, Error> {
    prepare_counting_reserve(req, store, system, 0, note)
}

/// `prepare`, with a reserve file already holding `held_reserve` bytes on the store's filesystem
/// (made by the last run): the plan counts the reserve once, not in the used bytes as well.
pub fn prepare_counting_reserve(
    req: &UpgradeRequest,
    store: &dyn Store,
    system: &dyn System,
    held_reserve: u64,
    note: &mut dyn FnMut(&str),
) -> Result<Prepared, Error> {
    prepare_journaled(
        req,
        store,
        system,
        held_reserve,
        note,
        &mut super::housekeeping::Unjournaled,
    )
}

/// `prepare_counting_reserve`, journaling its housekeeping through `hk`.
pub fn prepare_journaled(
    req: &UpgradeRequest,
    store: &dyn Store,
    system: &dyn System,
    held_reserve: u64,
    note: &mut dyn FnMut(&str),
    hk: &mut dyn super::housekeeping::Housekeeping,
) -> Result<Prepared, Error> {
    let target_out = target_out(store, &req.target_drv)?;
    // A stub probe killed earlier left its root: scratch only, but it pins G0's packages, which
    // the plan would then count as kept by another root.
    for link in store.roots(&req.probe_dir)?.into_keys() {
        store.remove_root(&link)?;
    }
    // G0: the running generation, complete, with a deriver we can keep for an exact unwind.
    let Some(g0) = system.read_system_link(&req.links.current_system)? else {
        return Err(Error::bad_input(
            format!(
                "{} does not point at a system",
                req.links.current_system.display()
            ),
            "pass --current-system LINK (the running system's link)",
        ));
    };
    if g0 == target_out {
        // Not an error: the hourly timer meets this every hour there is no update.
        return Ok(Prepared::AlreadyThere { target_out });
    }
    preflight::test_action_keeps_a_bootable_default(
        system,
        req.action,
        req.reboot,
        &req.links.booted_system,
        &g0,
    )?;
    let (g0_closure, g0_drv) = preflight::g0_closure_and_deriver(store, &g0)?;
    let starting = StartingGeneration {
        toplevel: &g0,
        closure: &g0_closure,
    };
    let (input, planned) =
        plan_without_leftovers(req, store, system, starting, held_reserve, note, hk)?;
    let (plan, masks) = steps_of(req, store, &planned, &input.target.local, &target_out, &g0)?;
    let (chain, why) = choose(req.strategy, &planned, plan.len())?;
    let keep = req
        .options
        .keep_previous
        .then(|| crate::plan::keep_previous(&planned.frame, chain));
    // Non-vital packages go out only if every glue derivation builds without them.
    if chain == Chain::Steps {
        let names = crate::plan::probe::stubbed_names(&planned);
        if !names.is_empty() {
            note(&format!(
                "checking that {} can be taken out: building the system's glue without {}",
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" }
            ));
            preflight::check_stubs(
                store,
                &input,
                &planned,
                &names,
                &req.probe_dir,
                &g0_closure,
                hk,
            )?;
        }
    }
    let mut header = header_of(req, store, &input, (g0, g0_drv), plan);
    // What was asked, with keepPrevious as far as the plan has room for it.
    header.options.keep_previous = keep.as_ref().is_some_and(|k| k.kept);
    Ok(Prepared::Run(Box::new(PreparedRun {
        header,
        chain,
        why,
        masks,
        boot: planned.boot.clone(),
        keep,
    })))
}

/// The run's header: what was asked, G0 and its deriver, the planned steps, and the local
/// derivations the plan read.
fn header_of(
    req: &UpgradeRequest,
    store: &dyn Store,
    input: &PlanInput,
    (g0, g0_drv): (StorePath, StorePath),
    plan: Vec<PlannedStep>,
) -> RunHeader {
    RunHeader {
        stepwise_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        store_dir: store.store_dir().as_str().to_string(),
        target: req.target.clone(),
        target_drv: req.target_drv.clone(),
        profile: req.links.profile.clone(),
        current_system: req.links.current_system.clone(),
        booted_system: req.links.booted_system.clone(),
        action: req.action,
        strategy: req.strategy,
        on_failure: req.on_failure,
        reboot: req.reboot,
        reboot_command: req.reboot_command.clone(),
        non_vital: req.non_vital.clone(),
        together: req.together.clone(),
        reserve: input.reserve,
        g0_toplevel: g0,
        g0_drv: Some(g0_drv),
        plan,
        reboot_window: req.reboot_window,
        options: req.options,
        local_derivations: input.target.local.iter().cloned().collect(),
    }
}

/// The target's `out` path, from its `.drv`.
pub(crate) fn target_out(store: &dyn Store, target_drv: &StorePath) -> Result<StorePath, Error> {
    let parsed =
        crate::drv::parse(&store.read_file(target_drv)?, store.store_dir()).map_err(|e| {
            Error::bad_input(
                format!("{target_drv}: not a derivation: {e}"),
                "pass the toplevel .drv of a NixOS system; if the file is damaged, \
                 `nix-store --verify --check-contents --repair` restores it",
            )
        })?;
    parsed
        .outputs
        .get("out")
        .and_then(|o| o.path.clone())
        .ok_or_else(|| {
            Error::bad_input(
                format!("{target_drv} has no `out` output with a known path"),
                "pass the toplevel .drv of a NixOS system",
            )
        })
}

/// G0 as preflight found it: the running toplevel and its closure.
struct StartingGeneration<'a> {
    toplevel: &'a StorePath,
    closure: &'a BTreeSet<StorePath>,
}

/// The plan, made once before anything is deleted (bad names such as `--non-vital typo` stop
/// here), /boot checked, then unrooted leftovers of an earlier attempt deleted and the plan made
/// again when there were any.
fn plan_without_leftovers(
    req: &UpgradeRequest,
    store: &dyn Store,
    system: &dyn System,
    g0: StartingGeneration<'_>,
    held_reserve: u64,
    note: &mut dyn FnMut(&str),
    hk: &mut dyn super::housekeeping::Housekeeping,
) -> Result<(PlanInput, Planned), Error> {
    let options = PlanOptions {
        non_vital: req.non_vital.clone(),
        together: req.together.clone(),
        reboot_allowed: req.reboot == RebootPolicy::WhenNeeded,
        merge_headroom_percent: 0,
    };
    let plan_once = |options: PlanOptions| -> Result<(PlanInput, Planned), Error> {
        let mut input = gather(
            store,
            system,
            &req.target_drv,
            &req.links,
            req.reserve,
            options,
        )?;
        input.count_held_reserve(held_reserve);
        let planned = crate::plan::plan(&input)?;
        Ok((input, planned))
    };
    let (input, planned) = plan_once(options.clone())?;
    // /boot, when it is its own filesystem: room for the kernels and initrds the run adds,
    // checked before anything changes (deleting leftovers below included).
    if let Some(dir) = &req.boot_dir {
        preflight::check_boot_room(
            store,
            dir,
            &req.links.profile,
            g0.toplevel,
            planned.boot.as_ref(),
            note,
        )?;
    }
    let (leftovers, bytes) = preflight::leftovers(store, &input, g0.closure)?;
    if leftovers.is_empty() {
        return Ok((input, planned));
    }
    super::housekeeping::delete_leftovers(store, hk, leftovers.clone(), bytes)?;
    note(&format!(
        "removed {} unrooted path(s) ({}) left by an earlier attempt",
        leftovers.len(),
        human_bytes(bytes)
    ));
    plan_once(options)
}

/// A planned step as the journal records it: number `index` of the run's plan, built as the
/// toplevel `(drv, out)`, with its mask and reboot point.
pub(crate) fn recorded_step(
    st: &crate::plan::Step,
    index: u32,
    (drv, out): (StorePath, StorePath),
) -> PlannedStep {
    PlannedStep {
        index,
        toplevel_drv: drv,
        toplevel_out: out,
        units: st.upgraded.clone(),
        adds: st.space.adds,
        frees: st.space.frees,
        mask: Some(st.mask.clone()),
        reboot_after: Some(st.reboot_after),
    }
}

/// The planned steps as the header records them, and their masks. Without a stepwise plan
/// (`--strategy direct`, or nothing fits) the target is the only step.
fn steps_of(
    req: &UpgradeRequest,
    store: &dyn Store,
    planned: &Planned,
    local: &BTreeSet<StorePath>,
    target_out: &StorePath,
    g0: &StorePath,
) -> Result<(Vec<PlannedStep>, StepMasks), Error> {
    let mut masks = StepMasks {
        target_drv: req.target_drv.clone(),
        g0_toplevel: g0.clone(),
        masks: Default::default(),
        reboot_after: 0,
        local: Some(local.clone()),
    };
    let mut plan = Vec::new();
    if let (Ok(p), false) = (&planned.outcome, req.strategy == Strategy::Direct) {
        for st in &p.steps {
            masks.masks.insert(st.index as u32, st.mask.clone());
            if st.reboot_after && st.index < 64 {
                masks.reboot_after |= 1 << st.index;
            }
        }
        let tops = PlannerSource::new(store, masks.clone())
            .toplevels()
            .map_err(|e| {
                Error::bad_input(
                    format!("rewriting the steps' derivations: {e}"),
                    "report this",
                )
            })?;
        for (st, top) in p.steps.iter().zip(tops) {
            plan.push(recorded_step(st, st.index as u32, top));
        }
    }
    if plan.last().map(|s| &s.toplevel_drv) != Some(&req.target_drv) {
        let frame = &planned.frame;
        masks.masks = [(1, Default::default())].into();
        masks.reboot_after = 0;
        plan = vec![PlannedStep {
            index: 1,
            toplevel_drv: req.target_drv.clone(),
            toplevel_out: target_out.clone(),
            units: vec![],
            adds: frame.plain_peak.saturating_sub(frame.used),
            frees: 0,
            mask: Some(Default::default()),
            reboot_after: Some(false),
        }];
    }
    Ok((plan, masks))
}

/// The chain the run takes, and why: the one place the strategy is chosen.
fn choose(strategy: Strategy, planned: &Planned, steps: usize) -> Result<(Chain, String), Error> {
    let frame = &planned.frame;
    let stepwise_ok = planned.outcome.is_ok();
    Ok(match strategy {
        Strategy::Direct => (Chain::Direct, "--strategy direct".to_string()),
        Strategy::Stepwise if stepwise_ok => (
            Chain::Steps,
            format!("--strategy stepwise: {steps} step(s)"),
        ),
        Strategy::Auto if frame.plain_fits => (
            Chain::Direct,
            format!(
                "the plain upgrade fits: peak {} of a ceiling of {}",
                human_bytes(frame.plain_peak),
                human_bytes(frame.ceiling)
            ),
        ),
        Strategy::Auto if stepwise_ok => (
            Chain::Steps,
            format!(
                "the plain upgrade needs a peak of {} above the ceiling of {}: {steps} steps instead",
                human_bytes(frame.plain_peak),
                human_bytes(frame.ceiling),
            ),
        ),
        Strategy::Auto | Strategy::Stepwise => {
            return Err(match &planned.outcome {
                Err(sf) => preflight::no_room(sf),
                Ok(_) => Error::NoRoom {
                    what: "no plan".into(),
                    help: vec!["`stepwise plan` shows the details".into()],
                },
            })
        }
    })
}
