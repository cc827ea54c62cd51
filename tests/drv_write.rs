//! Writing derivations back into a real store (private, whichever Nix is on PATH), the rewrite
//! of doc/design.md, "Rewriting glue",
//! realised by Nix, and `stepwise drv inspect` driven as a binary.

mod drv_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use drv_support::{PrivateStore, Shape};
use stepwise::cli::drv_inspect::FsDrvSource;
use stepwise::drv::{self, Derivation, Hasher, StorePath};
use stepwise::effects::nix::add_derivation::{
    choose_route, write_derivation, write_derivation_via, JsonShape, Route, WriteError,
};
use stepwise::effects::nix::argv::Invocation;
use stepwise::effects::store::NixInfo;

/// What the running Nix is, from `nix --version` ("nix (Nix) 2.8.0", "nix (Lix, like Nix) 2.91.1").
fn nix_info(store: &PrivateStore) -> NixInfo {
    let v = store.ok("nix", &["--version"]);
    let implementation = if v.contains("Lix") { "Lix" } else { "Nix" };
    let num = v.split_whitespace().last().unwrap();
    let mut it = num
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let version = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    let has_derivation_add = store
        .cmd("nix")
        .args(["derivation", "add", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    NixInfo {
        implementation: implementation.into(),
        version,
        has_derivation_add,
    }
}

fn read(store: &PrivateStore, p: &StorePath) -> Derivation {
    drv::parse(&std::fs::read(store.path(p)).unwrap(), &store.store_dir).unwrap()
}

/// Every `.drv` reachable from the shapes, inputs before the derivations using them.
fn topo(store: &PrivateStore, shapes: &BTreeMap<String, Shape>) -> Vec<StorePath> {
    fn visit(
        store: &PrivateStore,
        p: &StorePath,
        seen: &mut BTreeSet<StorePath>,
        out: &mut Vec<StorePath>,
    ) {
        if !seen.insert(p.clone()) {
            return;
        }
        for i in read(store, p).input_drvs.keys() {
            visit(store, i, seen, out);
        }
        out.push(p.clone());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in shapes.values() {
        visit(store, &s.drv_path, &mut seen, &mut out);
    }
    out
}

/// Every writer the running Nix offers: the text object always, `nix derivation add` from 2.15.
fn routes(nix: &NixInfo) -> Vec<Route> {
    let mut r = vec![Route::TextObject];
    if let Some(shape) = JsonShape::for_nix(nix) {
        r.push(Route::DerivationAdd(shape));
    } else {
        eprintln!(
            "note: {:?} {:?} has no `nix derivation add`; its JSON is tested against recorded \
             shapes in drv_format.rs",
            nix.implementation, nix.version
        );
    }
    r
}

#[test]
fn every_shape_is_written_back_to_its_own_path() {
    let store = PrivateStore::new();
    let nix = nix_info(&store);
    let shapes = store.instantiate_shapes();
    let order = topo(&store, &shapes);
    let originals: BTreeMap<StorePath, (Vec<u8>, Derivation)> = order
        .iter()
        .map(|p| {
            let b = std::fs::read(store.path(p)).unwrap();
            let d = drv::parse(&b, &store.store_dir).unwrap();
            (p.clone(), (b, d))
        })
        .collect();
    // What the previous route's build left: with `keep-derivations` (the default) a valid output
    // keeps its .drv alive, and Nix 2.26+ refuses to delete a .drv whose outputs stay (Nix 2.8
    // never gets here: it has one route, so its delete comes before any build).
    let built = |store: &PrivateStore| -> Vec<String> {
        originals
            .values()
            .flat_map(|(_, d)| d.outputs.values().filter_map(|o| o.path.clone()))
            .filter(|o| store.path(o).exists())
            .map(|o| store.store_dir.display(&o))
            .collect()
    };
    for route in routes(&nix) {
        // Delete every .drv (sources stay) and what the last route built, then write the .drvs
        // back, inputs first.
        let mut args = vec!["--delete".to_string()];
        args.extend(order.iter().map(|p| store.store_dir.display(p)));
        args.extend(built(&store));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        store.ok("nix-store", &args);
        assert!(!store.path(&order[0]).exists());
        for p in &order {
            let (bytes, d) = &originals[p];
            if matches!(route, Route::DerivationAdd(s) if stepwise::effects::nix::add_derivation::json_representable(d, s).is_err())
            {
                // Non-UTF-8 cannot travel as JSON: the text route writes it.
                let got = write_derivation_via(
                    Route::TextObject,
                    |inv: &Invocation| store.run(inv),
                    &store.store_dir,
                    p.derivation_name().unwrap(),
                    d,
                )
                .unwrap();
                assert_eq!(&got, p);
                continue;
            }
            let got = write_derivation_via(
                route,
                |inv: &Invocation| store.run(inv),
                &store.store_dir,
                p.derivation_name().unwrap(),
                d,
            )
            .unwrap_or_else(|e| panic!("{route:?} {p}: {e}"));
            assert_eq!(&got, p, "{route:?}");
            assert_eq!(
                &std::fs::read(store.path(p)).unwrap(),
                bytes,
                "{route:?} {p}"
            );
        }
        // Nix considers them valid derivations and can build one.
        let consumer = store.store_dir.display(&shapes["consumer"].drv_path);
        store.ok("nix-store", &["--realise", &consumer]);
    }
    // The route chosen for this Nix.
    let simple = &originals[&shapes["simple"].drv_path].1;
    let nonutf8 = &originals[&shapes["nonUtf8"].drv_path].1;
    assert_eq!(choose_route(&nix, nonutf8), Route::TextObject);
    if !nix.has_derivation_add {
        assert_eq!(choose_route(&nix, simple), Route::TextObject);
    }
}

#[test]
fn a_different_path_from_nix_is_refused() {
    let store = PrivateStore::new();
    let shapes = store.instantiate_shapes();
    let d = read(&store, &shapes["simple"].drv_path);
    let other = store.store_dir.display(&shapes["unicode"].drv_path);
    let nix = NixInfo {
        implementation: "Nix".into(),
        version: (2, 8, 0),
        has_derivation_add: false,
    };
    // A runner that answers with another path: stepwise refuses.
    let r = write_derivation(
        |_: &Invocation| Ok::<_, String>(format!("\"{other}\"\n").into_bytes()),
        &nix,
        &store.store_dir,
        "simple",
        &d,
    );
    assert!(matches!(r, Err(WriteError::Mismatch { .. })), "{r:?}");
    // Real Nix refuses a derivation whose output paths do not match its name.
    let r = write_derivation(
        |inv: &Invocation| store.run(inv),
        &nix,
        &store.store_dir,
        "renamed",
        &d,
    );
    match r {
        Err(WriteError::Run(e)) => assert!(e.contains("incorrect output"), "{e}"),
        other => panic!("expected Nix to refuse: {other:?}"),
    }
}

/// Design §3: replace an input derivation by an existing output path given as an input source,
/// rewrite the path strings, recompute, write, realise, and check the output's references.
#[test]
fn rewritten_derivation_realises_with_the_replacement_as_reference() {
    let store = PrivateStore::new();
    let nix = nix_info(&store);
    let shapes = store.instantiate_shapes();
    let sd = store.store_dir.clone();
    let consumer_path = &shapes["consumer"].drv_path;
    let unicode = &shapes["unicode"];
    let simple = &shapes["simple"];
    // The replacement must be valid (Nix 2.8 refuses a .drv referencing invalid paths).
    store.ok("nix-store", &["--realise", &sd.display(&simple.drv_path)]);

    let original = read(&store, consumer_path);
    let old_out = sd.display(&unicode.outputs["out"]);
    let new_out = sd.display(&simple.outputs["out"]);
    for route in routes(&nix) {
        let mut d = original.clone();
        assert!(d.input_drvs.remove(&unicode.drv_path).is_some());
        d.input_srcs.insert(simple.outputs["out"].clone());
        assert_eq!(d.replace_bytes(old_out.as_bytes(), new_out.as_bytes()), 2);
        let mut hasher = Hasher::new(sd.clone(), FsDrvSource::new(sd.clone()));
        hasher.fill_outputs(&mut d, "consumer").unwrap();
        let new_output = d.outputs["out"].path.clone().unwrap();
        assert_ne!(new_output, shapes["consumer"].outputs["out"]);

        let written = write_derivation_via(
            route,
            |inv: &Invocation| store.run(inv),
            &sd,
            "consumer",
            &d,
        )
        .unwrap_or_else(|e| panic!("{route:?}: {e}"));
        assert_eq!(written, drv::drv_path(&sd, "consumer", &d));

        let built = store.ok("nix-store", &["--realise", &sd.display(&written)]);
        assert_eq!(built.trim(), sd.display(&new_output));
        let refs: BTreeSet<String> = store
            .ok("nix-store", &["-q", "--references", built.trim()])
            .lines()
            .map(str::to_string)
            .collect();
        assert!(refs.contains(&new_out), "{refs:?}");
        assert!(!refs.contains(&old_out), "{refs:?}");
        let contents = std::fs::read(built.trim()).unwrap();
        assert!(
            contents.starts_with(b"simple\n"),
            "the replacement was read by the build"
        );
        // A second write of the same derivation is idempotent.
        let again = write_derivation_via(
            route,
            |inv: &Invocation| store.run(inv),
            &sd,
            "consumer",
            &d,
        )
        .unwrap();
        assert_eq!(again, written);
    }
}

fn stepwise(store: &PrivateStore) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    c.env("NIX_STORE_DIR", store.store_dir.as_str());
    c
}

#[test]
fn inspect_reports_paths_and_escapes() {
    let store = PrivateStore::new();
    let shapes = store.instantiate_shapes();
    for name in ["consumer", "nonUtf8", "multi", "fixedRecSha1", "structured"] {
        let s = &shapes[name];
        let file = store.path(&s.drv_path);
        let out = stepwise(&store)
            .args(["--json", "drv", "inspect"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One versioned document.
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["stepwise"], "drv-inspect");
        assert_eq!(j["drvPath"], store.store_dir.display(&s.drv_path));
        for (o, p) in &s.outputs {
            assert_eq!(j["outputs"][o]["path"], store.store_dir.display(p));
            assert_eq!(j["outputs"][o]["computedPath"], store.store_dir.display(p));
        }
        assert_eq!(j["problems"], serde_json::json!([]));
        if name == "nonUtf8" {
            assert_eq!(j["env"]["latin"], "caf\\xe9 \\xff\\xfe end");
        }

        let aterm = stepwise(&store)
            .args(["drv", "inspect", "--aterm"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(aterm.status.success());
        assert_eq!(aterm.stdout, std::fs::read(&file).unwrap());

        let human = stepwise(&store)
            .args(["drv", "inspect"])
            .arg(&file)
            .arg("--store-dir")
            .arg(store.store_dir.as_str())
            .output()
            .unwrap();
        let human = String::from_utf8(human.stdout).unwrap();
        assert!(human.contains("(at its computed path)"), "{human}");
        assert!(human.contains("(recomputed: same)"), "{human}");
    }
}

#[test]
fn inspect_refuses_malformed_files_with_exit_2() {
    let store = PrivateStore::new();
    let shapes = store.instantiate_shapes();
    let good = std::fs::read(store.path(&shapes["escapes"].drv_path)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 3].to_vec(), "end of file"),
        ("trailing", [&good[..], b"\n"].concat(), "trailing"),
        (
            "bad-escape",
            String::from_utf8_lossy(&good)
                .replacen("\\n", "\\z", 1)
                .into_bytes(),
            "bad escape",
        ),
    ];
    for (what, bytes, needle) in cases {
        let f = dir.path().join(format!("{what}.drv"));
        std::fs::write(&f, &bytes).unwrap();
        let out = stepwise(&store)
            .args(["drv", "inspect"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("byte "), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(err.contains("expected"), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}");
    }
    // A store dir that does not match the file's paths is an error too, naming the path.
    let out = stepwise(&store)
        .args(["drv", "inspect", "--store-dir", "/nix/store"])
        .arg(store.path(&shapes["consumer"].drv_path))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside the store directory"));
}
