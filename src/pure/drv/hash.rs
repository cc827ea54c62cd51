//! hashDerivationModulo, output paths and `.drv` paths, as Nix computes them
//! (`derivations.cc`, `store-api.cc`).
//!
//! Input derivations are read through [`DrvSource`] and their hashes memoised in [`Hasher`]: a
//! NixOS system has thousands of derivations, each reached along many paths. The walk is
//! iterative, so a deep input chain cannot overflow the stack.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::derivation::{parse_method_algo, Derivation, Method, OutputKind};
use super::store_path::{hex, StoreDir, StorePath};
use super::write::unparse;

/// Where input derivations come from: the filesystem, a store, a test's map.
pub trait DrvSource {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError>;
}

pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

impl<S: DrvSource + ?Sized> DrvSource for &S {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError> {
        (**self).read(path)
    }
}

/// A source backed by a map (tests, benchmarks, derivations built in memory).
impl DrvSource for HashMap<StorePath, Derivation> {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError> {
        self.get(path)
            .cloned()
            .ok_or_else(|| format!("derivation {path} is not known").into())
    }
}

impl DrvSource for BTreeMap<StorePath, Derivation> {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError> {
        self.get(path)
            .cloned()
            .ok_or_else(|| format!("derivation {path} is not known").into())
    }
}

#[derive(Debug, Error)]
pub enum HashError {
    #[error("cannot read input derivation {path}: {source}")]
    Source { path: String, source: SourceError },
    #[error("{drv}: input derivation {input} has no output {output:?}")]
    MissingOutput {
        drv: String,
        input: String,
        output: String,
    },
    #[error("{drv}: output {output:?}: {why}")]
    BadOutput {
        drv: String,
        output: String,
        why: String,
    },
    #[error("{drv}: {why}")]
    Unsupported { drv: String, why: String },
    #[error("input derivations form a cycle through {0}")]
    Cycle(String),
}

/// The result of hashDerivationModulo for one derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvHash {
    /// Output name → hash. For a regular derivation every output has the same hash.
    pub hashes: BTreeMap<String, [u8; 32]>,
    /// Depends on content-addressed outputs whose paths are not known yet.
    pub deferred: bool,
}

/// The ATerm `hashAlgo`/`hash` of a fixed output and its store path.
pub fn fixed_output_path(
    store_dir: &StoreDir,
    drv_name: &str,
    output: &str,
    hash_algo: &str,
    hash_hex: &str,
) -> Result<StorePath, String> {
    let (method, algo) = parse_method_algo(hash_algo)
        .ok_or_else(|| format!("unknown hash algorithm {hash_algo:?}"))?;
    let digest = unhex(hash_hex)
        .filter(|d| d.len() == algo.size())
        .ok_or_else(|| {
            format!(
                "hash {hash_hex:?} is not {} lower-case hex digits of {}",
                algo.size() * 2,
                algo.as_str()
            )
        })?;
    let name = output_path_name(drv_name, output);
    Ok(match (method, algo) {
        (Method::Recursive, super::derivation::HashAlgo::Sha256) => {
            store_dir.make_store_path("source", &to32(&digest), &name)
        }
        (Method::Text, super::derivation::HashAlgo::Sha256) => {
            store_dir.make_store_path("text", &to32(&digest), &name)
        }
        (Method::Text, _) => return Err("text hashing requires sha256".into()),
        (m, a) => {
            let inner = format!("fixed:out:{}{}:{}:", m.prefix(), a.as_str(), hash_hex);
            let h: [u8; 32] = Sha256::digest(inner.as_bytes()).into();
            store_dir.make_store_path("output:out", &h, &name)
        }
    })
}

/// `outputPathName`: `name` for `out`, `name-output` otherwise.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_string()
    } else {
        format!("{drv_name}-{output}")
    }
}

/// The `.drv` path of `drv` named `name` (without `.drv`): a text object whose references are
/// the input derivations and sources.
pub fn drv_path(store_dir: &StoreDir, name: &str, drv: &Derivation) -> StorePath {
    let aterm = super::write::to_aterm(drv, store_dir);
    drv_path_of_aterm(store_dir, name, drv, &aterm)
}

/// As [`drv_path`] when the canonical bytes are at hand already.
pub fn drv_path_of_aterm(
    store_dir: &StoreDir,
    name: &str,
    drv: &Derivation,
    aterm: &[u8],
) -> StorePath {
    let refs = drv.references();
    store_dir.text_path(&format!("{name}.drv"), aterm, refs.iter())
}

/// hashDerivationModulo over a graph of input derivations, memoised.
pub struct Hasher<S> {
    source: S,
    store_dir: StoreDir,
    memo: HashMap<StorePath, DrvHash>,
}

impl<S: DrvSource> Hasher<S> {
    pub fn new(store_dir: StoreDir, source: S) -> Self {
        Hasher {
            source,
            store_dir,
            memo: HashMap::new(),
        }
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// How many derivations are memoised.
    pub fn memoised(&self) -> usize {
        self.memo.len()
    }

    /// Nix's `pathDerivationModulo`: the hash of the derivation stored at `path` (outputs not
    /// masked), read from the source once.
    pub fn path_hash(&mut self, path: &StorePath) -> Result<&DrvHash, HashError> {
        if !self.memo.contains_key(path) {
            self.fill(path)?;
        }
        Ok(&self.memo[path])
    }

    /// Memoise a derivation that is not (yet) in the source, e.g. a rewritten one about to be
    /// written, so that derivations using it can be hashed before it reaches the store.
    pub fn remember(&mut self, path: StorePath, drv: &Derivation) -> Result<&DrvHash, HashError> {
        let name = path.derivation_name().unwrap_or(path.name()).to_string();
        let h = self.hash_modulo(drv, &name, false)?;
        Ok(self.memo.entry(path).or_insert(h))
    }

    /// hashDerivationModulo of a derivation in hand. `name` is its derivation name (for fixed
    /// outputs' paths). `mask_outputs` as Nix: true when computing its own output paths.
    pub fn hash_modulo(
        &mut self,
        drv: &Derivation,
        name: &str,
        mask_outputs: bool,
    ) -> Result<DrvHash, HashError> {
        for p in drv.input_drvs.keys() {
            if !self.memo.contains_key(p) {
                self.fill(p)?;
            }
        }
        self.compute(drv, name, mask_outputs)
    }

    /// The output paths `drv` must have: recomputed from its inputs with outputs masked.
    /// Floating and deferred outputs have no path yet and are left out.
    pub fn output_paths(
        &mut self,
        drv: &Derivation,
        name: &str,
    ) -> Result<BTreeMap<String, StorePath>, HashError> {
        let mut res = BTreeMap::new();
        let mut regular = None;
        for (out, o) in &drv.outputs {
            match o.kind() {
                Some(OutputKind::Fixed) => {
                    let p = fixed_output_path(&self.store_dir, name, out, &o.hash_algo, &o.hash)
                        .map_err(|why| HashError::BadOutput {
                            drv: name.to_string(),
                            output: out.clone(),
                            why,
                        })?;
                    res.insert(out.clone(), p);
                }
                Some(OutputKind::InputAddressed) | Some(OutputKind::Deferred) => {
                    if regular.is_none() {
                        regular = Some(self.hash_modulo(drv, name, true)?);
                    }
                    let h = regular.as_ref().expect("set above");
                    if !h.deferred {
                        let hash = h.hashes.get(out).expect("every output hashed");
                        res.insert(out.clone(), self.store_dir.output_path(hash, name, out));
                    }
                }
                Some(OutputKind::Floating) | Some(OutputKind::Impure) => {}
                None => {
                    return Err(HashError::BadOutput {
                        drv: name.to_string(),
                        output: out.clone(),
                        why: "path, hashAlgo and hash are an invalid combination".into(),
                    })
                }
            }
        }
        Ok(res)
    }

    /// Compute and fill in the output paths of an input-addressed derivation (outputs and their
    /// env variables), as `derivationStrict` does. Fixed outputs are checked and kept.
    pub fn fill_outputs(&mut self, drv: &mut Derivation, name: &str) -> Result<(), HashError> {
        for (out, o) in drv.outputs.iter_mut() {
            if o.kind() == Some(OutputKind::InputAddressed) {
                o.path = None;
                // derivationStrict sets every output's variable before hashing.
                drv.env.entry(out.clone().into_bytes()).or_default();
            }
        }
        // Blanked (Deferred-looking) outputs hash the same as masked ones.
        let paths = self.output_paths(drv, name)?;
        for (out, p) in paths {
            let o = drv.outputs.get_mut(&out).expect("output exists");
            o.path = Some(p.clone());
            drv.env
                .insert(out.into_bytes(), self.store_dir.display(&p).into_bytes());
        }
        Ok(())
    }

    fn compute(
        &self,
        drv: &Derivation,
        name: &str,
        mask_outputs: bool,
    ) -> Result<DrvHash, HashError> {
        let kinds: Vec<Option<OutputKind>> = drv.outputs.values().map(|o| o.kind()).collect();
        if kinds.iter().any(Option::is_none) {
            return Err(HashError::Unsupported {
                drv: name.to_string(),
                why: "an output has an invalid combination of path, hashAlgo and hash".into(),
            });
        }
        if drv.is_fixed_output() {
            let mut hashes = BTreeMap::new();
            for (out, o) in &drv.outputs {
                let p = fixed_output_path(&self.store_dir, name, out, &o.hash_algo, &o.hash)
                    .map_err(|why| HashError::BadOutput {
                        drv: name.to_string(),
                        output: out.clone(),
                        why,
                    })?;
                let s = format!(
                    "fixed:out:{}:{}:{}",
                    o.hash_algo,
                    o.hash,
                    self.store_dir.display(&p)
                );
                hashes.insert(out.clone(), Sha256::digest(s.as_bytes()).into());
            }
            return Ok(DrvHash {
                hashes,
                deferred: false,
            });
        }
        if kinds.contains(&Some(OutputKind::Impure)) {
            return Err(HashError::Unsupported {
                drv: name.to_string(),
                why: "impure derivations are not supported".into(),
            });
        }
        let mut deferred = kinds.contains(&Some(OutputKind::Floating));

        let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (p, outs) in &drv.input_drvs {
            let h = &self.memo[p];
            deferred |= h.deferred;
            for out in outs {
                let oh = h.hashes.get(out).ok_or_else(|| HashError::MissingOutput {
                    drv: name.to_string(),
                    input: self.store_dir.display(p),
                    output: out.clone(),
                })?;
                inputs.entry(hex(oh)).or_default().insert(out.clone());
            }
        }
        let mut buf = Vec::new();
        unparse(&mut buf, drv, &self.store_dir, mask_outputs, Some(&inputs));
        let hash: [u8; 32] = Sha256::digest(&buf).into();
        Ok(DrvHash {
            hashes: drv.outputs.keys().map(|o| (o.clone(), hash)).collect(),
            deferred,
        })
    }

    /// Read and hash `root` and every input not yet memoised, children first, without recursion.
    fn fill(&mut self, root: &StorePath) -> Result<(), HashError> {
        struct Frame {
            path: StorePath,
            drv: Derivation,
            next_child: usize,
            children: Vec<StorePath>,
        }
        let mut on_stack: HashSet<StorePath> = HashSet::new();
        let mut stack: Vec<Frame> = Vec::new();
        let read = |this: &Self, p: &StorePath| -> Result<Frame, HashError> {
            let drv = this.source.read(p).map_err(|source| HashError::Source {
                path: this.store_dir.display(p),
                source,
            })?;
            let children = drv.input_drvs.keys().cloned().collect();
            Ok(Frame {
                path: p.clone(),
                drv,
                next_child: 0,
                children,
            })
        };
        stack.push(read(self, root)?);
        on_stack.insert(root.clone());
        while let Some(top) = stack.last_mut() {
            if let Some(child) = top.children.get(top.next_child).cloned() {
                top.next_child += 1;
                if self.memo.contains_key(&child) {
                    continue;
                }
                if on_stack.contains(&child) {
                    return Err(HashError::Cycle(self.store_dir.display(&child)));
                }
                let frame = read(self, &child)?;
                on_stack.insert(child);
                stack.push(frame);
                continue;
            }
            let frame = stack.pop().expect("non-empty");
            let name = frame
                .path
                .derivation_name()
                .unwrap_or(frame.path.name())
                .to_string();
            let h = self.compute(&frame.drv, &name, false)?;
            on_stack.remove(&frame.path);
            self.memo.insert(frame.path, h);
        }
        Ok(())
    }
}

fn to32(d: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(d);
    a
}

/// Lower-case hex only (what Nix writes).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}
