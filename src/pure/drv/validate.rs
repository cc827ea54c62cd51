//! Semantic checks beyond syntax: what Nix would reject when registering or building the
//! derivation (`Derivation::type`, `checkDerivationOutputs`), except the output paths themselves,
//! which need the inputs (see `hash`).

use thiserror::Error;

use super::derivation::{parse_method_algo, Derivation, Output, OutputKind};
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
        match o.kind() {
            Some(kind) => {
                kinds.push(kind);
                check_output(drv, store_dir, out, o, kind, &mut problems);
            }
            None => problems.push(format!(
                "output {out:?}: path {:?}, hashAlgo {:?}, hash {:?} is not a combination Nix knows",
                o.path.as_ref().map(|p| store_dir.display(p)),
                o.hash_algo,
                o.hash
            )),
        }
    }
    check_output_mix(drv, &kinds, &mut problems);
    check_input_drvs(drv, store_dir, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            name: name.to_string(),
            problems,
        })
    }
}

/// One output against the rules of its kind: a known hash algorithm and a hash of its length
/// for fixed outputs, the path in the environment for input-addressed ones.
fn check_output(
    drv: &Derivation,
    store_dir: &StoreDir,
    out: &str,
    o: &Output,
    kind: OutputKind,
    problems: &mut Vec<String>,
) {
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

/// Kinds that cannot share a derivation: a fixed output stands alone, floating content-addressed
/// outputs do not mix with input-addressed ones.
fn check_output_mix(drv: &Derivation, kinds: &[OutputKind], problems: &mut Vec<String>) {
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
}

fn check_input_drvs(drv: &Derivation, store_dir: &StoreDir, problems: &mut Vec<String>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drv::StorePath;
    use std::collections::BTreeSet;

    const HASH: &str = "00bgd045z0d4icpbc2yyz4gx48ak44la";

    fn store() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    fn path(name: &str) -> StorePath {
        store().parse(&format!("/nix/store/{HASH}-{name}")).unwrap()
    }

    /// An input-addressed derivation `hello` that passes.
    fn hello() -> Derivation {
        let out = path("hello");
        let mut d = Derivation::default();
        d.outputs.insert(
            "out".into(),
            Output {
                path: Some(out.clone()),
                hash_algo: String::new(),
                hash: String::new(),
            },
        );
        d.env
            .insert(b"out".to_vec(), store().display(&out).into_bytes());
        d
    }

    fn problems(d: &Derivation) -> Vec<String> {
        match validate(d, &store(), "hello") {
            Ok(()) => vec![],
            Err(e) => e.problems,
        }
    }

    #[test]
    fn a_well_formed_derivation_passes() {
        assert_eq!(problems(&hello()), Vec::<String>::new());
    }

    #[test]
    fn an_output_path_missing_from_the_environment_is_named() {
        let mut d = hello();
        d.env.clear();
        assert_eq!(
            problems(&d),
            [format!(
                "environment variable \"out\" is missing, expected the output path /nix/store/{HASH}-hello"
            )]
        );
    }

    #[test]
    fn a_fixed_output_must_stand_alone_and_have_a_hash_of_its_length() {
        let mut d = hello();
        d.outputs.insert(
            "src".into(),
            Output {
                path: Some(path("hello-src")),
                hash_algo: "sha256".into(),
                hash: "abcd".into(),
            },
        );
        let p = problems(&d);
        assert!(
            p.iter().any(|p| p.contains("hash \"abcd\" is not 64")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("exactly one output")), "{p:?}");
    }

    #[test]
    fn floating_and_input_addressed_outputs_do_not_mix() {
        let mut d = hello();
        d.outputs.insert(
            "dev".into(),
            Output {
                path: None,
                hash_algo: "r:sha256".into(),
                hash: String::new(),
            },
        );
        assert_eq!(
            problems(&d),
            ["content-addressed and input-addressed outputs are mixed"]
        );
    }

    #[test]
    fn an_input_derivation_must_be_a_drv_with_outputs() {
        let mut d = hello();
        d.input_drvs.insert(path("dep"), BTreeSet::new());
        let p = problems(&d);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].ends_with("-dep does not end in .drv"), "{p:?}");
        assert!(p[1].ends_with("-dep lists no outputs"), "{p:?}");
    }
}
