//! What stepwise writes for `nix derivation add`, checked against what real Nix 2.26 and 2.34
//! print for the same derivation (`nix derivation show`, recorded by
//! `tests/fixtures/nix-output/record.sh`), and the recorded `derivation add` round trips.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stepwise::drv::{self, StoreDir};
use stepwise::effects::nix::add_derivation::{derivation_json, JsonShape};
use stepwise::effects::store::NixInfo;

fn recorded(version: &str, file: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nix-output")
        .join(version)
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn shape_of(version: (u32, u32, u32)) -> JsonShape {
    let nix = NixInfo {
        implementation: "Nix".into(),
        version,
        has_derivation_add: true,
    };
    JsonShape::for_nix(&nix).unwrap()
}

/// The one derivation `nix derivation show` printed: 2.26 keys it by its full path, 2.34 wraps
/// the map in `{"derivations": …, "version": 4}` and keys it by base name.
fn shown(version: &str) -> Value {
    let v: Value = serde_json::from_str(&recorded(version, "derivation-show.json")).unwrap();
    let map = v.get("derivations").unwrap_or(&v).as_object().unwrap();
    assert_eq!(map.len(), 1, "{v}");
    map.values().next().unwrap().clone()
}

fn check(version: &str, numbers: (u32, u32, u32)) {
    let store_dir = StoreDir::new("/nix/store").unwrap();
    let aterm = recorded(version, "b.drv");
    let d = drv::parse(aterm.as_bytes(), &store_dir).unwrap();
    let ours = derivation_json(shape_of(numbers), &store_dir, "b-1.0", &d).unwrap();
    assert_eq!(ours, shown(version), "Nix {version}");
}

#[test]
fn derivation_json_is_what_nix_2_26_shows() {
    check("2.26.3", (2, 26, 3));
}

#[test]
fn derivation_json_is_what_nix_2_34_shows() {
    check("2.34.8", (2, 34, 8));
}

#[test]
fn shown_json_added_back_gives_the_same_path() {
    for version in ["2.26.3", "2.34.8"] {
        let paths = recorded(version, "paths");
        let a_drv = paths.split_whitespace().next().unwrap();
        assert_eq!(
            recorded(version, "derivation-add.out").trim(),
            a_drv,
            "{version}"
        );
    }
}
