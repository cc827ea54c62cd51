//! Rewriting the target's glue for a mask (doc/design.md, "Rewriting glue"): the `.drv` files of an intermediate
//! generation.
//!
//! Bottom-up over the glue derivations, for each one that mentions a masked path or a rewritten
//! glue input:
//! 1. a masked unit output is dropped from `inputDrvs` and its replacement added to `inputSrcs`;
//!    a rewritten glue input's `inputDrvs` key is swapped;
//! 2. every occurrence of an old path string in the builder, args and env values (`__json`
//!    included: bytes are replaced, never re-serialised) becomes the new one;
//! 3. the output paths are recomputed with hashDerivationModulo and filled in (outputs and their
//!    env variables), and the `.drv` path computed.
//!
//! Non-glue derivations are never touched. A glue derivation that mentions nothing masked keeps
//! its path (but for a context-free restart trigger, which every step marks: `triggers.rs`), so
//! the empty mask gives the target itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::triggers;
use super::units::TargetGraph;
use crate::drv::hash::{drv_path_of_aterm, SourceError};
use crate::drv::{to_aterm, Derivation, DrvSource, HashError, Hasher, StoreDir, StorePath};

/// Target unit output path → what stands in for it (its G0 counterpart, or a stub).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask(pub BTreeMap<StorePath, StorePath>);

impl Mask {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A derivation to write into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDrv {
    pub path: StorePath,
    /// The derivation name (the path's name without `.drv`).
    pub name: String,
    pub drv: Derivation,
    /// The canonical ATerm: the file's exact contents.
    pub aterm: Vec<u8>,
}

impl NewDrv {
    /// The text object's references: input derivations and sources.
    pub fn references(&self) -> Vec<StorePath> {
        self.drv.references().into_iter().collect()
    }
}

/// One step's generation as derivations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialised {
    /// New derivations, inputs before the derivations using them; empty for the target itself.
    pub drvs: Vec<NewDrv>,
    pub toplevel_drv: StorePath,
    pub toplevel_out: StorePath,
}

#[derive(Debug, Error)]
pub enum MaskError {
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("the target toplevel {0} has no `out` output path")]
    NoOut(String),
}

/// Rewrites the target's glue; keeps hashes of derivations it has read across steps.
pub struct Materialiser<'a> {
    g: &'a TargetGraph,
    added: Rc<RefCell<HashMap<StorePath, Derivation>>>,
    hasher: Hasher<Layered<'a>>,
    /// Mark context-free restart triggers (`triggers.rs`); off only to derive again the steps of
    /// a run planned by a stepwise that did not mark them.
    mark_triggers: bool,
}

/// Derivations come from the target graph, then from those this materialiser wrote, then from
/// the store (non-glue inputs' own inputs, for their hashes).
struct Layered<'a> {
    g: &'a TargetGraph,
    added: Rc<RefCell<HashMap<StorePath, Derivation>>>,
    store: &'a dyn DrvSource,
}

impl DrvSource for Layered<'_> {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError> {
        if let Some(d) = self.g.drvs.get(path) {
            return Ok(d.clone());
        }
        if let Some(d) = self.added.borrow().get(path) {
            return Ok(d.clone());
        }
        self.store.read(path)
    }
}

impl<'a> Materialiser<'a> {
    pub fn new(g: &'a TargetGraph, store: &'a dyn DrvSource) -> Self {
        let added = Rc::new(RefCell::new(HashMap::new()));
        let source = Layered {
            g,
            added: added.clone(),
            store,
        };
        Materialiser {
            g,
            added,
            hasher: Hasher::new(g.store_dir.clone(), source),
            mark_triggers: true,
        }
    }

    /// Derive steps as a stepwise before restart-trigger marks did (for runs it planned).
    pub fn without_trigger_marks(mut self) -> Self {
        self.mark_triggers = false;
        self
    }

    /// The generation for `mask`.
    pub fn materialise(&mut self, mask: &Mask) -> Result<Materialised, MaskError> {
        let g = self.g;
        let sd = &g.store_dir;
        let mut rewritten: HashMap<StorePath, StorePath> = HashMap::new();
        let mut drvs = Vec::new();
        let trigger_mark = triggers::step_mark(mask, sd).filter(|_| self.mark_triggers);
        for d in g.glue_bottom_up() {
            let name = d.derivation_name().unwrap_or(d.name()).to_string();
            let marked = trigger_mark
                .as_ref()
                .and_then(|m| triggers::mark_triggers(&g.drvs[&d], &name, sd, m));
            let orig = marked.as_ref().unwrap_or(&g.drvs[&d]);
            let mut reps: Vec<(StorePath, StorePath)> = Vec::new();
            let mut new = orig.clone();
            new.input_drvs.clear();
            for (i, outs) in &orig.input_drvs {
                if let Some(i2) = rewritten.get(i) {
                    let new_input = &self.added.borrow()[i2];
                    for (o, out) in &g.drvs[i].outputs {
                        if let (Some(a), Some(b)) = (&out.path, &new_input.outputs[o].path) {
                            reps.push((a.clone(), b.clone()));
                        }
                    }
                    new.input_drvs.insert(i2.clone(), outs.clone());
                } else if g.glue.contains(i) {
                    new.input_drvs.insert(i.clone(), outs.clone());
                } else {
                    let mut kept = outs.clone();
                    for o in outs {
                        let p = g.output_path(i, o).expect("checked when read");
                        if let Some(r) = mask.0.get(p) {
                            kept.remove(o);
                            new.input_srcs.insert(r.clone());
                            reps.push((p.clone(), r.clone()));
                        }
                    }
                    if !kept.is_empty() {
                        new.input_drvs.insert(i.clone(), kept);
                    }
                }
            }
            for s in &orig.input_srcs {
                if let Some(r) = mask.0.get(s) {
                    new.input_srcs.remove(s);
                    new.input_srcs.insert(r.clone());
                    reps.push((s.clone(), r.clone()));
                }
            }
            if reps.is_empty() && marked.is_none() {
                continue;
            }
            let rep = Replacer::new(sd, &reps);
            let labels = kernel_relabels(mask);
            new.builder = rep.apply(&new.builder);
            for a in new.args.iter_mut() {
                *a = relabel(&rep.apply(a), &labels);
            }
            for v in new.env.values_mut() {
                *v = relabel(&rep.apply(v), &labels);
            }
            for (o, out) in new.outputs.iter_mut() {
                if out.hash_algo.is_empty() {
                    out.path = None;
                    new.env.insert(o.clone().into_bytes(), Vec::new());
                }
            }
            let paths = self.hasher.output_paths(&new, &name)?;
            for (o, p) in paths {
                new.env
                    .insert(o.clone().into_bytes(), sd.display(&p).into_bytes());
                new.outputs.get_mut(&o).expect("output exists").path = Some(p);
            }
            let aterm = to_aterm(&new, sd);
            let path = drv_path_of_aterm(sd, &name, &new, &aterm);
            self.added.borrow_mut().insert(path.clone(), new.clone());
            rewritten.insert(d.clone(), path.clone());
            drvs.push(NewDrv {
                path,
                name,
                drv: new,
                aterm,
            });
        }
        let (toplevel_drv, out) = match rewritten.get(&g.root) {
            Some(p) => (
                p.clone(),
                self.added.borrow()[p]
                    .outputs
                    .get("out")
                    .and_then(|o| o.path.clone()),
            ),
            None => (g.root.clone(), g.root_out().cloned()),
        };
        let toplevel_out = out.ok_or_else(|| MaskError::NoOut(sd.display(&g.root)))?;
        Ok(Materialised {
            drvs,
            toplevel_drv,
            toplevel_out,
        })
    }
}

/// The boot entry's label names the kernel by version (bootspec's `label`, "NixOS 24.11
/// (Linux 6.6.2)", written by the toplevel from `kernel.modDirVersion`): a step that keeps the
/// old kernel is labelled with the old version. From the mask's kernel entries (`linux-VERSION`
/// → `linux-VERSION`): `(Linux NEW)` → `(Linux OLD)`, for the version and the modDirVersion
/// (`6.6` is `6.6.0`).
fn kernel_relabels(mask: &Mask) -> Vec<(Vec<u8>, Vec<u8>)> {
    let kernel_version = |p: &StorePath| -> Option<String> {
        let (pname, v) = super::names::parse_drv_name(p.name());
        (pname == "linux" && !v.is_empty() && !v.contains('-')).then(|| v.to_string())
    };
    let mod_dir = |v: &str| {
        if v.split('.').count() == 2 {
            format!("{v}.0")
        } else {
            v.to_string()
        }
    };
    let mut pairs = Vec::new();
    for (from, to) in &mask.0 {
        let (Some(new), Some(old)) = (kernel_version(from), kernel_version(to)) else {
            continue;
        };
        for (a, b) in [(new.clone(), old.clone()), (mod_dir(&new), mod_dir(&old))] {
            let pair = (
                format!("(Linux {a})").into_bytes(),
                format!("(Linux {b})").into_bytes(),
            );
            if a != b && !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    pairs
}

/// `hay` with every label of `pairs` replaced.
fn relabel(hay: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = hay.to_vec();
    for (from, to) in pairs {
        if !out.windows(from.len()).any(|w| w == from.as_slice()) {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(from) {
                next.extend_from_slice(to);
                i += from.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// Replaces whole store path strings in one pass: find the store directory, look the hash part
/// up, check the name follows.
struct Replacer {
    prefix: Vec<u8>,
    by_hash: HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)>,
}

impl Replacer {
    fn new(sd: &StoreDir, reps: &[(StorePath, StorePath)]) -> Self {
        let prefix = format!("{}/", sd.as_str()).into_bytes();
        let by_hash = reps
            .iter()
            .map(|(a, b)| {
                (
                    a.hash_part().into_bytes(),
                    (sd.display(a).into_bytes(), sd.display(b).into_bytes()),
                )
            })
            .collect();
        Replacer { prefix, by_hash }
    }

    fn apply(&self, hay: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let mut i = 0;
        let n = self.prefix.len();
        while i < hay.len() {
            if hay[i..].starts_with(&self.prefix) && hay.len() >= i + n + 32 {
                if let Some((from, to)) = self.by_hash.get(&hay[i + n..i + n + 32]) {
                    if hay[i..].starts_with(from) {
                        out.extend_from_slice(to);
                        i += from.len();
                        continue;
                    }
                }
            }
            out.push(hay[i]);
            i += 1;
        }
        out
    }
}

/// A stub: an empty directory standing in for a removed non-vital package, added with
/// `nix-store --add DIR` (a `source` path without references). Its name says what it stands
/// for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stub {
    pub name: String,
    pub path: StorePath,
}

impl Stub {
    pub fn for_package(sd: &StoreDir, pname: &str) -> Stub {
        let name = format!("stepwise-stub-{pname}");
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+-._?=".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(crate::drv::store_path::MAX_NAME_LEN)
            .collect();
        let h: [u8; 32] = Sha256::digest(empty_dir_nar()).into();
        Stub {
            path: sd.make_store_path("source", &h, &name),
            name,
        }
    }
}

/// The NAR serialisation of an empty directory.
pub fn empty_dir_nar() -> Vec<u8> {
    let mut v = Vec::new();
    for s in ["nix-archive-1", "(", "type", "directory", ")"] {
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
        v.resize(v.len().div_ceil(8) * 8, 0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacer_replaces_whole_paths_only() {
        let sd = StoreDir::new("/nix/store").unwrap();
        let a = sd
            .parse("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12")
            .unwrap();
        let b = sd
            .parse("/nix/store/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.10")
            .unwrap();
        let r = Replacer::new(&sd, &[(a, b)]);
        let s = b"x /nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12/bin/hello \"/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-other\" /nix/store/0mdq";
        assert_eq!(
            String::from_utf8(r.apply(s)).unwrap(),
            "x /nix/store/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.10/bin/hello \"/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-other\" /nix/store/0mdq"
        );
    }

    /// A step that keeps the old kernel: the toplevel's bootspec names the old kernel's path and
    /// its version in the label (both the version and the modDirVersion spelling).
    #[test]
    fn a_step_keeping_the_old_kernel_has_the_old_kernel_in_its_bootspec_label() {
        use crate::drv::Output;
        let sd = StoreDir::new("/nix/store").unwrap();
        let p = |s: &str| sd.parse(&format!("/nix/store/{s}")).unwrap();
        let new_k = p("0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-linux-6.7");
        let old_k = p("1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-linux-6.6.9");
        let k_drv = p("2mdqa9w1p6cmli6976v4wi0sw9r4p5pr-linux-6.7.drv");
        let top_drv = p("3mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-h-24.11.drv");
        let top_out = p("4mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-h-24.11");
        let mut kernel = Derivation::default();
        kernel
            .outputs
            .insert("out".into(), Output::input_addressed(new_k.clone()));
        let mut top = Derivation::default();
        top.outputs
            .insert("out".into(), Output::input_addressed(top_out.clone()));
        top.input_drvs
            .insert(k_drv.clone(), ["out".to_string()].into());
        top.env.insert(b"preferLocalBuild".to_vec(), b"1".to_vec());
        top.env
            .insert(b"out".to_vec(), sd.display(&top_out).into_bytes());
        let boot = format!(
            r#"{{"org.nixos.bootspec.v1":{{"kernel":"{}/bzImage","label":"NixOS Vicuna 24.11 (Linux 6.7.0)"}}}}"#,
            sd.display(&new_k)
        );
        top.env.insert(b"bootspec".to_vec(), boot.into_bytes());
        top.env
            .insert(b"version".to_vec(), b"NixOS 24.11 (Linux 6.7)".to_vec());
        let drvs: BTreeMap<StorePath, Derivation> =
            [(k_drv, kernel), (top_drv.clone(), top)].into();
        let g = TargetGraph::read(sd.clone(), top_drv, &drvs).unwrap();
        let mut m = Materialiser::new(&g, &drvs);
        let mask = Mask([(new_k.clone(), old_k.clone())].into());
        let step = m.materialise(&mask).unwrap();
        let written = &step.drvs.last().unwrap().drv;
        let boot = String::from_utf8(written.env[b"bootspec".as_slice()].clone()).unwrap();
        assert!(boot.contains("(Linux 6.6.9)"), "{boot}");
        assert!(boot.contains(&sd.display(&old_k)), "{boot}");
        assert!(!boot.contains("6.7"), "{boot}");
        assert_eq!(
            written.env[b"version".as_slice()],
            b"NixOS 24.11 (Linux 6.6.9)".to_vec()
        );
        // The target itself (empty mask) keeps its label.
        let target = m.materialise(&Mask::default()).unwrap();
        assert!(target.drvs.is_empty());
    }

    /// A unit whose `X-Restart-Triggers` is a bare hash (no store path) gets a different unit file
    /// in each step, and the target keeps its own: every switch restarts it. Without the marks
    /// (a run planned by an older stepwise) only what mentions a masked path is rewritten.
    #[test]
    fn a_context_free_restart_trigger_differs_in_every_step() {
        use crate::drv::Output;
        let sd = StoreDir::new("/nix/store").unwrap();
        let p = |s: &str| sd.parse(&format!("/nix/store/{s}")).unwrap();
        let new_h = p("0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.13");
        let old_h = p("1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12");
        let new_j = p("5mdqa9w1p6cmli6976v4wi0sw9r4p5pr-jq-1.7");
        let old_j = p("6mdqa9w1p6cmli6976v4wi0sw9r4p5pr-jq-1.6");
        let h_drv = p("2mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.13.drv");
        let j_drv = p("7mdqa9w1p6cmli6976v4wi0sw9r4p5pr-jq-1.7.drv");
        let unit_drv = p("8mdqa9w1p6cmli6976v4wi0sw9r4p5pr-unit-sshd.service.drv");
        let unit_out = p("9mdqa9w1p6cmli6976v4wi0sw9r4p5pr-unit-sshd.service");
        let top_drv = p("3mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-h-24.11.drv");
        let top_out = p("4mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-h-24.11");
        let package = |out: &StorePath| {
            let mut d = Derivation::default();
            d.outputs
                .insert("out".into(), Output::input_addressed(out.clone()));
            d
        };
        let glue = |out: &StorePath, inputs: &[&StorePath]| {
            let mut d = package(out);
            for i in inputs {
                d.input_drvs
                    .insert((*i).clone(), ["out".to_string()].into());
            }
            d.env.insert(b"preferLocalBuild".to_vec(), b"1".to_vec());
            d.env.insert(b"out".to_vec(), sd.display(out).into_bytes());
            d
        };
        // The unit mentions no package: only its trigger says its configuration changed.
        let mut unit = glue(&unit_out, &[]);
        unit.env.insert(
            b"text".to_vec(),
            b"[Unit]\nX-Restart-Triggers=9f86d081884c7d65\n".to_vec(),
        );
        let top = glue(&top_out, &[&h_drv, &j_drv, &unit_drv]);
        let drvs: BTreeMap<StorePath, Derivation> = [
            (h_drv, package(&new_h)),
            (j_drv, package(&new_j)),
            (unit_drv.clone(), unit),
            (top_drv.clone(), top),
        ]
        .into();
        let g = TargetGraph::read(sd.clone(), top_drv, &drvs).unwrap();
        let unit_of = |m: &Materialised| {
            m.drvs
                .iter()
                .find(|d| d.name == "unit-sshd.service")
                .map(|d| d.path.clone())
                .unwrap_or_else(|| unit_drv.clone())
        };
        let one = Mask([(new_h.clone(), old_h), (new_j.clone(), old_j.clone())].into());
        let two = Mask([(new_j, old_j)].into());
        let mut m = Materialiser::new(&g, &drvs);
        let (a, b) = (m.materialise(&one).unwrap(), m.materialise(&two).unwrap());
        let target = m.materialise(&Mask::default()).unwrap();
        let units = [unit_of(&a), unit_of(&b), unit_of(&target)];
        assert_eq!(units[2], unit_drv, "the target is not rewritten");
        assert!(units[0] != units[1] && units[0] != units[2] && units[1] != units[2]);
        let mut older = Materialiser::new(&g, &drvs).without_trigger_marks();
        assert_eq!(unit_of(&older.materialise(&one).unwrap()), unit_drv);
    }

    #[test]
    fn empty_dir_nar_layout() {
        let nar = empty_dir_nar();
        assert_eq!(nar.len(), 5 * 8 + 16 + 8 + 8 + 16 + 8);
        assert_eq!(&nar[8..21], b"nix-archive-1");
    }
}
