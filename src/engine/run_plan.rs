//! What a run is about, fixed when it starts and kept in the journal's header: the parameters and
//! the generations of each chain, with every path the executor needs. `resume` needs nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::args::{OnFailure, RebootPolicy, Strategy};
use crate::drv::StorePath;
use crate::effects::store::Action;
use crate::transition::{Chain, FailurePolicy, Gen, RunShape};

/// A `.drv` file a step writes, with the path it must get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrvWrite {
    pub path: StorePath,
    pub name: String,
    #[serde(with = "serde_bytes_vec")]
    pub contents: Vec<u8>,
    pub references: Vec<StorePath>,
}

/// One generation of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenPlan {
    /// What this generation is, for people ("G0", "step 2: +openssl 3.1", "target").
    pub label: String,
    /// The toplevel derivation.
    pub drv: StorePath,
    /// The toplevel output path; realising `drv` must give exactly this.
    pub out: StorePath,
    /// The closure this generation is expected to have (best effort, from the plan): what a failed
    /// realise may have left behind.
    pub closure: BTreeSet<StorePath>,
    /// The `.drv` files to write before realising, bottom-up (empty for G0 and the target).
    pub derivations: Vec<DrvWrite>,
}

/// Where the run acts, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
    /// Directory of the run-owned GC root links.
    pub roots_dir: PathBuf,
    pub action: Action,
    pub strategy: Strategy,
    pub on_failure: OnFailure,
    pub reboot: RebootPolicy,
    pub reboot_command: Vec<String>,
    pub reserve: u64,
}

/// The run's header: parameters and both chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    pub params: RunParams,
    pub g0: GenPlan,
    /// G1..Gn, the last being the target; empty for a direct-only run.
    pub steps: Vec<GenPlan>,
    pub target: GenPlan,
}

impl RunHeader {
    pub fn shape(&self) -> RunShape {
        RunShape {
            steps: self.steps.len() as Gen,
            fall_back: self.params.strategy == Strategy::Auto,
            on_failure: match self.params.on_failure {
                OnFailure::Unwind => FailurePolicy::Unwind,
                OnFailure::Hold => FailurePolicy::Hold,
            },
        }
    }

    /// The chain a run starts with.
    pub fn first_chain(&self) -> Chain {
        match self.params.strategy {
            Strategy::Stepwise => Chain::Steps,
            Strategy::Direct => Chain::Direct,
            Strategy::Auto if self.steps.is_empty() => Chain::Direct,
            // The caller decides from the estimate; see `engine::choose_chain`.
            Strategy::Auto => Chain::Direct,
        }
    }

    pub fn gen(&self, chain: Chain, gen: Gen) -> &GenPlan {
        match (chain, gen) {
            (_, 0) => &self.g0,
            (Chain::Direct, _) => &self.target,
            (Chain::Steps, k) => &self.steps[k as usize - 1],
        }
    }

    /// The run-owned root of a generation's output.
    pub fn out_root(&self, chain: Chain, gen: Gen) -> PathBuf {
        root(&self.params.roots_dir, "out", chain, gen)
    }

    /// The run-owned root of a generation's toplevel `.drv`.
    pub fn drv_root(&self, chain: Chain, gen: Gen) -> PathBuf {
        root(&self.params.roots_dir, "drv", chain, gen)
    }
}

fn root(dir: &Path, kind: &str, chain: Chain, gen: Gen) -> PathBuf {
    let chain = match (gen, chain) {
        (0, _) => "g0",
        (_, Chain::Direct) => "direct",
        (_, Chain::Steps) => "steps",
    };
    dir.join(format!("{kind}-{chain}-{gen}"))
}

/// `Vec<u8>` as a byte string in postcard, an array elsewhere.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}
