//! Store paths parsed at the edge: a store directory plus `<nix32 hash>-<name>`.
//!
//! Everything inside stepwise handles [`StorePath`]; strings only appear where bytes cross into
//! or out of Nix (derivation files, command lines, JSON).

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::nix32;

/// Bytes of a store path's hash part (160 bits, 32 nix32 characters).
pub const HASH_BYTES: usize = 20;
pub const HASH_CHARS: usize = 32;
/// Nix's limit on the name part.
pub const MAX_NAME_LEN: usize = 211;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("{path:?} is not inside the store directory {store_dir}")]
    NotInStore { path: String, store_dir: String },
    #[error("{0:?} is not a store path: expected <32-character nix32 hash>-<name>")]
    Shape(String),
    #[error("{path:?}: bad hash part: {source}")]
    Hash {
        path: String,
        source: nix32::Nix32Error,
    },
    #[error("{path:?}: bad name: {why}")]
    Name { path: String, why: String },
    #[error("store directory {0:?} must be an absolute path without a trailing slash")]
    StoreDir(String),
}

/// The store directory the running Nix uses (`/nix/store` on NixOS, anything in tests).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: impl Into<String>) -> Result<Self, StorePathError> {
        let dir = dir.into();
        if !dir.starts_with('/') || (dir.len() > 1 && dir.ends_with('/')) || dir.contains("//") {
            return Err(StorePathError::StoreDir(dir));
        }
        Ok(StoreDir(dir))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parse an absolute path `<store dir>/<hash>-<name>` (nothing after the name).
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let base = path
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore {
                path: path.to_string(),
                store_dir: self.0.clone(),
            })?;
        StorePath::from_base_name(base).map_err(|e| e.with_path(path))
    }

    /// Parse a path that may point inside a store object (`/nix/store/…-foo/bin/foo`): the store
    /// path and the rest.
    pub fn parse_prefix<'a>(&self, path: &'a str) -> Result<(StorePath, &'a str), StorePathError> {
        let rest = path
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore {
                path: path.to_string(),
                store_dir: self.0.clone(),
            })?;
        let end = rest.find('/').unwrap_or(rest.len());
        let sp = StorePath::from_base_name(&rest[..end]).map_err(|e| e.with_path(path))?;
        Ok((sp, &rest[end..]))
    }

    pub fn display(&self, p: &StorePath) -> String {
        format!("{}/{}", self.0, p)
    }

    pub fn to_path(&self, p: &StorePath) -> PathBuf {
        PathBuf::from(self.display(p))
    }

    /// Nix's `makeStorePath`: `type` is `output:out`, `text:<refs…>`, `source`, ….
    pub fn make_store_path(
        &self,
        path_type: &str,
        inner_sha256: &[u8; 32],
        name: &str,
    ) -> StorePath {
        let s = format!(
            "{}:sha256:{}:{}:{}",
            path_type,
            hex(inner_sha256),
            self.0,
            name
        );
        let digest = Sha256::digest(s.as_bytes());
        let folded = nix32::fold(&digest, HASH_BYTES);
        let mut hash = [0u8; HASH_BYTES];
        hash.copy_from_slice(&folded);
        StorePath {
            hash,
            name: name.to_string(),
        }
    }

    /// The path of output `output` of a derivation whose hash modulo is `drv_hash`.
    pub fn output_path(&self, drv_hash: &[u8; 32], drv_name: &str, output: &str) -> StorePath {
        let name = if output == "out" {
            drv_name.to_string()
        } else {
            format!("{drv_name}-{output}")
        };
        self.make_store_path(&format!("output:{output}"), drv_hash, &name)
    }

    /// The path of a text store object (a `.drv` file, `builtins.toFile`) with these references.
    pub fn text_path<'a>(
        &self,
        name: &str,
        contents: &[u8],
        references: impl IntoIterator<Item = &'a StorePath>,
    ) -> StorePath {
        let mut refs: Vec<String> = references.into_iter().map(|r| self.display(r)).collect();
        refs.sort();
        refs.dedup();
        let mut ty = String::from("text");
        for r in &refs {
            ty.push(':');
            ty.push_str(r);
        }
        let h: [u8; 32] = Sha256::digest(contents).into();
        self.make_store_path(&ty, &h, name)
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<Path> for StoreDir {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

/// `<hash>-<name>` without the store directory. Ordered like Nix orders path strings within one
/// store dir: by the printed hash part, then the name (see the `Ord` impl).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorePath {
    hash: [u8; HASH_BYTES],
    name: String,
}

impl StorePath {
    /// Parse `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        if base.len() < HASH_CHARS + 2 || base.as_bytes()[HASH_CHARS] != b'-' {
            return Err(StorePathError::Shape(base.to_string()));
        }
        let (h, name) = (&base[..HASH_CHARS], &base[HASH_CHARS + 1..]);
        let bytes = nix32::decode(h, HASH_BYTES).map_err(|source| StorePathError::Hash {
            path: base.to_string(),
            source,
        })?;
        validate_name(name).map_err(|why| StorePathError::Name {
            path: base.to_string(),
            why,
        })?;
        let mut hash = [0u8; HASH_BYTES];
        hash.copy_from_slice(&bytes);
        Ok(StorePath {
            hash,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hash_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.hash
    }

    pub fn hash_part(&self) -> String {
        nix32::encode(&self.hash)
    }

    pub fn is_derivation(&self) -> bool {
        self.name.ends_with(".drv")
    }

    /// The derivation name of a `.drv` path (`hello-2.12.drv` → `hello-2.12`).
    pub fn derivation_name(&self) -> Option<&str> {
        self.name.strip_suffix(".drv")
    }
}

/// nix32 writes the hash's last byte first and its alphabet is in ASCII order, so comparing the
/// bytes from the last to the first orders paths exactly as their strings (which is how Nix sorts
/// inputs in a `.drv`).
impl Ord for StorePath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash
            .iter()
            .rev()
            .cmp(other.hash.iter().rev())
            .then_with(|| self.name.as_bytes().cmp(other.name.as_bytes()))
    }
}

impl PartialOrd for StorePath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash_part(), self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StorePath::from_base_name(&s).map_err(serde::de::Error::custom)
    }
}

impl StorePathError {
    fn with_path(self, full: &str) -> Self {
        match self {
            StorePathError::Shape(_) => StorePathError::Shape(full.to_string()),
            StorePathError::Hash { source, .. } => StorePathError::Hash {
                path: full.to_string(),
                source,
            },
            StorePathError::Name { why, .. } => StorePathError::Name {
                path: full.to_string(),
                why,
            },
            other => other,
        }
    }
}

/// Nix's name rules (`checkName`, current Nix): 1..=211 bytes of `[A-Za-z0-9+\-._?=]`, and
/// the first dash-separated component not `.` or `..`. (Nix 2.8 refused every leading `.`; we
/// accept what any Nix may have written.)
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} bytes, at most {MAX_NAME_LEN} allowed",
            name.len()
        ));
    }
    let first = name.split('-').next().unwrap_or("");
    if first == "." || first == ".." {
        return Err(format!(
            "the first dash-separated component must not be {first:?}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
    {
        return Err(format!(
            "character {c:?} is not allowed (only A-Z a-z 0-9 + - . _ ? =)"
        ));
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    #[test]
    fn parses_and_displays() {
        let s = "/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12.1";
        let p = dir().parse(s).unwrap();
        assert_eq!(p.name(), "hello-2.12.1");
        assert_eq!(dir().display(&p), s);
        assert!(!p.is_derivation());
    }

    #[test]
    fn rejects_bad_paths() {
        let d = dir();
        assert!(matches!(
            d.parse("/usr/bin/sh"),
            Err(StorePathError::NotInStore { .. })
        ));
        assert!(matches!(
            d.parse("/nix/store/abc-x"),
            Err(StorePathError::Shape(_))
        ));
        assert!(matches!(
            d.parse("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pe-x"),
            Err(StorePathError::Hash { .. })
        ));
        for bad in [".", "..", ".-x", "..-x"] {
            assert!(matches!(
                d.parse(&format!(
                    "/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-{bad}"
                )),
                Err(StorePathError::Name { .. })
            ));
        }
        assert!(d
            .parse("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-.x")
            .is_ok());
        assert!(matches!(
            d.parse("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-a b"),
            Err(StorePathError::Name { .. })
        ));
        assert!(StoreDir::new("nix/store").is_err());
        assert!(StoreDir::new("/nix/store/").is_err());
    }

    proptest::proptest! {
        #[test]
        fn order_is_string_order(
            a in proptest::array::uniform20(proptest::prelude::any::<u8>()),
            b in proptest::array::uniform20(proptest::prelude::any::<u8>()),
            na in "[a-z]{1,3}", nb in "[a-z]{1,3}", same in proptest::prelude::any::<bool>(),
        ) {
            let pa = StorePath { hash: a, name: na };
            let pb = StorePath { hash: if same { a } else { b }, name: nb };
            proptest::prop_assert_eq!(pa.cmp(&pb), pa.to_string().cmp(&pb.to_string()));
        }
    }

    #[test]
    fn parse_prefix_splits_the_rest() {
        let (p, rest) = dir()
            .parse_prefix("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello/bin/hello")
            .unwrap();
        assert_eq!(p.name(), "hello");
        assert_eq!(rest, "/bin/hello");
    }
}
