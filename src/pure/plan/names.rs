//! Package names from store path names: `builtins.parseDrvName`'s pname/version split, and the
//! output suffix (`-lib`, `-man`, …) that multi-output derivations append to their output paths.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Output names nixpkgs uses often enough that a trailing `-<name>` on a path name is taken for
/// an output when the derivation itself is not at hand (G0's side without a valid deriver).
pub const KNOWN_OUTPUTS: &[&str] = &[
    "bin",
    "dev",
    "devdoc",
    "doc",
    "info",
    "lib",
    "man",
    "modules",
    "out",
    "static",
    "debug",
    "python",
    "py",
    "lib32",
    "dist",
    "terminfo",
    "hashed-mirrors",
    "udev",
    "shell",
    "scripts",
    "tex",
    "fish",
    "nginx",
    "apache",
    "etc",
];

/// `builtins.parseDrvName`: the version starts after the first `-` that is followed by a
/// character that is not a letter (Nix: `!isalpha(s[i+1])`), so `python3.11-requests-2.31.0` is
/// (`python3.11-requests`, `2.31.0`) and `hello` is (`hello`, ``).
pub fn parse_drv_name(name: &str) -> (&str, &str) {
    let b = name.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && i + 1 < b.len() && !b[i + 1].is_ascii_alphabetic() {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

/// A name without its version numbers: [`parse_drv_name`]'s pname, and the version's components
/// (split at `-`) that do not start with a digit, joined by `-`. A derivation keeps its shape
/// across versions (`linux-6.6.0-shrunk` and `linux-6.6.1-shrunk` are both `linux`+`shrunk`)
/// while a package named like its prefix keeps its own (`linux-6.6.1` is `linux`+``).
pub fn name_shape(name: &str) -> String {
    let (pname, version) = parse_drv_name(name);
    let words: Vec<&str> = version
        .split('-')
        .filter(|w| w.chars().next().is_some_and(|c| !c.is_ascii_digit()))
        .collect();
    if words.is_empty() {
        pname.to_string()
    } else {
        format!("{pname}+{}", words.join("-"))
    }
}

/// A package as it appears in a closure: its name, version, and which output this path is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageName {
    pub pname: String,
    pub version: String,
    pub output: String,
}

impl PackageName {
    /// Split a path name whose output is known (the derivation is at hand): `drv_name` is the
    /// derivation's name, `output` the output's name (`out` adds no suffix).
    pub fn from_drv(drv_name: &str, output: &str) -> Self {
        let (pname, version) = parse_drv_name(drv_name);
        PackageName {
            pname: pname.to_string(),
            version: version.to_string(),
            output: output.to_string(),
        }
    }

    /// Split a store path name without its derivation: a trailing `-<known output>` is taken for
    /// the output when the name has a version before it (`gcc-13.2.0-lib`) or when stripping it
    /// still leaves a name (`util-linux-bin`: the version-less case is rarer but common enough in
    /// nixpkgs for `-man`/`-dev`).
    pub fn from_path_name(name: &str) -> Self {
        let (pname, version) = parse_drv_name(name);
        if !version.is_empty() {
            if let Some((v, o)) = version.rsplit_once('-') {
                if KNOWN_OUTPUTS.contains(&o) && !v.is_empty() {
                    return PackageName::new(pname, v, o);
                }
            }
            return PackageName::new(pname, version, "out");
        }
        if let Some((p, o)) = pname.rsplit_once('-') {
            if KNOWN_OUTPUTS.contains(&o) && !p.is_empty() {
                return PackageName::new(p, "", o);
            }
        }
        PackageName::new(pname, "", "out")
    }

    fn new(pname: &str, version: &str, output: &str) -> Self {
        PackageName {
            pname: pname.to_string(),
            version: version.to_string(),
            output: output.to_string(),
        }
    }

    /// The name the user types (`--non-vital`, `--together`) and the plan shows: the pname.
    pub fn display_name(&self) -> &str {
        &self.pname
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pname)?;
        if !self.version.is_empty() {
            write!(f, "-{}", self.version)?;
        }
        if self.output != "out" {
            write!(f, " ({})", self.output)?;
        }
        Ok(())
    }
}

/// Compare versions the way `builtins.compareVersions` does: split into components at `.` and
/// `-` and at digit/non-digit boundaries; numbers compare numerically, strings lexically, `pre`
/// sorts before everything, an empty component (a missing one) after strings but before numbers.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let (mut ia, mut ib) = (components(a), components(b));
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Equal,
            (x, y) => {
                let (x, y) = (x.unwrap_or(""), y.unwrap_or(""));
                if component_less(x, y) {
                    return Less;
                }
                if component_less(y, x) {
                    return Greater;
                }
            }
        }
    }
}

fn components(s: &str) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && (b[i] == b'.' || b[i] == b'-') {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        let digit = b[i].is_ascii_digit();
        while i < b.len() && b[i] != b'.' && b[i] != b'-' && b[i].is_ascii_digit() == digit {
            i += 1;
        }
        Some(&s[start..i])
    })
}

/// Nix's `componentsLT`.
fn component_less(c1: &str, c2: &str) -> bool {
    let n1 = c1.parse::<u64>().ok().filter(|_| !c1.is_empty());
    let n2 = c2.parse::<u64>().ok().filter(|_| !c2.is_empty());
    match (n1, n2) {
        (Some(a), Some(b)) => a < b,
        _ if c1.is_empty() && n2.is_some() => true,
        _ if c1 == "pre" && c2 != "pre" => true,
        _ if c2 == "pre" => false,
        (Some(_), _) => false,
        (_, Some(_)) => true,
        _ => c1 < c2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_shape_drops_version_numbers_only() {
        assert_eq!(name_shape("linux-6.6.1-shrunk"), "linux+shrunk");
        assert_eq!(name_shape("linux-6.6.0-shrunk"), "linux+shrunk");
        assert_eq!(name_shape("linux-6.6.1"), "linux");
        assert_eq!(
            name_shape("linux-6.6.1-modules-shrunk"),
            "linux+modules-shrunk"
        );
        assert_eq!(name_shape("initrd-linux-6.6.1"), "initrd-linux");
        assert_eq!(name_shape("glibc-2.39-52"), "glibc");
        assert_eq!(name_shape("etc-metadata.erofs"), "etc-metadata.erofs");
        assert_eq!(name_shape("cfg17.conf"), "cfg17.conf");
    }
    use std::cmp::Ordering::*;

    fn split(n: &str) -> (String, String, String) {
        let p = PackageName::from_path_name(n);
        (p.pname, p.version, p.output)
    }

    fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.into(), b.into(), c.into())
    }

    #[test]
    fn parse_drv_name_like_nix() {
        assert_eq!(parse_drv_name("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(
            parse_drv_name("python3.11-requests-2.31.0"),
            ("python3.11-requests", "2.31.0")
        );
        assert_eq!(parse_drv_name("nix-2.18.1"), ("nix", "2.18.1"));
        assert_eq!(parse_drv_name("system-path"), ("system-path", ""));
        assert_eq!(parse_drv_name("hello"), ("hello", ""));
        assert_eq!(parse_drv_name("hello-"), ("hello-", ""));
        // Not a letter, so not only digits: Nix splits here too.
        assert_eq!(parse_drv_name("foo-_bar"), ("foo", "_bar"));
        assert_eq!(
            parse_drv_name("nixos-system-web-24.05.20240101.abcdef"),
            ("nixos-system-web", "24.05.20240101.abcdef")
        );
    }

    #[test]
    fn real_nixpkgs_names() {
        assert_eq!(
            split("python3.11-requests-2.31.0"),
            t("python3.11-requests", "2.31.0", "out")
        );
        assert_eq!(split("linux-6.6.1-modules"), t("linux", "6.6.1", "modules"));
        assert_eq!(split("gcc-13.2.0-lib"), t("gcc", "13.2.0", "lib"));
        assert_eq!(split("util-linux-2.39-bin"), t("util-linux", "2.39", "bin"));
        assert_eq!(split("openssl-3.0.12-man"), t("openssl", "3.0.12", "man"));
        assert_eq!(split("glibc-2.38-27"), t("glibc", "2.38-27", "out"));
        assert_eq!(split("glibc-2.38-27-bin"), t("glibc", "2.38-27", "bin"));
        assert_eq!(split("systemd-254.6"), t("systemd", "254.6", "out"));
        assert_eq!(split("etc"), t("etc", "", "out"));
        assert_eq!(
            split("unit-sshd.service"),
            t("unit-sshd.service", "", "out")
        );
        assert_eq!(split("xz-5.4.4-dev"), t("xz", "5.4.4", "dev"));
        assert_eq!(
            split("firefox-unwrapped-120.0"),
            t("firefox-unwrapped", "120.0", "out")
        );
        assert_eq!(split("libxml2-2.11.5-py"), t("libxml2", "2.11.5", "py"));
        // A release candidate is a version, not an output.
        assert_eq!(split("foo-1.0-rc1"), t("foo", "1.0-rc1", "out"));
    }

    #[test]
    fn from_drv_uses_the_known_output() {
        let p = PackageName::from_drv("gcc-13.2.0", "lib");
        assert_eq!(
            (p.pname.as_str(), p.version.as_str(), p.output.as_str()),
            ("gcc", "13.2.0", "lib")
        );
        assert_eq!(p.to_string(), "gcc-13.2.0 (lib)");
        assert_eq!(
            PackageName::from_drv("hello-2.12", "out").to_string(),
            "hello-2.12"
        );
    }

    #[test]
    fn versions_compare_like_nix() {
        assert_eq!(compare_versions("1.0", "2.3"), Less);
        assert_eq!(compare_versions("2.1", "2.3"), Less);
        assert_eq!(compare_versions("2.3", "2.3"), Equal);
        assert_eq!(compare_versions("2.5", "2.3"), Greater);
        assert_eq!(compare_versions("3.1", "2.3"), Greater);
        assert_eq!(compare_versions("2.3.1", "2.3"), Greater);
        assert_eq!(compare_versions("2.3.1", "2.3a"), Greater);
        assert_eq!(compare_versions("2.3pre1", "2.3"), Less);
        assert_eq!(compare_versions("2.3pre3", "2.3pre12"), Less);
        assert_eq!(compare_versions("2.3a", "2.3c"), Less);
        assert_eq!(compare_versions("2.3pre1", "2.3c"), Less);
        assert_eq!(compare_versions("6.6.10", "6.6.9"), Greater);
    }
}
