//! Gathering what the planner needs through the `Store` and `System` traits: the target's
//! derivations, G0's closure and derivers, sizes (local, from the substituters, or estimated),
//! the live and booted sets, and the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::drv::hash::SourceError;
use crate::drv::{parse, Derivation, DrvSource, StorePath};
use crate::effects::store::{PathInfo, Store, System};
use crate::error::Error;
use crate::plan::names::PackageName;
use crate::plan::units::{is_glue, name_of_output, G0Path, G0Side, Substitutable, TargetGraph};
use crate::plan::{PathFacts, PlanInput, PlanOptions, SizeSource};

/// Derivations read from the store.
pub struct StoreDrvs<'a>(pub &'a dyn Store);

impl DrvSource for StoreDrvs<'_> {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError> {
        let bytes = self.0.read_file(path)?;
        Ok(parse(&bytes, self.0.store_dir())?)
    }
}

/// What the store's substituters have (a narinfo), asked in one batch: what tells the target's
/// local derivations (never on a cache) from its packages.
pub struct StoreSubstitutes<'a>(pub &'a dyn Store);

impl Substitutable for StoreSubstitutes<'_> {
    fn substitutable(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, String> {
        self.0
            .substitute_infos(paths)
            .map(|m| m.into_keys().collect())
            .map_err(|e| e.to_string())
    }
}

/// The target's graph, local derivations decided by the substituters: the planner and every
/// later materialisation of the steps read it the same way.
pub fn read_target(
    store: &dyn Store,
    target: &StorePath,
) -> Result<TargetGraph, crate::plan::units::UnitsError> {
    TargetGraph::read_with(
        store.store_dir().clone(),
        target.clone(),
        &StoreDrvs(store),
        Some(&StoreSubstitutes(store)),
    )
}

/// The target's graph with the local derivations a run recorded when it was planned: the
/// substituters are not asked again (a resume at boot may have no network, and a cache that
/// changed since must not change the steps' derivations).
pub fn read_target_recorded(
    store: &dyn Store,
    target: &StorePath,
    local: &BTreeSet<StorePath>,
) -> Result<TargetGraph, crate::plan::units::UnitsError> {
    let recorded =
        RecordedLocals::new(store, local).map_err(|why| crate::plan::units::UnitsError::Read {
            path: store.store_dir().display(target),
            why,
        })?;
    TargetGraph::read_with(
        store.store_dir().clone(),
        target.clone(),
        &StoreDrvs(store),
        Some(&recorded),
    )
}

/// Substituters as a run recorded them: every output is there but those of the recorded
/// local derivations.
struct RecordedLocals {
    local_outputs: BTreeSet<StorePath>,
}

impl RecordedLocals {
    fn new(store: &dyn Store, local: &BTreeSet<StorePath>) -> Result<Self, String> {
        let mut local_outputs = BTreeSet::new();
        for drv in local {
            let parsed = StoreDrvs(store).read(drv).map_err(|e| e.to_string())?;
            local_outputs.extend(parsed.outputs.values().filter_map(|o| o.path.clone()));
        }
        Ok(RecordedLocals { local_outputs })
    }
}

impl Substitutable for RecordedLocals {
    fn substitutable(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, String> {
        Ok(paths
            .iter()
            .filter(|p| !self.local_outputs.contains(p))
            .cloned()
            .collect())
    }
}

/// The system being upgraded.
#[derive(Debug, Clone)]
pub struct SystemLinks {
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
}

/// Gather the planner's input for `target` (a toplevel `.drv`).
pub fn gather(
    store: &dyn Store,
    system: &dyn System,
    target: &StorePath,
    links: &SystemLinks,
    reserve: Option<u64>,
    options: PlanOptions,
) -> Result<PlanInput, Error> {
    let g0_top = system
        .read_system_link(&links.current_system)?
        .ok_or_else(|| {
            Error::bad_input(
                format!(
                    "{} does not point at a system in the store",
                    links.current_system.display()
                ),
                "pass --current-system with the link to the running system",
            )
        })?;
    let what = Gathering {
        target,
        links,
        g0_top: &g0_top,
        reserve,
        recorded_local: None,
    };
    gather_from(store, system, &what, options)
}

/// What to plan from where: the target, the system's links, the generation to plan from, and
/// for a re-plan the local derivations its run recorded.
pub struct Gathering<'a> {
    pub target: &'a StorePath,
    pub links: &'a SystemLinks,
    /// The running system, or for a re-plan the step the run stands at: what is still to move
    /// is what it lacks.
    pub g0_top: &'a StorePath,
    /// Bytes of the reserve; `None`: the default share of the disk.
    pub reserve: Option<u64>,
    /// A re-plan passes its run's local derivations, so that the new steps are derived from the
    /// graph the run planned with; a new run asks the substituters (`None`).
    pub recorded_local: Option<&'a BTreeSet<StorePath>>,
}

/// Gather the planner's input for `what`.
pub fn gather_from(
    store: &dyn Store,
    system: &dyn System,
    what: &Gathering,
    options: PlanOptions,
) -> Result<PlanInput, Error> {
    let graph = read_graph(store, what.target, what.recorded_local)?;
    let g0_infos = store.closure_infos(std::slice::from_ref(what.g0_top))?;
    let g0 = g0_side(store, what.g0_top, &g0_infos)?;
    let mut facts: BTreeMap<StorePath, PathFacts> = g0_infos
        .iter()
        .map(|(p, i)| (p.clone(), local_facts(i)))
        .collect();
    close_target_facts(store, &graph, &g0_infos, &mut facts)?;
    let booted_top = system.read_system_link(&what.links.booted_system)?;
    let booted: BTreeSet<StorePath> = match &booted_top {
        Some(b) => store.closure(std::slice::from_ref(b))?,
        None => BTreeSet::new(),
    };
    let generations = system.generations(&what.links.profile)?;
    let profile = crate::plan::ProfileFacts {
        generations: generations.len(),
        g0_generations: generations
            .iter()
            .filter(|g| &g.toplevel == what.g0_top)
            .count(),
    };
    let keep = kept_by_other_roots(store, what.g0_top, booted_top.as_ref(), &generations)?;
    let space = store.space()?;
    let on_disk: Vec<(StorePath, u64)> = facts
        .iter()
        .filter(|(_, f)| f.present)
        .map(|(p, f)| (p.clone(), f.size))
        .collect();
    let disk = store.disk_cost(&on_disk)?;
    Ok(PlanInput {
        target: graph,
        g0,
        facts,
        keep,
        booted,
        used: space.total.saturating_sub(space.free),
        free: space.free,
        reserve: what
            .reserve
            .unwrap_or_else(|| crate::effects::fs::default_reserve_size(space.total)),
        options,
        profile,
        disk,
    })
}

/// The target's graph: with the local derivations a run recorded, or as the substituters say.
fn read_graph(
    store: &dyn Store,
    target: &StorePath,
    recorded_local: Option<&BTreeSet<StorePath>>,
) -> Result<TargetGraph, Error> {
    match recorded_local {
        Some(local) => read_target_recorded(store, target, local),
        None => read_target(store, target),
    }
    .map_err(|e| {
        Error::bad_input(
            format!(
                "reading the target {}: {e}",
                store.store_dir().display(target)
            ),
            "give the toplevel .drv of a NixOS system (instantiated in this store)",
        )
    })
}

/// G0's paths with their references and derivers, and which of those derivers are glue.
fn g0_side(
    store: &dyn Store,
    g0_top: &StorePath,
    g0_infos: &BTreeMap<StorePath, PathInfo>,
) -> Result<G0Side, Error> {
    let derivers: Vec<StorePath> = g0_infos
        .values()
        .filter_map(|i| i.deriver.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut deriver_glue = BTreeMap::new();
    for d in store.valid_paths(&derivers)? {
        // A deriver that cannot be read or parsed is left to the name heuristic.
        if let Ok(drv) = StoreDrvs(store).read(&d) {
            deriver_glue.insert(d, is_glue(&drv));
        }
    }
    let paths = g0_infos
        .iter()
        .map(|(p, i)| {
            let path = G0Path {
                references: i.references.clone(),
                deriver: i.deriver.clone(),
            };
            (p.clone(), path)
        })
        .collect();
    Ok(G0Side {
        toplevel: Some(g0_top.clone()),
        paths,
        deriver_glue,
    })
}

/// The facts of a path in the store.
fn local_facts(i: &PathInfo) -> PathFacts {
    PathFacts {
        size: i.nar_size,
        references: i.references.clone(),
        present: true,
        source: SizeSource::Local,
    }
}

/// Add the facts of the target's packages and the glue's sources, closed over references:
/// local paths in one query, the rest from the substituters, level by level; what nobody has
/// must be built and is estimated from G0's package of the same name.
fn close_target_facts(
    store: &dyn Store,
    graph: &TargetGraph,
    g0_infos: &BTreeMap<StorePath, PathInfo>,
    facts: &mut BTreeMap<StorePath, PathFacts>,
) -> Result<(), Error> {
    let estimate = Estimates::new(graph, g0_infos);
    let unit_outputs = graph.unit_outputs();
    let srcs = graph
        .glue
        .iter()
        .flat_map(|d| graph.drvs[d].input_srcs.iter().cloned());
    let mut todo: Vec<StorePath> = unit_outputs
        .values()
        .flat_map(|m| m.values().cloned())
        .chain(srcs)
        .filter(|p| !facts.contains_key(p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    while !todo.is_empty() {
        let valid: Vec<StorePath> = store.valid_paths(&todo)?.into_iter().collect();
        for (p, i) in store.closure_infos(&valid)? {
            facts.entry(p).or_insert_with(|| local_facts(&i));
        }
        let missing: Vec<StorePath> = todo
            .iter()
            .filter(|p| !facts.contains_key(*p))
            .cloned()
            .collect();
        let subs = store.substitute_infos(&missing)?;
        let mut next = BTreeSet::new();
        for p in missing {
            let f = match subs.get(&p) {
                Some(s) => PathFacts {
                    size: s.nar_size,
                    references: s.references.clone(),
                    present: false,
                    source: SizeSource::Cache,
                },
                None => estimate.of(&p),
            };
            next.extend(
                f.references
                    .iter()
                    .filter(|r| !facts.contains_key(*r) && *r != &p)
                    .cloned(),
            );
            facts.insert(p, f);
        }
        todo = next
            .into_iter()
            .filter(|p| !facts.contains_key(p))
            .collect();
    }
    Ok(())
}

/// Sizes of paths nobody has (built locally): G0's package of the same name and output.
struct Estimates {
    g0_sizes: BTreeMap<(String, String), u64>,
    names: BTreeMap<StorePath, PackageName>,
}

impl Estimates {
    fn new(graph: &TargetGraph, g0_infos: &BTreeMap<StorePath, PathInfo>) -> Self {
        let g0_sizes = g0_infos
            .iter()
            .map(|(p, i)| {
                let n = name_of_output(p, i.deriver.as_ref());
                ((n.pname, n.output), i.nar_size)
            })
            .collect();
        let mut names = BTreeMap::new();
        for (drv, outs) in &graph.unit_outputs() {
            let dn = drv.derivation_name().unwrap_or(drv.name());
            for (o, p) in outs {
                names.insert(p.clone(), PackageName::from_drv(dn, o));
            }
        }
        Estimates { g0_sizes, names }
    }

    fn of(&self, p: &StorePath) -> PathFacts {
        let n = self
            .names
            .get(p)
            .cloned()
            .unwrap_or_else(|| PackageName::from_path_name(p.name()));
        PathFacts {
            size: self
                .g0_sizes
                .get(&(n.pname, n.output))
                .copied()
                .unwrap_or(0),
            references: BTreeSet::new(),
            present: false,
            source: SizeSource::Estimate,
        }
    }
}

/// Everything a root other than the running and booted systems keeps alive: the profile's other
/// generations, user profiles, other GC roots, runtime roots. A G0 path among them stays when G0
/// goes (it is counted as kept, not freed); the booted system's own pins are the `booted` set.
fn kept_by_other_roots(
    store: &dyn Store,
    g0_top: &StorePath,
    booted_top: Option<&StorePath>,
    generations: &[crate::effects::store::Generation],
) -> Result<BTreeSet<StorePath>, Error> {
    // The links to the running and booted systems (current-system, booted-system, G0's own
    // generations) are not "other" roots; the profile's other generations are.
    let mut roots: BTreeSet<StorePath> = store
        .gc_roots()?
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p != g0_top && Some(p) != booted_top)
        .collect();
    roots.extend(
        generations
            .iter()
            .map(|g| g.toplevel.clone())
            .filter(|t| t != g0_top),
    );
    let roots: Vec<StorePath> = store
        .valid_paths(&roots.into_iter().collect::<Vec<_>>())?
        .into_iter()
        .collect();
    Ok(store.closure(&roots)?)
}

impl From<crate::plan::PlanError> for Error {
    fn from(e: crate::plan::PlanError) -> Self {
        Error::bad_input(
            e.to_string(),
            "use the package names `stepwise plan` shows (the pname, without version)",
        )
    }
}
