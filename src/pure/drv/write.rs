//! Write a derivation as Nix does (`Derivation::unparse`): byte for byte.
//!
//! Fields Nix writes with `printUnquotedString` (names, paths, hashes, system) are copied as they
//! are; builder, arguments and environment go through `printString`, which escapes `"` `\` LF CR
//! TAB and nothing else.

use std::collections::{BTreeMap, BTreeSet};

use super::derivation::Derivation;
use super::store_path::StoreDir;

/// The canonical ATerm bytes of `drv`: what Nix writes into the `.drv` file.
pub fn to_aterm(drv: &Derivation, store_dir: &StoreDir) -> Vec<u8> {
    let mut out = Vec::with_capacity(estimate(drv));
    unparse(&mut out, drv, store_dir, false, None);
    out
}

/// Nix's `unparse` with its two hashing variations: `mask_outputs` writes output paths and the
/// output-named env values as `""`; `actual_inputs` replaces the input derivations by
/// hash-modulo hex strings (hashDerivationModulo).
pub(crate) fn unparse(
    s: &mut Vec<u8>,
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    actual_inputs: Option<&BTreeMap<String, BTreeSet<String>>>,
) {
    s.extend_from_slice(b"Derive([");
    for (i, (name, o)) in drv.outputs.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        plain(s, name.as_bytes());
        s.push(b',');
        match (&o.path, mask_outputs) {
            (Some(p), false) => plain_path(s, store_dir, p),
            _ => plain(s, b""),
        }
        s.push(b',');
        plain(s, o.hash_algo.as_bytes());
        s.push(b',');
        plain(s, o.hash.as_bytes());
        s.push(b')');
    }

    s.extend_from_slice(b"],[");
    match actual_inputs {
        Some(inputs) => {
            for (i, (key, outs)) in inputs.iter().enumerate() {
                if i > 0 {
                    s.push(b',');
                }
                s.push(b'(');
                plain(s, key.as_bytes());
                s.push(b',');
                plain_list(s, outs.iter().map(|o| o.as_bytes()));
                s.push(b')');
            }
        }
        None => {
            for (i, (p, outs)) in drv.input_drvs.iter().enumerate() {
                if i > 0 {
                    s.push(b',');
                }
                s.push(b'(');
                plain_path(s, store_dir, p);
                s.push(b',');
                plain_list(s, outs.iter().map(|o| o.as_bytes()));
                s.push(b')');
            }
        }
    }

    s.extend_from_slice(b"],[");
    for (i, p) in drv.input_srcs.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        plain_path(s, store_dir, p);
    }
    s.extend_from_slice(b"],");
    plain(s, &drv.system);
    s.push(b',');
    escaped(s, &drv.builder);

    s.extend_from_slice(b",[");
    for (i, a) in drv.args.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        escaped(s, a);
    }

    s.extend_from_slice(b"],[");
    for (i, (k, v)) in drv.env.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        escaped(s, k);
        s.push(b',');
        let masked = mask_outputs
            && std::str::from_utf8(k)
                .map(|k| drv.outputs.contains_key(k))
                .unwrap_or(false);
        escaped(s, if masked { b"" } else { v });
        s.push(b')');
    }
    s.extend_from_slice(b"])");
}

fn plain(s: &mut Vec<u8>, v: &[u8]) {
    s.push(b'"');
    s.extend_from_slice(v);
    s.push(b'"');
}

fn plain_path(s: &mut Vec<u8>, store_dir: &StoreDir, p: &super::StorePath) {
    s.push(b'"');
    s.extend_from_slice(store_dir.as_str().as_bytes());
    s.push(b'/');
    s.extend_from_slice(p.to_string().as_bytes());
    s.push(b'"');
}

fn plain_list<'a>(s: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) {
    s.push(b'[');
    for (i, v) in items.enumerate() {
        if i > 0 {
            s.push(b',');
        }
        plain(s, v);
    }
    s.push(b']');
}

fn escaped(s: &mut Vec<u8>, v: &[u8]) {
    s.push(b'"');
    for &c in v {
        match c {
            b'"' => s.extend_from_slice(b"\\\""),
            b'\\' => s.extend_from_slice(b"\\\\"),
            b'\n' => s.extend_from_slice(b"\\n"),
            b'\r' => s.extend_from_slice(b"\\r"),
            b'\t' => s.extend_from_slice(b"\\t"),
            _ => s.push(c),
        }
    }
    s.push(b'"');
}

fn estimate(drv: &Derivation) -> usize {
    let env: usize = drv.env.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    let args: usize = drv.args.iter().map(|a| a.len() + 3).sum();
    let paths = (drv.outputs.len() + drv.input_drvs.len() * 2 + drv.input_srcs.len()) * 100;
    64 + env + args + paths + drv.builder.len()
}
