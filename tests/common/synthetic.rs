//! Synthetic NixOS-shaped systems for the planner's pure tests and its benchmark: units (packages
//! with real input-addressed derivations, some with a `man` output) over a DAG of dependencies,
//! glue (`system-path`, `etc`, a toplevel) whose output paths are computed as Nix would, and a G0
//! that is the same system at the old versions.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use stepwise::drv::{drv_path, Derivation, Hasher, Output, StoreDir, StorePath};
use stepwise::plan::units::{G0Path, G0Side, TargetGraph};
use stepwise::plan::{PathFacts, PlanInput, PlanOptions, ProfileFacts, SizeSource};

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Log-uniform size between 4 KiB and 64 MiB.
    pub fn size(&mut self) -> u64 {
        let e = 12.0 + (self.next() % 10_000) as f64 / 10_000.0 * 14.0;
        2f64.powf(e) as u64
    }
}

pub fn store_dir() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

/// A store path with a hash made from `seed`.
pub fn fake_path(seed: &str, name: &str) -> StorePath {
    let h = Sha256::digest(seed.as_bytes());
    let s = format!("{}-{name}", stepwise::drv::nix32::encode(&h[..20]));
    StorePath::from_base_name(&s).unwrap()
}

pub struct Params {
    /// Paths in G0's closure (roughly).
    pub paths: usize,
    /// Packages referenced by glue.
    pub units: usize,
    /// Packages that change.
    pub changed: usize,
    /// Share of dependencies that change with them (a mass rebuild's glibc).
    pub dep_change_per_mille: u64,
    pub seed: u64,
    /// G0 is the booted system.
    pub booted: bool,
    /// Free bytes on the disk.
    pub free: u64,
    /// Units 0 and 1 are the kernel `linux` and its `initrd-linux` (else `pkg0`, `pkg1`).
    pub kernel: bool,
}

pub struct Synthetic {
    pub input: PlanInput,
    /// Everything the glue's hashes need (unit derivations included).
    pub drvs: BTreeMap<StorePath, Derivation>,
    /// pname → (old out, new out)
    pub units: BTreeMap<String, (StorePath, StorePath)>,
}

fn unit_drv(sd: &StoreDir, pname: &str, version: &str, man: bool) -> (StorePath, Derivation) {
    let name = format!("{pname}-{version}");
    let mut drv = Derivation {
        system: b"x86_64-linux".to_vec(),
        builder: b"/bin/sh".to_vec(),
        args: vec![b"-c".to_vec(), b"true".to_vec()],
        ..Default::default()
    };
    let outs: &[&str] = if man { &["man", "out"] } else { &["out"] };
    for o in outs {
        drv.outputs.insert(
            o.to_string(),
            Output {
                path: None,
                hash_algo: String::new(),
                hash: String::new(),
            },
        );
    }
    drv.env.insert(b"name".to_vec(), name.clone().into_bytes());
    drv.env.insert(b"builder".to_vec(), b"/bin/sh".to_vec());
    drv.env.insert(b"system".to_vec(), b"x86_64-linux".to_vec());
    let empty: BTreeMap<StorePath, Derivation> = BTreeMap::new();
    Hasher::new(sd.clone(), &empty)
        .fill_outputs(&mut drv, &name)
        .unwrap();
    (drv_path(sd, &name, &drv), drv)
}

fn glue_drv(
    sd: &StoreDir,
    name: &str,
    inputs: BTreeMap<StorePath, BTreeSet<String>>,
    mentions: &[String],
    all: &BTreeMap<StorePath, Derivation>,
) -> (StorePath, Derivation) {
    let mut drv = Derivation {
        system: b"x86_64-linux".to_vec(),
        builder: b"/bin/sh".to_vec(),
        args: vec![b"-c".to_vec(), b"echo $pkgs > $out".to_vec()],
        input_drvs: inputs,
        ..Default::default()
    };
    drv.outputs.insert(
        "out".into(),
        Output {
            path: None,
            hash_algo: String::new(),
            hash: String::new(),
        },
    );
    drv.env.insert(b"name".to_vec(), name.as_bytes().to_vec());
    drv.env.insert(b"preferLocalBuild".to_vec(), b"1".to_vec());
    drv.env.insert(b"allowSubstitutes".to_vec(), Vec::new());
    drv.env
        .insert(b"pkgs".to_vec(), serde_json::to_vec(mentions).unwrap());
    Hasher::new(sd.clone(), all)
        .fill_outputs(&mut drv, name)
        .unwrap();
    (drv_path(sd, name, &drv), drv)
}

/// The glue of one generation over `unit_drvs` (pname → drv path, drv); returns the toplevel
/// drv path, and adds every glue drv to `all`.
fn generation(
    sd: &StoreDir,
    release: &str,
    unit_drvs: &[(String, StorePath, bool)],
    locals: &[StorePath],
    all: &mut BTreeMap<StorePath, Derivation>,
) -> (StorePath, Vec<StorePath>) {
    let out_of = |all: &BTreeMap<StorePath, Derivation>, d: &StorePath, o: &str| {
        sd.display(all[d].outputs[o].path.as_ref().unwrap())
    };
    let mut inputs = BTreeMap::new();
    let mut mentions = Vec::new();
    for (_, d, man) in unit_drvs {
        let mut outs: BTreeSet<String> = ["out".to_string()].into();
        mentions.push(out_of(all, d, "out"));
        if *man {
            outs.insert("man".into());
            mentions.push(out_of(all, d, "man"));
        }
        inputs.insert(d.clone(), outs);
    }
    let (sp, spd) = glue_drv(sd, "system-path", inputs, &mentions, all);
    all.insert(sp.clone(), spd);
    // etc: unit files for the first 50 packages.
    let mut inputs = BTreeMap::new();
    let mut mentions = Vec::new();
    for (_, d, _) in unit_drvs.iter().take(50) {
        inputs.insert(d.clone(), ["out".to_string()].into());
        mentions.push(format!("ExecStart={}/bin/x", out_of(all, d, "out")));
    }
    let (etc, etcd) = glue_drv(sd, "etc", inputs, &mentions, all);
    all.insert(etc.clone(), etcd);
    let mut inputs: BTreeMap<StorePath, BTreeSet<String>> = [
        (sp.clone(), ["out".to_string()].into()),
        (etc.clone(), ["out".to_string()].into()),
    ]
    .into();
    let mut mentions = vec![out_of(all, &sp, "out"), out_of(all, &etc, "out")];
    for l in locals {
        inputs.insert(l.clone(), ["out".to_string()].into());
        mentions.push(out_of(all, l, "out"));
    }
    let (top, topd) = glue_drv(
        sd,
        &format!("nixos-system-synth-{release}"),
        inputs,
        &mentions,
        all,
    );
    all.insert(top.clone(), topd);
    (top.clone(), vec![sp, etc, top])
}

/// A derivation that is not glue by its attributes and that no substituter has (an initrd, a
/// config check): it reads `reads` at runtime (`contents`) and builds with `tools`
/// (`nativeBuildInputs`).
fn local_drv(
    sd: &StoreDir,
    name: &str,
    reads: &[StorePath],
    tools: &[StorePath],
    all: &BTreeMap<StorePath, Derivation>,
) -> (StorePath, Derivation) {
    let out = |d: &StorePath| sd.display(all[d].outputs["out"].path.as_ref().unwrap());
    let mut drv = Derivation {
        system: b"x86_64-linux".to_vec(),
        builder: b"/bin/sh".to_vec(),
        args: vec![b"-c".to_vec(), b"cp -r $contents $out".to_vec()],
        input_drvs: reads
            .iter()
            .chain(tools)
            .map(|d| (d.clone(), ["out".to_string()].into()))
            .collect(),
        ..Default::default()
    };
    drv.outputs.insert(
        "out".into(),
        Output {
            path: None,
            hash_algo: String::new(),
            hash: String::new(),
        },
    );
    drv.env.insert(b"name".to_vec(), name.as_bytes().to_vec());
    let contents: Vec<String> = reads.iter().map(out).collect();
    let native: Vec<String> = tools.iter().map(out).collect();
    drv.env
        .insert(b"contents".to_vec(), contents.join(" ").into_bytes());
    drv.env
        .insert(b"nativeBuildInputs".to_vec(), native.join(" ").into_bytes());
    Hasher::new(sd.clone(), all)
        .fill_outputs(&mut drv, name)
        .unwrap();
    (drv_path(sd, name, &drv), drv)
}

/// Outputs no substituter has: what makes a derivation local.
pub struct NotOnCache(pub BTreeSet<StorePath>);

impl stepwise::plan::units::Substitutable for NotOnCache {
    fn substitutable(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, String> {
        Ok(paths
            .iter()
            .filter(|p| !self.0.contains(*p))
            .cloned()
            .collect())
    }
}

pub fn system(p: &Params) -> Synthetic {
    system_with_locals(p, 0)
}

/// `system(p)` with `locals` local derivations per generation (named `local0`, …): each reads 2–5
/// packages (shared with `system-path`), one in eight chains to the local derivation before it,
/// and all build with the tools `jq` and `cpio` (build inputs, in neither closure).
pub fn system_with_locals(p: &Params, locals: usize) -> Synthetic {
    let sd = store_dir();
    let mut rng = Rng::new(p.seed);
    let deps = p.paths.saturating_sub(p.units + 3).max(1);
    // Dependencies: a DAG, each referring to up to 2 earlier ones.
    let dep_paths: Vec<StorePath> = (0..deps)
        .map(|i| fake_path(&format!("dep{i}-old-{}", p.seed), &format!("dep{i}-1")))
        .collect();
    let dep_refs: Vec<Vec<usize>> = (0..deps)
        .map(|i| {
            if i == 0 {
                vec![]
            } else {
                (0..rng.below(3))
                    .map(|_| rng.below(i as u64) as usize)
                    .collect()
            }
        })
        .collect();
    let dep_sizes: Vec<u64> = (0..deps).map(|_| rng.size() / 4).collect();
    let dep_changes: Vec<bool> = (0..deps)
        .map(|_| rng.below(1000) < p.dep_change_per_mille)
        .collect();
    let new_dep: Vec<Option<StorePath>> = (0..deps)
        .map(|i| {
            dep_changes[i]
                .then(|| fake_path(&format!("dep{i}-new-{}", p.seed), &format!("dep{i}-2")))
        })
        .collect();

    let mut all: BTreeMap<StorePath, Derivation> = BTreeMap::new();
    let mut old_units = Vec::new();
    let mut new_units = Vec::new();
    let mut units = BTreeMap::new();
    let mut facts: BTreeMap<StorePath, PathFacts> = BTreeMap::new();
    let mut g0_paths: BTreeMap<StorePath, G0Path> = BTreeMap::new();
    let local = |size: u64, refs: BTreeSet<StorePath>| PathFacts {
        size,
        references: refs,
        present: true,
        source: SizeSource::Local,
    };
    for (i, d) in dep_paths.iter().enumerate() {
        let refs: BTreeSet<StorePath> = dep_refs[i].iter().map(|&j| dep_paths[j].clone()).collect();
        facts.insert(d.clone(), local(dep_sizes[i], refs.clone()));
        g0_paths.insert(
            d.clone(),
            G0Path {
                references: refs,
                deriver: None,
            },
        );
        if let Some(n) = &new_dep[i] {
            let refs: BTreeSet<StorePath> = dep_refs[i]
                .iter()
                .map(|&j| new_dep[j].clone().unwrap_or_else(|| dep_paths[j].clone()))
                .collect();
            facts.insert(
                n.clone(),
                PathFacts {
                    size: dep_sizes[i],
                    references: refs,
                    present: false,
                    source: SizeSource::Cache,
                },
            );
        }
    }
    for u in 0..p.units {
        let pname = match u {
            0 if p.kernel => "linux".to_string(),
            1 if p.kernel => "initrd-linux".to_string(),
            _ => format!("pkg{u}"),
        };
        let man = u % 10 == 3;
        let changed = u < p.changed;
        let (od, odrv) = unit_drv(&sd, &pname, "1.0", man);
        let (nd, ndrv) = if changed {
            unit_drv(&sd, &pname, "2.0", man)
        } else {
            (od.clone(), odrv.clone())
        };
        let my_deps: Vec<usize> = (0..1 + rng.below(3))
            .map(|_| rng.below(deps as u64) as usize)
            .collect();
        let size = rng.size();
        for (d, drv, is_new) in [(&od, &odrv, false), (&nd, &ndrv, true)] {
            for (o, out) in &drv.outputs {
                let path = out.path.clone().unwrap();
                let refs: BTreeSet<StorePath> = if o == "out" {
                    my_deps
                        .iter()
                        .map(|&j| {
                            if is_new {
                                new_dep[j].clone().unwrap_or_else(|| dep_paths[j].clone())
                            } else {
                                dep_paths[j].clone()
                            }
                        })
                        .collect()
                } else {
                    BTreeSet::new()
                };
                let sz = if o == "out" { size } else { size / 20 + 4096 };
                if !is_new || !facts.contains_key(&path) {
                    facts.insert(
                        path.clone(),
                        PathFacts {
                            size: sz,
                            references: refs.clone(),
                            present: !is_new || !changed,
                            source: if !is_new || !changed {
                                SizeSource::Local
                            } else {
                                SizeSource::Cache
                            },
                        },
                    );
                }
                if !is_new {
                    g0_paths.insert(
                        path,
                        G0Path {
                            references: refs,
                            deriver: Some(d.clone()),
                        },
                    );
                }
            }
        }
        units.insert(
            pname.clone(),
            (
                odrv.outputs["out"].path.clone().unwrap(),
                ndrv.outputs["out"].path.clone().unwrap(),
            ),
        );
        all.insert(od.clone(), odrv);
        all.insert(nd.clone(), ndrv);
        old_units.push((pname.clone(), od, man));
        new_units.push((pname, nd, man));
    }
    // Build tools and the local derivations of each generation.
    let mut tools = Vec::new();
    if locals > 0 {
        for (pname, v) in [("jq", "1.7"), ("cpio", "2.15")] {
            let (d, drv) = unit_drv(&sd, pname, v, false);
            facts.insert(
                drv.outputs["out"].path.clone().unwrap(),
                PathFacts {
                    size: rng.size() / 8,
                    references: BTreeSet::new(),
                    present: false,
                    source: SizeSource::Cache,
                },
            );
            all.insert(d.clone(), drv);
            tools.push(d);
        }
    }
    let picks: Vec<Vec<usize>> = (0..locals)
        .map(|_| {
            (0..2 + rng.below(4))
                .map(|_| rng.below(p.units as u64) as usize)
                .collect()
        })
        .collect();
    let local_sizes: Vec<u64> = (0..locals).map(|_| rng.size() / 2).collect();
    let mut local_drvs: [Vec<StorePath>; 2] = [Vec::new(), Vec::new()];
    let mut not_on_cache = BTreeSet::new();
    for (gi, gen_units) in [&old_units, &new_units].into_iter().enumerate() {
        for l in 0..locals {
            let mut reads: Vec<StorePath> =
                picks[l].iter().map(|&u| gen_units[u].1.clone()).collect();
            if l % 8 != 0 {
                reads.push(local_drvs[gi][l - 1].clone());
            }
            reads.sort();
            reads.dedup();
            let (d, drv) = local_drv(&sd, &format!("local{l}"), &reads, &tools, &all);
            let out = drv.outputs["out"].path.clone().unwrap();
            if gi == 0 {
                let refs: BTreeSet<StorePath> = reads
                    .iter()
                    .map(|r| all[r].outputs["out"].path.clone().unwrap())
                    .collect();
                facts.insert(out.clone(), local(local_sizes[l], refs.clone()));
                g0_paths.insert(
                    out,
                    G0Path {
                        references: refs,
                        deriver: Some(d.clone()),
                    },
                );
            } else {
                not_on_cache.insert(out);
            }
            all.insert(d.clone(), drv);
            local_drvs[gi].push(d);
        }
    }
    let (g0_top_drv, g0_glue) = generation(&sd, "23.05", &old_units, &local_drvs[0], &mut all);
    let (t_top, _) = generation(&sd, "23.11", &new_units, &local_drvs[1], &mut all);

    // G0's glue outputs and their references.
    let mut deriver_glue = BTreeMap::new();
    let mut g0_top = None;
    for g in &g0_glue {
        let drv = &all[g];
        let out = drv.outputs["out"].path.clone().unwrap();
        let mut refs = BTreeSet::new();
        for (i, outs) in &drv.input_drvs {
            for o in outs {
                refs.insert(all[i].outputs[o].path.clone().unwrap());
            }
        }
        facts.insert(out.clone(), local(4096, refs.clone()));
        g0_paths.insert(
            out.clone(),
            G0Path {
                references: refs,
                deriver: Some(g.clone()),
            },
        );
        deriver_glue.insert(g.clone(), true);
        if g == &g0_top_drv {
            g0_top = Some(out);
        }
    }
    // G0's local derivers are readable and not glue by attributes: their names make them glue.
    for d in &local_drvs[0] {
        deriver_glue.insert(d.clone(), false);
    }
    let g0_closure_bytes: u64 = g0_paths.keys().map(|p| facts[p].size).sum();
    let booted: BTreeSet<StorePath> = if p.booted {
        g0_paths.keys().cloned().collect()
    } else {
        BTreeSet::new()
    };
    let target =
        TargetGraph::read_with(sd.clone(), t_top, &all, Some(&NotOnCache(not_on_cache))).unwrap();
    Synthetic {
        input: PlanInput {
            target,
            g0: G0Side {
                toplevel: g0_top,
                paths: g0_paths,
                deriver_glue,
            },
            facts,
            keep: BTreeSet::new(),
            booted,
            used: g0_closure_bytes + (1 << 30),
            free: p.free,
            reserve: 64 << 20,
            options: PlanOptions::default(),
            profile: ProfileFacts {
                generations: 1,
                g0_generations: 1,
            },
            disk: Default::default(),
        },
        drvs: all,
        units,
    }
}
