//! Semantic checks beyond syntax: what Nix would reject when registering or building the
//! derivation (`Derivation::type`, `checkDerivationOutputs`), except the output paths themselves,
//! which need the inputs (see `hash`).

use thiserror::Error;

use super::derivation::{parse_method_algo, Derivation, OutputKind};
use super::hash::{output_path_name, unhex};
use super::store_path::{validate_name, StoreDir};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("derivation {name:?} is invalid: {}", problems.join("; "))]
pub struct ValidationError {
    pub name: String,
    pub problems: Vec<String>,
}

/// Check `drv`, whose derivation name is `name`. Collects every problem, not just the first.
pub fn validate(drv: &Derivation, store_dir: &StoreDir, name: &str) -> Result<(), ValidationError> {
    let mut problems = Vec::new();
    if let Err(why) = validate_name(&format!("{name}.drv")) {
        problems.push(format!("name {name:?}: {why}"));
    }
    if drv.outputs.is_empty() {
        problems.push("no outputs".into());
    }
    let mut kinds = Vec::new();
    for (out, o) in &drv.outputs {
        if out == "drv" {
            problems.push("an output must not be called \"drv\"".into());
        }
        if let Err(why) = validate_name(&output_path_name(name, out)) {
            problems.push(format!("output {out:?}: {why}"));
        }
        let Some(kind) = o.kind() else {
            problems.push(format!(
                "output {out:?}: path {:?}, hashAlgo {:?}, hash {:?} is not a combination Nix knows",
                o.path.as_ref().map(|p| store_dir.display(p)),
                o.hash_algo,
                o.hash
            ));
            continue;
        };
        kinds.push(kind);
        match kind {
            OutputKind::Fixed => match parse_method_algo(&o.hash_algo) {
                None => problems.push(format!(
                    "output {out:?}: unknown hash algorithm {:?}",
                    o.hash_algo
                )),
                Some((_, algo)) => {
                    if unhex(&o.hash).map(|h| h.len()) != Some(algo.size()) {
                        problems.push(format!(
                            "output {out:?}: hash {:?} is not {} lower-case hex digits ({})",
                            o.hash,
                            algo.size() * 2,
                            algo.as_str()
                        ));
                    }
                }
            },
            OutputKind::Floating | OutputKind::Impure => {
                if parse_method_algo(&o.hash_algo).is_none() {
                    problems.push(format!(
                        "output {out:?}: unknown hash algorithm {:?}",
                        o.hash_algo
                    ));
                }
            }
            OutputKind::InputAddressed => {
                let path = store_dir.display(o.path.as_ref().expect("input-addressed has a path"));
                match drv.env_get(out) {
                    Some(v) if v == path.as_bytes() => {}
                    Some(v) => problems.push(format!(
                        "environment variable {out:?} is {:?}, expected the output path {path}",
                        String::from_utf8_lossy(v)
                    )),
                    None => problems.push(format!(
                        "environment variable {out:?} is missing, expected the output path {path}"
                    )),
                }
            }
            OutputKind::Deferred => {}
        }
    }
    let fixed = kinds.iter().filter(|k| **k == OutputKind::Fixed).count();
    if fixed > 0 && drv.outputs.len() > 1 {
        problems.push("a fixed-output derivation must have exactly one output".into());
    }
    let floating = kinds.contains(&OutputKind::Floating);
    if floating
        && kinds
            .iter()
            .any(|k| matches!(k, OutputKind::InputAddressed | OutputKind::Deferred))
    {
        problems.push("content-addressed and input-addressed outputs are mixed".into());
    }
    for (p, outs) in &drv.input_drvs {
        if !p.is_derivation() {
            problems.push(format!(
                "input derivation {} does not end in .drv",
                store_dir.display(p)
            ));
        }
        if outs.is_empty() {
            problems.push(format!(
                "input derivation {} lists no outputs",
                store_dir.display(p)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            name: name.to_string(),
            problems,
        })
    }
}
