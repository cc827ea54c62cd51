//! The derivation value: what a `.drv` file holds, with byte strings where Nix has byte strings.

use std::collections::{BTreeMap, BTreeSet};

use super::store_path::StorePath;

/// One output as the ATerm records it: `(name, path, hashAlgo, hash)`.
///
/// Which kind of output it is follows from which fields are empty, as in Nix: see [`OutputKind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Output {
    /// `None` where the ATerm has `""` (floating and deferred outputs, or masked for hashing).
    pub path: Option<StorePath>,
    /// `""`, or `[r:|text:]<md5|sha1|sha256|sha512>`, or `impure`-style newer forms.
    pub hash_algo: String,
    /// Lower-case hex of the fixed output's hash, or `""`.
    pub hash: String,
}

/// The kinds of outputs Nix knows (`DerivationOutput` in Nix's `derivations.hh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Path known from the inputs; `hashAlgo` and `hash` empty. All of a NixOS system's glue.
    InputAddressed,
    /// Fixed-output (fetchers): path, method+algorithm and hash known in advance.
    Fixed,
    /// Content-addressed, path known only after the build (`ca-derivations`).
    Floating,
    /// Input-addressed but depending on a floating output: path not known yet.
    Deferred,
    /// `impure-derivations`.
    Impure,
}

/// How a content-addressed output's contents are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Flat,
    /// NAR serialisation (`r:` prefix).
    Recursive,
    /// `text:` (dynamic derivations).
    Text,
}

/// A hash algorithm Nix accepts in `outputHashAlgo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub fn parse(s: &str) -> Option<HashAlgo> {
        Some(match s {
            "md5" => HashAlgo::Md5,
            "sha1" => HashAlgo::Sha1,
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }
}

impl Method {
    pub fn prefix(self) -> &'static str {
        match self {
            Method::Flat => "",
            Method::Recursive => "r:",
            Method::Text => "text:",
        }
    }
}

/// Split an ATerm `hashAlgo` field (`r:sha256`) into method and algorithm.
pub fn parse_method_algo(s: &str) -> Option<(Method, HashAlgo)> {
    let (method, rest) = if let Some(r) = s.strip_prefix("r:") {
        (Method::Recursive, r)
    } else if let Some(r) = s.strip_prefix("text:") {
        (Method::Text, r)
    } else {
        (Method::Flat, s)
    };
    HashAlgo::parse(rest).map(|a| (method, a))
}

impl Output {
    /// An input-addressed output at `path`.
    pub fn input_addressed(path: StorePath) -> Self {
        Output {
            path: Some(path),
            hash_algo: String::new(),
            hash: String::new(),
        }
    }

    /// Classify by which fields are empty; `None` for combinations Nix rejects.
    pub fn kind(&self) -> Option<OutputKind> {
        match (
            self.path.is_some(),
            self.hash_algo.is_empty(),
            self.hash.is_empty(),
        ) {
            (true, true, true) => Some(OutputKind::InputAddressed),
            (true, false, false) => Some(OutputKind::Fixed),
            (false, false, true) => Some(OutputKind::Floating),
            (false, true, true) => Some(OutputKind::Deferred),
            (false, false, false) if self.hash == "impure" => Some(OutputKind::Impure),
            _ => None,
        }
    }
}

/// A store derivation. Values are bytes: Nix strings may hold any byte but NUL, and a `.drv` file
/// must come back byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    pub outputs: BTreeMap<String, Output>,
    /// Input derivation → the outputs of it this derivation uses.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    pub input_srcs: BTreeSet<StorePath>,
    pub system: Vec<u8>,
    pub builder: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub env: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Derivation {
    /// The env value for `key`, if present.
    pub fn env_get(&self, key: &str) -> Option<&[u8]> {
        self.env.get(key.as_bytes()).map(|v| v.as_slice())
    }

    /// Every store path the `.drv` file references: input derivations and input sources. These
    /// are the references of the `.drv` text object.
    pub fn references(&self) -> BTreeSet<StorePath> {
        self.input_drvs
            .keys()
            .chain(self.input_srcs.iter())
            .cloned()
            .collect()
    }

    /// Replace every occurrence of `from` by `to` in the builder, the arguments and the env values
    /// (`__json` included, as bytes: never re-serialised). Returns how many were replaced.
    pub fn replace_bytes(&mut self, from: &[u8], to: &[u8]) -> usize {
        let mut n = replace_in(&mut self.builder, from, to);
        for a in &mut self.args {
            n += replace_in(a, from, to);
        }
        for v in self.env.values_mut() {
            n += replace_in(v, from, to);
        }
        n
    }

    /// All outputs fixed (a fixed-output derivation: a fetcher).
    pub fn is_fixed_output(&self) -> bool {
        !self.outputs.is_empty()
            && self
                .outputs
                .values()
                .all(|o| o.kind() == Some(OutputKind::Fixed))
    }

    /// The derivation's name as the evaluator set it: env `name`, or the `name` of `__json`
    /// (structured attributes). `None` if neither holds a valid name.
    pub fn name_from_env(&self) -> Option<String> {
        if let Some(n) = self.env_get("name") {
            return String::from_utf8(n.to_vec()).ok();
        }
        let json = self.env_get("__json")?;
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        v.get("name")?.as_str().map(str::to_string)
    }
}

/// Replace non-overlapping occurrences, left to right.
fn replace_in(v: &mut Vec<u8>, from: &[u8], to: &[u8]) -> usize {
    if from.is_empty() || v.len() < from.len() {
        return 0;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut n = 0;
    let mut i = 0;
    while i < v.len() {
        if v[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            n += 1;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    if n > 0 {
        *v = out;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_bytes_everywhere_but_keys() {
        let mut d = Derivation {
            builder: b"/a/bin/sh".to_vec(),
            args: vec![b"/a /a/x".to_vec()],
            env: BTreeMap::from([(b"/a".to_vec(), b"{\"p\":\"/a\"}".to_vec())]),
            ..Default::default()
        };
        assert_eq!(d.replace_bytes(b"/a", b"/bb"), 4);
        assert_eq!(d.builder, b"/bb/bin/sh");
        assert_eq!(d.args[0], b"/bb /bb/x");
        assert_eq!(d.env[&b"/a".to_vec()], b"{\"p\":\"/bb\"}");
    }
}
