//! The store contract, written once and run against both implementations: `NixCli` on a real
//! Nix store (a test bed on a 32 MiB tmpfs with a file:// cache) and `ModelStore`. Both are set
//! up from one list of derivations; the model's `.drv` paths must equal the ones real Nix
//! instantiates, so the two cannot drift apart unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use stepwise::drv::{self, StoreDir, StorePath};
use stepwise::effects::model_store::{nar_size_of_file, DrvSpec, ModelStore};
use stepwise::effects::nix::{NixCli, NixCliConfig};
use stepwise::effects::store::{
    Action, Activated, RealiseError, RealiseEvent, Store, StoreError, System, TargetSpec,
};
use stepwise_testbed::{nix_str, require_root, Bed, Disk};

const DISK_MIB: u64 = 32;
const HUGE: u64 = 48 << 20;
const EVAL_ERROR: &str = "stepwise-contract: this attribute does not evaluate";
const BROKEN_LOG: &str = "broken-1.0: going to fail";

/// One derivation of the contract fixture, as both stores get it.
struct Spec {
    attr: &'static str,
    name: &'static str,
    script: String,
    /// env var → attribute of an input (its `out`).
    deps: Vec<(&'static str, &'static str)>,
    outputs: Vec<(&'static str, u64)>,
    extra_env: Vec<(&'static str, String)>,
    fail_log: Option<&'static str>,
    system: bool,
}

fn spec(attr: &'static str, name: &'static str, script: &str, size: u64) -> Spec {
    Spec {
        attr,
        name,
        script: script.to_string(),
        deps: vec![],
        outputs: vec![("out", size)],
        extra_env: vec![],
        fail_log: None,
        system: false,
    }
}

/// Where the system links and stepwise's directories are.
struct Places {
    current_link: PathBuf,
    booted_link: PathBuf,
    boot_file: PathBuf,
    /// `CODE [UNITS]`: how the fixture's switch-to-configuration exits (absent: 0).
    activation_exit_file: PathBuf,
    profile: PathBuf,
    roots_dir: PathBuf,
    nix_file: PathBuf,
}

fn specs(p: &Places) -> Vec<Spec> {
    // The fixture's switch-to-configuration, with NixOS's exit codes: switch/boot record the
    // boot default; exit 100 (an incompatible init) before activating; switch/test point the
    // current link here; exit 4 after it, naming the failed units as the real one does. The
    // exit code and units are read from the activation exit file.
    let switch = r#"mkdir -p $out/bin; echo $app > $out/app
cat > $out/bin/switch-to-configuration <<EOF
#!/bin/sh
case "\$1" in switch|boot) echo $out > $bootFile;; esac
[ "\$1" = boot ] && exit 0
code=0; units=
[ -e $exitFile ] && read code units < $exitFile
[ "\$code" = 100 ] && { echo 'Warning: the new NixOS configuration has an init that is incompatible with the current configuration.' >&2; exit 100; }
[ "\$code" = 0 ] || [ "\$code" = 4 ] || { echo 'activation failed' >&2; exit \$code; }
echo activating the configuration...
ln -sfn $out $currentLink
[ -n "\$units" ] && echo "warning: the following units failed: \$units" >&2
exit \$code
EOF
chmod +x $out/bin/switch-to-configuration"#;
    vec![
        spec(
            "lib",
            "lib-1.0",
            "head -c 65536 /dev/zero > $out",
            nar_size_of_file(65536),
        ),
        Spec {
            deps: vec![("lib", "lib")],
            ..spec(
                "app",
                "app-1.0",
                "(echo $lib; head -c 65536 /dev/zero) > $out",
                70_000,
            )
        },
        Spec {
            deps: vec![("lib", "lib")],
            fail_log: Some(BROKEN_LOG),
            ..spec(
                "broken",
                "broken-1.0",
                &format!("echo '{BROKEN_LOG}' >&2; exit 1"),
                0,
            )
        },
        spec(
            "huge",
            "huge-1.0",
            &format!("head -c {HUGE} /dev/zero > $out"),
            HUGE,
        ),
        Spec {
            outputs: vec![("out", 200), ("dev", 120)],
            ..spec("multi", "multi-1.0", "echo $dev > $out; echo dev > $dev", 0)
        },
        spec(
            "cached",
            "cached-1.0",
            "head -c 32768 /dev/zero > $out",
            nar_size_of_file(32768),
        ),
        Spec {
            deps: vec![("app", "app")],
            extra_env: vec![
                ("currentLink", p.current_link.display().to_string()),
                ("bootFile", p.boot_file.display().to_string()),
                ("exitFile", p.activation_exit_file.display().to_string()),
            ],
            system: true,
            ..spec("toplevel", "nixos-system-contract-1", switch, 2000)
        },
    ]
}

fn nix_text(specs: &[Spec]) -> String {
    let mut t = String::from(
        "let\n  mk = attrs: derivation ({ system = \"x86_64-linux\"; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; } // attrs);\n",
    );
    for s in specs {
        t.push_str(&format!("  {} = mk {{ name = {};", s.attr, nix_str(s.name)));
        t.push_str(&format!(" args = [ \"-c\" {} ];", nix_str(&s.script)));
        for (var, attr) in &s.deps {
            t.push_str(&format!(" {var} = \"${{{attr}}}\";"));
        }
        for (k, v) in &s.extra_env {
            t.push_str(&format!(" {k} = {};", nix_str(v)));
        }
        if s.outputs.len() > 1 {
            let names: Vec<String> = s.outputs.iter().map(|(o, _)| nix_str(o)).collect();
            t.push_str(&format!(" outputs = [ {} ];", names.join(" ")));
        }
        t.push_str(" };\n");
    }
    t.push_str("in {\n");
    for s in specs {
        t.push_str(&format!("  inherit {};\n", s.attr));
    }
    t.push_str("  system = { config.system.build.toplevel = toplevel; };\n");
    t.push_str(&format!(
        "  evalError = throw {};\n}}\n",
        nix_str(EVAL_ERROR)
    ));
    t
}

/// Makes the toplevel's switch-to-configuration exit with a code, naming failed units.
type SetActivationExit = dyn Fn(i32, &[&str]);

/// What the contract tests refer to, the same for both stores.
struct Fx {
    store_dir: StoreDir,
    drvs: BTreeMap<&'static str, StorePath>,
    places: Places,
    /// Make the toplevel's switch-to-configuration exit with this code, naming these units.
    set_activation_exit: Box<SetActivationExit>,
}

impl Fx {
    fn drv(&self, attr: &str) -> &StorePath {
        &self.drvs[attr]
    }
    fn root(&self, name: &str) -> PathBuf {
        self.places.roots_dir.join(name)
    }
    fn target(&self, attr: &str) -> TargetSpec {
        TargetSpec::File {
            file: self.places.nix_file.clone(),
            attr: Some(attr.to_string()),
        }
    }
}

fn places_in(root: &Path, current: PathBuf, booted: PathBuf, profile: PathBuf) -> Places {
    Places {
        current_link: current,
        booted_link: booted,
        boot_file: root.join("run/boot-default"),
        activation_exit_file: root.join("run/activation-exit"),
        profile,
        roots_dir: root.join("stepwise/gcroots"),
        nix_file: root.join("contract.nix"),
    }
}

/// The model, set up from the specs. `store_dir` and `places` as the real bed's, so that paths
/// can be compared.
fn model_at(store_dir: StoreDir, places: Places) -> (ModelStore, Fx) {
    let s = ModelStore::new(store_dir.clone(), DISK_MIB << 20);
    s.set_system_links(&places.current_link, &places.booted_link);
    let mut drvs = BTreeMap::new();
    let mut outs: BTreeMap<&str, StorePath> = BTreeMap::new();
    for sp in specs(&places) {
        let mut d = DrvSpec {
            name: sp.name.to_string(),
            outputs: sp
                .outputs
                .iter()
                .map(|(o, n)| (o.to_string(), *n))
                .collect(),
            args: vec!["-c".into(), sp.script.clone()],
            system: sp.system,
            ..Default::default()
        };
        d = d.env("PATH", "/usr/bin:/bin");
        for (var, attr) in &sp.deps {
            d = d
                .input(&drvs[attr], &["out"])
                .env(var, &store_dir.display(&outs[attr]));
        }
        for (k, v) in &sp.extra_env {
            d = d.env(k, v);
        }
        if let Some(log) = sp.fail_log {
            d = d.failing(log);
        }
        let p = s.add_derivation(&d);
        outs.insert(sp.attr, s.outputs_of(&p)["out"].clone());
        drvs.insert(sp.attr, p);
    }
    s.make_substitutable(&drvs["cached"]);
    let (m, top) = (s.clone(), outs["toplevel"].clone());
    let fx = Fx {
        store_dir,
        drvs,
        places,
        set_activation_exit: Box::new(move |code, units| m.set_activation_exit(&top, code, units)),
    };
    s.set_target(&fx.target("toplevel"), Ok(fx.drv("toplevel").clone()));
    s.set_target(&fx.target("system"), Ok(fx.drv("toplevel").clone()));
    s.set_target(&fx.target("evalError"), Err(format!("error: {EVAL_ERROR}")));
    (s, fx)
}

fn model() -> (ModelStore, Fx) {
    let root = Path::new("/contract");
    model_at(
        StoreDir::new("/contract/nix/store").unwrap(),
        places_in(
            root,
            root.join("run/current-system"),
            root.join("run/booted-system"),
            root.join("nix/var/nix/profiles/system"),
        ),
    )
}

/// A bed on a tmpfs with a file:// cache holding `cached`'s output, and the fixture instantiated.
struct Real {
    bed: Bed,
    _cache: tempfile::TempDir,
}

fn real() -> Option<(NixCli, Fx, Real)> {
    if !require_root("the store contract on a real Nix store") {
        return None;
    }
    let cache = tempfile::tempdir().unwrap();
    let bed = Bed::create(Disk::TmpfsMib(DISK_MIB), Some(cache.path())).unwrap();
    let root = bed.root().to_path_buf();
    let places = places_in(
        &root,
        bed.current_system_link(),
        bed.booted_system_link(),
        bed.profile(),
    );
    let specs = specs(&places);
    std::fs::write(&places.nix_file, nix_text(&specs)).unwrap();
    let mut drvs = BTreeMap::new();
    for sp in &specs {
        let d = bed.instantiate(&places.nix_file, Some(sp.attr)).unwrap();
        let d = StoreDir::new(bed.store_dir())
            .unwrap()
            .parse(d.trim())
            .unwrap();
        drvs.insert(sp.attr, d);
    }
    // `cached` is in the cache only.
    let cached_out = bed.realise(&[bed.store_dir() + "/" + &drvs["cached"].to_string()]);
    let cached_out = cached_out.unwrap();
    bed.copy_to_cache(cache.path(), &cached_out).unwrap();
    let st = bed
        .command("nix-store")
        .arg("--delete")
        .args(&cached_out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let cli = NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .unwrap();
    let exit_file = places.activation_exit_file.clone();
    let fx = Fx {
        store_dir: StoreDir::new(bed.store_dir()).unwrap(),
        drvs,
        places,
        set_activation_exit: Box::new(move |code, units| {
            std::fs::write(&exit_file, format!("{code} {}\n", units.join(", "))).unwrap()
        }),
    };
    Some((cli, fx, Real { bed, _cache: cache }))
}

fn out(s: &impl Store, fx: &Fx, attr: &str) -> StorePath {
    let text = s.read_file(fx.drv(attr)).unwrap();
    let d = drv::parse(&text, s.store_dir()).unwrap();
    d.outputs["out"].path.clone().unwrap()
}

fn realise(
    s: &impl Store,
    fx: &Fx,
    attr: &str,
) -> (BTreeMap<String, StorePath>, Vec<RealiseEvent>) {
    let mut events = Vec::new();
    let outs = s
        .realise(fx.drv(attr), &fx.root(attr), &mut |e| events.push(e))
        .unwrap_or_else(|e| panic!("realising {attr}: {e}"));
    (outs, events)
}

fn set(paths: &[&StorePath]) -> BTreeSet<StorePath> {
    paths.iter().map(|p| (*p).clone()).collect()
}

// ---- the contract ------------------------------------------------------------------------------

fn info_and_targets(s: &(impl Store + System), fx: &Fx) {
    assert_eq!(s.store_dir(), &fx.store_dir);
    assert!(s.nix_info().at_least(2, 8), "{:?}", s.nix_info());

    let top = fx.drv("toplevel");
    let shown = |p: &StorePath| PathBuf::from(fx.store_dir.display(p));
    assert_eq!(
        &s.resolve_target(&TargetSpec::Drv(shown(top))).unwrap(),
        top
    );
    assert_eq!(&s.resolve_target(&fx.target("system")).unwrap(), top);
    assert_eq!(&s.resolve_target(&fx.target("toplevel")).unwrap(), top);

    let e = s.resolve_target(&fx.target("evalError")).unwrap_err();
    assert!(
        matches!(&e, StoreError::Target(m) if m.contains(EVAL_ERROR)),
        "the evaluation error reaches the user intact: {e}"
    );
    let missing = StorePath::from_base_name("00000000000000000000000000000000-x.drv").unwrap();
    let e = s
        .resolve_target(&TargetSpec::Drv(shown(&missing)))
        .unwrap_err();
    assert!(matches!(e, StoreError::Target(_)), "{e}");
    let e = s
        .resolve_target(&TargetSpec::Drv(PathBuf::from("/elsewhere/x.drv")))
        .unwrap_err();
    assert!(matches!(e, StoreError::Target(_)), "{e}");

    let text = s.read_file(top).unwrap();
    let d = drv::parse(&text, s.store_dir()).unwrap();
    assert_eq!(
        drv::drv_path(s.store_dir(), "nixos-system-contract-1", &d),
        *top
    );
}

fn realise_closure_and_sizes(s: &(impl Store + System), fx: &Fx) {
    let (lib, app) = (out(s, fx, "lib"), out(s, fx, "app"));
    let before = s.space().unwrap();
    let (outs, events) = realise(s, fx, "app");
    assert_eq!(outs, BTreeMap::from([("out".to_string(), app.clone())]));
    for d in ["lib", "app"] {
        assert!(
            events.contains(&RealiseEvent::Building(fx.drv(d).clone())),
            "no Building event for {d}: {events:?}"
        );
    }
    let huge = out(s, fx, "huge");
    assert_eq!(
        s.valid_paths(&[app.clone(), lib.clone(), huge]).unwrap(),
        set(&[&app, &lib])
    );
    assert_eq!(
        s.closure(std::slice::from_ref(&app)).unwrap(),
        set(&[&app, &lib])
    );

    let infos = s.path_infos(&[app.clone(), lib.clone()]).unwrap();
    assert_eq!(infos[&app].references, set(&[&lib]));
    assert!(infos[&lib].references.is_empty());
    assert_eq!(infos[&lib].nar_size, nar_size_of_file(65536));
    assert!(infos[&app].nar_size > 65536);
    assert_eq!(infos[&app].deriver.as_ref(), Some(fx.drv("app")));
    assert_eq!(s.closure_infos(std::slice::from_ref(&app)).unwrap(), infos);

    assert_eq!(
        s.roots(&fx.places.roots_dir).unwrap(),
        BTreeMap::from([(fx.root("app"), app.clone())])
    );
    // Again: nothing to build.
    let (outs2, events2) = realise(s, fx, "app");
    assert_eq!(outs2, outs);
    assert!(!events2
        .iter()
        .any(|e| matches!(e, RealiseEvent::Building(_))));

    let after = s.space().unwrap();
    assert_eq!(after.total, before.total);
    assert!(after.free < before.free, "{before:?} → {after:?}");
}

fn multiple_outputs_get_one_root_each(s: &(impl Store + System), fx: &Fx) {
    let (outs, _) = realise(s, fx, "multi");
    assert_eq!(
        outs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["dev", "out"]
    );
    let dev_root = PathBuf::from(format!("{}-dev", fx.root("multi").display()));
    assert_eq!(
        s.roots(&fx.places.roots_dir).unwrap(),
        BTreeMap::from([
            (fx.root("multi"), outs["out"].clone()),
            (dev_root, outs["dev"].clone())
        ])
    );
}

fn failing_build_is_named(s: &(impl Store + System), fx: &Fx) {
    let e = s
        .realise(fx.drv("broken"), &fx.root("broken"), &mut |_| {})
        .unwrap_err();
    match e {
        RealiseError::BuildFailed { drv, log_tail } => {
            assert_eq!(&drv, fx.drv("broken"));
            assert!(log_tail.contains(BROKEN_LOG), "{log_tail}");
        }
        e => panic!("expected a build failure, got {e}"),
    }
    // Its dependency was built.
    let lib = out(s, fx, "lib");
    assert!(!s
        .valid_paths(std::slice::from_ref(&lib))
        .unwrap()
        .is_empty());
}

fn out_of_space_is_classified(s: &(impl Store + System), fx: &Fx) {
    let before = s.space().unwrap();
    let e = s
        .realise(fx.drv("huge"), &fx.root("huge"), &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, RealiseError::OutOfSpace { .. }), "{e}");
    let huge = out(s, fx, "huge");
    assert!(s
        .valid_paths(std::slice::from_ref(&huge))
        .unwrap()
        .is_empty());
    // Removing the partial result gives the space back.
    s.delete(std::slice::from_ref(&huge)).unwrap();
    let after = s.space().unwrap();
    assert!(
        after.free + (1 << 20) >= before.free,
        "{before:?} → {after:?}"
    );
    assert!(s.roots(&fx.places.roots_dir).unwrap().is_empty());
}

fn live_paths_are_never_deleted(s: &(impl Store + System), fx: &Fx) {
    let (lib, app) = (out(s, fx, "lib"), out(s, fx, "app"));
    realise(s, fx, "app");
    let live = s.live_paths().unwrap();
    for p in [&app, &lib, fx.drv("app"), fx.drv("lib")] {
        assert!(live.contains(p), "{p} should be live");
    }
    let e = s.delete(std::slice::from_ref(&lib)).unwrap_err();
    assert!(
        matches!(&e, StoreError::Refused(m) if m.contains(&fx.store_dir.display(&lib))),
        "{e}"
    );
    s.remove_root(&fx.root("app")).unwrap();
    s.remove_root(&fx.root("app")).unwrap();
    assert!(!s.live_paths().unwrap().contains(&app));
    // Dead, but still referenced by app.
    let e = s.delete(std::slice::from_ref(&lib)).unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    // What refers to lib, transitively, lib included: what must go with it.
    assert_eq!(
        s.referrers_closure(std::slice::from_ref(&lib)).unwrap(),
        set(&[&lib, &app])
    );
    assert_eq!(
        s.referrers_closure(std::slice::from_ref(&app)).unwrap(),
        set(&[&app])
    );
    assert_eq!(s.valid_paths(&[app.clone(), lib.clone()]).unwrap().len(), 2);
    s.delete(&[app.clone(), lib.clone()]).unwrap();
    assert!(s
        .valid_paths(&[app.clone(), lib.clone()])
        .unwrap()
        .is_empty());
    s.delete(std::slice::from_ref(&app)).unwrap();

    // Roots honoured: add_root keeps a path live; roots to invalid paths are refused.
    realise(s, fx, "lib");
    s.remove_root(&fx.root("lib")).unwrap();
    s.add_root(&fx.root("kept"), &lib).unwrap();
    assert!(s.live_paths().unwrap().contains(&lib));
    assert!(matches!(
        s.delete(std::slice::from_ref(&lib)).unwrap_err(),
        StoreError::Refused(_)
    ));
    assert!(matches!(
        s.add_root(&fx.root("bad"), &app).unwrap_err(),
        StoreError::Refused(_)
    ));
    assert_eq!(
        s.roots(&fx.places.roots_dir).unwrap(),
        BTreeMap::from([(fx.root("kept"), lib.clone())])
    );
    // Every GC root is listed with what it keeps (the planner's "kept by other roots").
    let all = s.gc_roots().unwrap();
    assert!(
        all.iter().any(|(l, p)| l == &fx.root("kept") && p == &lib),
        "{all:?}"
    );
    assert!(!all.iter().any(|(_, p)| p == &app), "{all:?}");

    // A derivation can be rooted without building it (unwind keeps G0's .drv closure).
    let huge_drv = fx.drv("huge");
    s.add_root(&fx.root("huge-drv"), huge_drv).unwrap();
    let huge = out(s, fx, "huge");
    assert!(
        s.valid_paths(std::slice::from_ref(&huge))
            .unwrap()
            .is_empty(),
        "not built"
    );
    assert!(s.live_paths().unwrap().contains(huge_drv));
    assert!(matches!(
        s.delete(std::slice::from_ref(huge_drv)).unwrap_err(),
        StoreError::Refused(_)
    ));
    s.remove_root(&fx.root("huge-drv")).unwrap();
    assert!(!s.live_paths().unwrap().contains(huge_drv));
}

fn substitutes_are_queried_and_copied(s: &(impl Store + System), fx: &Fx) {
    let cached = out(s, fx, "cached");
    let app = out(s, fx, "app");
    let bogus = StorePath::from_base_name("00000000000000000000000000000000-bogus").unwrap();
    let infos = s.substitute_infos(&[cached.clone(), app, bogus]).unwrap();
    assert_eq!(infos.keys().collect::<Vec<_>>(), [&cached]);
    assert_eq!(infos[&cached].nar_size, nar_size_of_file(32768));
    assert!(infos[&cached].references.is_empty());

    let (outs, events) = realise(s, fx, "cached");
    assert_eq!(outs["out"], cached);
    assert!(
        events.contains(&RealiseEvent::Copying(cached.clone())),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, RealiseEvent::Building(_))));
}

fn text_objects_are_added(s: &(impl Store + System), fx: &Fx) {
    let lib = out(s, fx, "lib");
    realise(s, fx, "lib");
    let contents = format!("refers to {}\n", fx.store_dir.display(&lib)).into_bytes();
    let p = s
        .add_text("contract-note", &contents, std::slice::from_ref(&lib))
        .unwrap();
    assert_eq!(
        p,
        fx.store_dir.text_path("contract-note", &contents, [&lib])
    );
    assert_eq!(s.read_file(&p).unwrap(), contents);
    assert_eq!(
        s.path_infos(std::slice::from_ref(&p)).unwrap()[&p].references,
        set(&[&lib])
    );
    assert_eq!(
        s.add_text("contract-note", &contents, std::slice::from_ref(&lib))
            .unwrap(),
        p
    );
}

fn stubs_are_added_where_the_plan_says(s: &(impl Store + System), fx: &Fx) {
    let stub = stepwise::plan::Stub::for_package(&fx.store_dir, "hello");
    assert!(s
        .valid_paths(std::slice::from_ref(&stub.path))
        .unwrap()
        .is_empty());
    assert_eq!(s.add_stub(&stub).unwrap(), stub.path);
    let info = &s.path_infos(std::slice::from_ref(&stub.path)).unwrap()[&stub.path];
    assert!(info.references.is_empty());
    assert_eq!(
        info.nar_size,
        stepwise::plan::mask::empty_dir_nar().len() as u64
    );
    // Adding it again is harmless.
    assert_eq!(s.add_stub(&stub).unwrap(), stub.path);
    // A stub whose expected path is not where the store puts it is refused.
    let wrong = stepwise::plan::Stub {
        name: "stepwise-stub-other".into(),
        path: stub.path.clone(),
    };
    assert!(matches!(
        s.add_stub(&wrong),
        Err(stepwise::effects::store::StoreError::Refused(_))
    ));
}

fn profiles_and_generations(s: &(impl Store + System), fx: &Fx) {
    let profile = &fx.places.profile;
    let (top, app) = (out(s, fx, "toplevel"), out(s, fx, "app"));
    realise(s, fx, "toplevel");
    assert!(s.generations(profile).unwrap().is_empty());
    s.set_profile(profile, &top).unwrap();
    s.set_profile(profile, &top).unwrap();
    let g = s.generations(profile).unwrap();
    assert_eq!(
        g.len(),
        1,
        "setting the same path twice makes one generation"
    );
    assert_eq!((g[0].number, g[0].current), (1, true));
    assert_eq!(g[0].toplevel, top);
    assert_eq!(g[0].link, profile.with_file_name("system-1-link"));

    s.set_profile(profile, &app).unwrap();
    let g = s.generations(profile).unwrap();
    assert_eq!(
        g.iter().map(|g| (g.number, g.current)).collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_eq!(s.read_system_link(profile).unwrap(), Some(app.clone()));
    assert_eq!(s.read_system_link(&g[0].link).unwrap(), Some(top.clone()));

    // Back to an existing generation: no new one (walking back adds no boot entry).
    s.switch_generation(profile, 1).unwrap();
    let g = s.generations(profile).unwrap();
    assert_eq!(
        g.iter().map(|g| (g.number, g.current)).collect::<Vec<_>>(),
        [(1, true), (2, false)]
    );
    assert_eq!(s.read_system_link(profile).unwrap(), Some(top.clone()));
    let e = s.switch_generation(profile, 7).unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    s.switch_generation(profile, 2).unwrap();
    assert_eq!(s.read_system_link(profile).unwrap(), Some(app.clone()));

    let e = s.delete_generations(profile, &[2]).unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    let live = s.live_paths().unwrap();
    assert!(
        live.contains(&top) && live.contains(&app),
        "generations are roots"
    );
    s.delete_generations(profile, &[1, 99]).unwrap();
    let g = s.generations(profile).unwrap();
    assert_eq!(g.iter().map(|g| g.number).collect::<Vec<_>>(), [2]);
    s.remove_root(&fx.root("toplevel")).unwrap();
    assert!(!s.live_paths().unwrap().contains(&top));
}

fn activation_checks_and_switches(s: &(impl Store + System), fx: &Fx) {
    let (top, app) = (out(s, fx, "toplevel"), out(s, fx, "app"));
    realise(s, fx, "toplevel");
    assert_eq!(s.read_system_link(&fx.places.current_link).unwrap(), None);
    let e = s.activate(&app, Action::Switch, &mut |_| {}).unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    assert_eq!(s.read_system_link(&fx.places.current_link).unwrap(), None);

    assert_eq!(
        s.activate(&top, Action::Test, &mut |_| {}).unwrap(),
        Activated::Done
    );
    assert_eq!(
        s.read_system_link(&fx.places.current_link).unwrap(),
        Some(top.clone())
    );
    assert_eq!(s.read_system_link(&fx.places.booted_link).unwrap(), None);
    s.remove_root(&fx.root("toplevel")).unwrap();
    assert!(
        s.live_paths().unwrap().contains(&top),
        "current-system is a root"
    );
}

// ---- both implementations ----------------------------------------------------------------------

#[test]
fn model_derivations_equal_the_ones_nix_instantiates() {
    let Some((cli, real_fx, real)) = real() else {
        return;
    };
    let root = real.bed.root().to_path_buf();
    let (m, model_fx) = model_at(
        real_fx.store_dir.clone(),
        places_in(
            &root,
            real.bed.current_system_link(),
            real.bed.booted_system_link(),
            real.bed.profile(),
        ),
    );
    for attr in real_fx.drvs.keys() {
        let a = String::from_utf8_lossy(&m.read_file(model_fx.drv(attr)).unwrap()).into_owned();
        let b = String::from_utf8_lossy(&cli.read_file(real_fx.drv(attr)).unwrap()).into_owned();
        assert_eq!(a, b, "{attr}: the model's .drv differs from Nix's");
    }
    assert_eq!(model_fx.drvs, real_fx.drvs);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod model {
            $( #[test] fn $name() { let (s, fx) = super::model(); super::$name(&s, &fx); } )*
        }
        mod real {
            $( #[test] fn $name() {
                let Some((s, fx, _bed)) = super::real() else { return };
                super::$name(&s, &fx);
            } )*
        }
    };
}

/// NixOS's exit codes: 4 is switched with failed units (named), 100 is a reboot required (boot
/// default set, nothing activated), anything else an error.
fn activation_exit_codes(s: &(impl Store + System), fx: &Fx) {
    let top = out(s, fx, "toplevel");
    realise(s, fx, "toplevel");
    let current = || s.read_system_link(&fx.places.current_link).unwrap();

    (fx.set_activation_exit)(100, &[]);
    assert_eq!(
        s.activate(&top, Action::Switch, &mut |_| {}).unwrap(),
        Activated::RebootRequired
    );
    assert_eq!(current(), None, "nothing activated");
    assert_eq!(
        std::fs::read_to_string(&fx.places.boot_file)
            .ok()
            .map(|b| b.trim().to_string()),
        // The model keeps its boot default in memory.
        std::fs::metadata(&fx.places.boot_file)
            .is_ok()
            .then(|| fx.store_dir.display(&top))
    );

    (fx.set_activation_exit)(4, &["a.service", "b@x.service"]);
    let mut lines = Vec::new();
    let got = s
        .activate(&top, Action::Switch, &mut |l| lines.push(l.to_string()))
        .unwrap();
    assert_eq!(
        got,
        Activated::UnitsFailed(vec!["a.service".into(), "b@x.service".into()])
    );
    assert_eq!(current(), Some(top.clone()), "switched all the same");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the following units failed")),
        "{lines:?}"
    );

    (fx.set_activation_exit)(4, &[]);
    assert_eq!(
        s.activate(&top, Action::Test, &mut |_| {}).unwrap(),
        Activated::UnitsFailed(vec![])
    );

    (fx.set_activation_exit)(2, &[]);
    let e = s.activate(&top, Action::Switch, &mut |_| {}).unwrap_err();
    assert!(matches!(e, StoreError::Command { .. }), "{e}");
}

contract!(
    activation_exit_codes,
    info_and_targets,
    realise_closure_and_sizes,
    multiple_outputs_get_one_root_each,
    failing_build_is_named,
    out_of_space_is_classified,
    live_paths_are_never_deleted,
    substitutes_are_queried_and_copied,
    text_objects_are_added,
    stubs_are_added_where_the_plan_says,
    profiles_and_generations,
    activation_checks_and_switches,
);
