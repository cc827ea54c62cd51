//! Local derivations on real Nix: an initrd that is not glue by its attributes (no
//! `preferLocalBuild`), reads systemd and builds with jq, is on no substituter (the bed's file://
//! cache holds every package, not it). The planner, asking the cache through `nix path-info
//! --store`, reads it as local glue: jq is a build input, apart from the runtime packages, and
//! every step's initrd is rewritten under the mask, so each generation's closure holds exactly the
//! systemd version the mask states (not the target's). The system-path is buildEnv's
//! `__structuredAttrs` form, its packages only in `__json`. A unit whose restart trigger is a
//! bare hash gets a trigger of its own in every step, so each switch restarts it.

use std::collections::BTreeSet;
use std::fs;

use stepwise::drv::StorePath;
use stepwise::effects::nix::cli::{NixCli, NixCliConfig};
use stepwise::effects::store::Store;
use stepwise::engine::plan_inputs::{gather, StoreDrvs, SystemLinks};
use stepwise::plan::{plan, Materialiser, PlanOptions};
use stepwise_testbed::{replace_symlink, require_root, Bed, Disk};

const SYSTEM: &str = r#"
let
  system = builtins.currentSystem;
  sh = name: attrs: script: derivation ({
    inherit name system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  } // attrs);
  # A payload of `kib` KiB, so that moving a package costs more than a step's glue.
  pkg = name: deps: kib: sh name { inherit deps kib; } ''
    mkdir -p $out; echo ${name} > $out/name
    head -c $((kib * 1024)) /dev/zero > $out/payload
    for d in $deps; do echo $d >> $out/deps; done
  '';
  glue = name: attrs: sh name ({ preferLocalBuild = true; allowSubstitutes = false; } // attrs);
  gen = { release, systemdV, helloV }: rec {
    glibc = pkg "glibc-2.39" [ ] 256;
    systemd = pkg "systemd-${systemdV}" [ glibc ] 2048;
    hello = pkg "hello-${helloV}" [ glibc ] 2048;
    jq = pkg "jq-1.7" [ glibc ] 64;
    # buildEnv's structured-attributes form (current nixpkgs): the packages are only in
    # `__json`, as `pkgs = [ { paths = [ … ]; priority = …; } ]`, read from `.attrs.json`; no
    # attribute is an environment variable, `$out` included.
    systemPath = glue "system-path" {
      __structuredAttrs = true;
      pkgs = map (p: { paths = [ p ]; priority = 5; }) [ glibc systemd hello ];
    } ''
      PATH=/usr/bin:/bin
      out=$(sed -n 's/.*"outputs":{"out":"\([^"]*\)".*/\1/p' .attrs.json)
      mkdir -p $out
      for p in $(grep -o '"paths":\["[^"]*"' .attrs.json | sed 's/.*\["//; s/"$//'); do
        ln -s $p $out/
      done
    '';
    # make-initrd-ng's shape: contents copied in, tools in nativeBuildInputs, not glue.
    initrd = sh "initrd-linux-6.6" { contents = [ systemd ]; nativeBuildInputs = [ jq ]; } ''
      test -e $nativeBuildInputs/name
      mkdir -p $out; for c in $contents; do ln -s $c $out/; done
    '';
    # makeUnit's shape, with a restart trigger that is a bare hash of the config (no context).
    unit = glue "unit-sshd.service" {
      text = "[Unit]\nX-Restart-Triggers=${builtins.hashString "sha256" "sshd ${release}"}\n";
      passAsFile = [ "text" ];
    } ''
      mkdir -p $out; cp $textPath $out/sshd.service
    '';
    toplevel = glue "nixos-system-shape-${release}" { inherit systemPath initrd unit; } ''
      mkdir -p $out; ln -s $systemPath $out/sw; ln -s $initrd $out/initrd; ln -s $unit $out/unit
    '';
  };
  old = gen { release = "24.05"; systemdV = "255"; helloV = "2.12"; };
  new = gen { release = "24.11"; systemdV = "256"; helloV = "2.13"; };
in { inherit old new; }
"#;

/// A bed running `old.toplevel` (collected), with every package of both generations on its
/// cache; glue and the initrd are not. Returns the bed, its temporary directory (the cache), the
/// target's derivation and the packages' outputs.
fn running_old() -> (Bed, tempfile::TempDir, String, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let file = tmp.path().join("system.nix");
    fs::write(&file, SYSTEM).unwrap();
    let bed = Bed::create(Disk::Unlimited, Some(&cache)).unwrap();
    let mut pkgs = Vec::new();
    for g in ["old", "new"] {
        for p in ["glibc", "systemd", "hello", "jq"] {
            pkgs.push(bed.instantiate(&file, Some(&format!("{g}.{p}"))).unwrap());
        }
    }
    let outs = bed.realise(&pkgs).unwrap();
    bed.copy_to_cache(&cache, &outs).unwrap();
    let g0_drv = bed.instantiate(&file, Some("old.toplevel")).unwrap();
    let target_drv = bed.instantiate(&file, Some("new.toplevel")).unwrap();
    let g0 = bed.realise(&[&g0_drv]).unwrap().remove(0);
    bed.set_profile(&g0).unwrap();
    replace_symlink(g0.as_ref(), &bed.current_system_link()).unwrap();
    // Not booted: the old packages are freed step by step, so the plan moves them one at a time.
    bed.add_root("target-drv", &target_drv).unwrap();
    bed.gc().unwrap();
    (bed, tmp, target_drv, outs)
}

/// What a generation's system-path links (sorted) and its sshd unit's restart-trigger line.
fn links_and_trigger(out: &str) -> (Vec<String>, String) {
    let mut linked: Vec<String> = fs::read_dir(format!("{out}/sw"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    linked.sort();
    let unit = fs::read_to_string(format!("{out}/unit/sshd.service")).unwrap();
    let trigger = unit
        .lines()
        .find(|l| l.starts_with("X-Restart-Triggers="))
        .unwrap()
        .to_string();
    (linked, trigger)
}

#[test]
fn a_local_initrd_follows_the_mask_and_its_tools_are_build_inputs() {
    if !require_root("nixos_shape_real") {
        return;
    }
    let (bed, _tmp, target_drv, outs) = running_old();
    let nix = NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .unwrap();
    let sd = nix.store_dir().clone();
    let links = SystemLinks {
        profile: bed.profile(),
        current_system: bed.current_system_link(),
        booted_system: bed.booted_system_link(),
    };
    let target = sd.parse(&target_drv).unwrap();
    let input = gather(&nix, &nix, &target, &links, Some(0), PlanOptions::default()).unwrap();
    let locals: Vec<&str> = input.target.local.iter().map(|d| d.name()).collect();
    assert_eq!(locals.len(), 1, "{locals:?}");
    assert!(locals[0].starts_with("initrd-linux"), "{locals:?}");
    let planned = plan(&input).unwrap();
    let build: Vec<&str> = planned
        .diff
        .build_inputs
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(build, ["jq"]);
    let runtime: BTreeSet<&str> = planned.diff.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(runtime, ["hello", "systemd"].into());
    let p = planned.outcome.as_ref().expect("an unlimited disk fits");
    let mut steps_with_old_systemd = 0;
    // Each step's restart trigger for sshd: a switch restarts it at every step.
    let mut triggers: Vec<String> = Vec::new();

    let drvs = StoreDrvs(&nix);
    let mut mat = Materialiser::new(&input.target, &drvs);
    let root = bed.state_dir().join("gcroots").join("stepwise-step");
    let systemd_outs: BTreeSet<String> = outs
        .iter()
        .filter(|o| o.contains("-systemd-"))
        .cloned()
        .collect();
    for step in &p.steps {
        let m = mat.materialise(&step.mask).unwrap();
        for d in &m.drvs {
            let written = nix
                .add_text(&format!("{}.drv", d.name), &d.aterm, &d.references())
                .unwrap();
            assert_eq!(written, d.path);
        }
        nix.realise(&m.toplevel_drv, &root, &mut |_| {})
            .unwrap_or_else(|e| panic!("step {} does not realise: {e}", step.index));
        let closure = bed.closure(&[sd.display(&m.toplevel_out)]).unwrap();
        let held: BTreeSet<String> = closure.intersection(&systemd_outs).cloned().collect();
        let new_systemd = input
            .target
            .unit_outputs()
            .values()
            .flat_map(|o| o.values().cloned())
            .find(|o: &StorePath| o.name().starts_with("systemd-"))
            .unwrap();
        let stated = step.mask.0.get(&new_systemd).unwrap_or(&new_systemd);
        steps_with_old_systemd += (stated != &new_systemd) as usize;
        assert_eq!(
            held,
            [sd.display(stated)].into(),
            "step {}: the systemd versions in the closure (the initrd's included)",
            step.index
        );
        assert!(
            !closure.iter().any(|p| p.contains("-jq-")),
            "step {}: jq is a build input, not in the closure",
            step.index
        );
        let out = sd.display(&m.toplevel_out);
        // system-path (structured attributes) links the packages the mask states.
        let (linked, trigger) = links_and_trigger(&out);
        assert_eq!(linked.len(), 3, "step {}: {linked:?}", step.index);
        assert!(
            linked.contains(&stated.to_string()),
            "step {}: system-path links {linked:?}, the mask states {stated}",
            step.index
        );
        triggers.push(trigger);
        bed.set_profile(&out).unwrap();
        replace_symlink(out.as_ref(), &bed.current_system_link()).unwrap();
        nix.remove_root(&root).unwrap();
    }
    let distinct: BTreeSet<&String> = triggers.iter().collect();
    assert_eq!(distinct.len(), triggers.len(), "{triggers:?}");
    assert!(
        !triggers.last().unwrap().contains("stepwise-step-"),
        "the target keeps its own trigger: {triggers:?}"
    );
    assert!(
        triggers.len() >= 2 && triggers[0].contains("stepwise-step-"),
        "{triggers:?}"
    );
    assert!(
        steps_with_old_systemd > 0,
        "a step keeps the old systemd (its initrd rewritten): {} steps",
        p.steps.len()
    );
}
