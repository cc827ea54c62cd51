//! Golden derivations written by real Nix (2.8 here): for every `.drv` in the closure of the
//! shapes in `tests/fixtures/drv/shapes.nix`, the bytes round-trip exactly, and the `.drv` path
//! and every output path we compute equal Nix's. Once against the checked-in copies (produced by
//! Nix, see `regenerate_checked_in_fixtures`), once against a fresh instantiation.

mod drv_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use drv_support::{fixtures, PrivateStore, Shape};
use stepwise::cli::drv_inspect::FsDrvSource;
use stepwise::drv::{self, Derivation, Hasher, StoreDir, StorePath};

/// Check every derivation reachable from `shapes`, reading files from `root`. Returns them.
fn check_closure(
    store_dir: &StoreDir,
    root: &Path,
    shapes: &BTreeMap<String, Shape>,
) -> BTreeMap<StorePath, Derivation> {
    let source = FsDrvSource {
        store_dir: store_dir.clone(),
        root: root.to_path_buf(),
    };
    let mut hasher = Hasher::new(store_dir.clone(), &source);
    let mut seen = BTreeMap::new();
    let mut todo: Vec<StorePath> = shapes.values().map(|s| s.drv_path.clone()).collect();
    while let Some(p) = todo.pop() {
        if seen.contains_key(&p) {
            continue;
        }
        let bytes = std::fs::read(root.join(p.to_string())).unwrap();
        let d = drv::parse(&bytes, store_dir).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(
            drv::to_aterm(&d, store_dir) == bytes,
            "{p}: writing the parsed derivation does not give Nix's bytes back"
        );
        let name = p.derivation_name().unwrap();
        assert_eq!(drv::drv_path(store_dir, name, &d), p, "{p}: .drv path");
        drv::validate(&d, store_dir, name).unwrap();
        let computed = hasher.output_paths(&d, name).unwrap();
        let recorded: BTreeMap<String, StorePath> = d
            .outputs
            .iter()
            .map(|(o, v)| (o.clone(), v.path.clone().unwrap()))
            .collect();
        assert_eq!(computed, recorded, "{p}: output paths");
        // Recomputing from blanked outputs (what a rewrite does) gives the same derivation.
        let mut blank = d.clone();
        hasher.fill_outputs(&mut blank, name).unwrap();
        assert_eq!(blank, d, "{p}: fill_outputs");
        todo.extend(d.input_drvs.keys().cloned());
        seen.insert(p, d);
    }
    for (n, s) in shapes {
        let d = &seen[&s.drv_path];
        let outs: BTreeMap<String, StorePath> = d
            .outputs
            .iter()
            .map(|(o, v)| (o.clone(), v.path.clone().unwrap()))
            .collect();
        assert_eq!(outs, s.outputs, "{n}: outputs as Nix reported them");
    }
    check_shapes_cover_what_they_claim(store_dir, &source, shapes, &seen);
    seen
}

/// The fixtures must really contain the cases the issue lists; a fixture that silently lost
/// one would make the test above weaker without failing.
fn check_shapes_cover_what_they_claim(
    store_dir: &StoreDir,
    source: &FsDrvSource,
    shapes: &BTreeMap<String, Shape>,
    all: &BTreeMap<StorePath, Derivation>,
) {
    let get = |n: &str| &all[&shapes[n].drv_path];
    assert_eq!(get("multi").outputs.len(), 4);
    for (n, algo) in [
        ("fixedFlatSha256", "sha256"),
        ("fixedFlatSha1", "sha1"),
        ("fixedFlatMd5", "md5"),
        ("fixedFlatSha512", "sha512"),
        ("fixedRecSha256", "r:sha256"),
        ("fixedRecSha1", "r:sha1"),
    ] {
        assert!(get(n).is_fixed_output(), "{n}");
        assert_eq!(get(n).outputs["out"].hash_algo, algo, "{n}");
    }
    assert!(get("structured").env_get("__json").is_some());
    assert!(get("passAsFile").env_get("passAsFile").is_some());
    assert!(std::str::from_utf8(get("nonUtf8").env_get("latin").unwrap()).is_err());
    assert!(get("nonUtf8")
        .env
        .keys()
        .any(|k| std::str::from_utf8(k).is_err()));
    assert!(get("nonUtf8")
        .args
        .iter()
        .any(|a| a.as_slice() == drv_support::LATIN1));
    assert!(get("escapes")
        .args
        .iter()
        .any(|a| a.contains(&b'\r') && a.starts_with(b"cr")));
    assert!(
        std::str::from_utf8(get("unicode").env_get("greeting").unwrap())
            .unwrap()
            .contains('☃')
    );
    assert!(!get("withSources").input_srcs.is_empty());

    // Deep chain: 31 derivations, each the only input of the next.
    let mut depth = 0;
    let mut p = shapes["chain30"].drv_path.clone();
    loop {
        depth += 1;
        match all[&p].input_drvs.keys().next() {
            Some(next) => p = next.clone(),
            None => break,
        }
    }
    assert_eq!(depth, 31);

    // Two fixed-output inputs with the same name and hash: different .drv files, one output
    // path, one hash modulo; the consumer's hash joins them under one key.
    let (a, b) = (&shapes["twinA"], &shapes["twinB"]);
    assert_ne!(a.drv_path, b.drv_path);
    assert_eq!(a.outputs["out"], b.outputs["out"]);
    let mut hasher = Hasher::new(store_dir.clone(), source);
    let ha = hasher.path_hash(&a.drv_path).unwrap().clone();
    let hb = hasher.path_hash(&b.drv_path).unwrap().clone();
    assert_eq!(ha, hb);
    // A derivation remembered in memory hashes like the one read from the source.
    let mut fresh = Hasher::new(store_dir.clone(), std::collections::HashMap::new());
    let remembered = fresh
        .remember(a.drv_path.clone(), &all[&a.drv_path])
        .unwrap();
    assert_eq!(remembered, &ha);
    let twins = get("twins");
    let keys: BTreeSet<&StorePath> = twins.input_drvs.keys().collect();
    assert_eq!(keys, BTreeSet::from([&a.drv_path, &b.drv_path]));
}

#[test]
fn golden_fixtures_checked_in() {
    let dir = fixtures().join("golden");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let store_dir = StoreDir::new(manifest.store_dir.clone()).unwrap();
    let shapes = manifest.shapes(&store_dir);
    let checked = check_closure(&store_dir, &dir, &shapes);
    // Every checked-in file is in the closure, and vice versa.
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".drv"))
        .collect();
    let closure: BTreeSet<String> = checked.keys().map(|p| p.to_string()).collect();
    assert_eq!(files, closure);
}

#[test]
fn golden_regenerated_by_real_nix() {
    let store = PrivateStore::new();
    let shapes = store.instantiate_shapes();
    let checked = check_closure(
        &store.store_dir,
        Path::new(store.store_dir.as_str()),
        &shapes,
    );
    // The checked-in fixtures are the same derivations (store dir aside): same count.
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(fixtures().join("golden/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(checked.len(), manifest.files.len());
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    store_dir: String,
    nix_version: String,
    shapes: BTreeMap<String, ManifestShape>,
    files: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestShape {
    drv_path: String,
    outputs: BTreeMap<String, String>,
}

impl Manifest {
    fn shapes(&self, sd: &StoreDir) -> BTreeMap<String, Shape> {
        self.shapes
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    Shape {
                        drv_path: sd.parse(&s.drv_path).unwrap(),
                        outputs: s
                            .outputs
                            .iter()
                            .map(|(o, p)| (o.clone(), sd.parse(p).unwrap()))
                            .collect(),
                    },
                )
            })
            .collect()
    }
}

/// Writes `tests/fixtures/drv/golden/`: run by hand after changing shapes.nix
/// (`cargo test --test drv_golden -- --ignored`). The store dir is fixed so the files are stable.
#[test]
#[ignore]
fn regenerate_checked_in_fixtures() {
    let root = PathBuf::from("/tmp/stepwise-drv-fixtures");
    let _ = std::fs::remove_dir_all(&root);
    let store = PrivateStore::at(&root);
    let shapes = store.instantiate_shapes();
    let dir = fixtures().join("golden");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = BTreeSet::new();
    let mut todo: Vec<StorePath> = shapes.values().map(|s| s.drv_path.clone()).collect();
    while let Some(p) = todo.pop() {
        if !files.insert(p.to_string()) {
            continue;
        }
        let bytes = std::fs::read(store.path(&p)).unwrap();
        std::fs::write(dir.join(p.to_string()), &bytes).unwrap();
        todo.extend(
            drv::parse(&bytes, &store.store_dir)
                .unwrap()
                .input_drvs
                .into_keys(),
        );
    }
    let sd = &store.store_dir;
    let manifest = Manifest {
        store_dir: sd.as_str().to_string(),
        nix_version: store.ok("nix-store", &["--version"]).trim().to_string(),
        shapes: shapes
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    ManifestShape {
                        drv_path: sd.display(&s.drv_path),
                        outputs: s
                            .outputs
                            .iter()
                            .map(|(o, p)| (o.clone(), sd.display(p)))
                            .collect(),
                    },
                )
            })
            .collect(),
        files: files.into_iter().collect(),
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}
