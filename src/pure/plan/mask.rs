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
//! its path, so the empty mask gives the target itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

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
        }
    }

    /// The generation for `mask`.
    pub fn materialise(&mut self, mask: &Mask) -> Result<Materialised, MaskError> {
        let g = self.g;
        let sd = &g.store_dir;
        let mut rewritten: HashMap<StorePath, StorePath> = HashMap::new();
        let mut drvs = Vec::new();
        for d in g.glue_bottom_up() {
            let orig = &g.drvs[&d];
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
            if reps.is_empty() {
                continue;
            }
            let rep = Replacer::new(sd, &reps);
            new.builder = rep.apply(&new.builder);
            for a in new.args.iter_mut() {
                *a = rep.apply(a);
            }
            for v in new.env.values_mut() {
                *v = rep.apply(v);
            }
            let name = d.derivation_name().unwrap_or(d.name()).to_string();
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

    #[test]
    fn empty_dir_nar_layout() {
        let nar = empty_dir_nar();
        assert_eq!(nar.len(), 5 * 8 + 16 + 8 + 8 + 16 + 8);
        assert_eq!(&nar[8..21], b"nix-archive-1");
    }
}
