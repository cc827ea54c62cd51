//! `NixCli` beyond the shared contract: flake targets (the host defaulting to the hostname),
//! detection errors, and the reserve file on a full disk. Real Nix on test beds.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use stepwise::effects::fs::Reserve;
use stepwise::effects::nix::{NixCli, NixCliConfig};
use stepwise::effects::store::{Store, StoreError, TargetSpec};
use stepwise_testbed::{nix_str, require_root, Bed};

const FLAKE_EVAL_ERROR: &str = "stepwise-flake: host broken does not evaluate";

fn cli(bed: &Bed) -> NixCli {
    NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn flake_targets_resolve_with_the_hostname_by_default() {
    let bed = Bed::new().unwrap();
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = bed.root().join("flake");
    std::fs::create_dir_all(&dir).unwrap();
    let sys = |name: &str| {
        format!(
            "{{ config.system.build.toplevel = derivation {{ name = {}; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"mkdir $out\" ]; }}; }}",
            nix_str(name)
        )
    };
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            "{{ outputs = {{ self }}: {{ nixosConfigurations = {{ {} = {}; other = {}; broken = {{ config.system.build.toplevel = throw {}; }}; }}; }}; }}\n",
            nix_str(&host),
            sys("nixos-system-here-1"),
            sys("nixos-system-other-1"),
            nix_str(FLAKE_EVAL_ERROR)
        ),
    )
    .unwrap();
    let s = cli(&bed);
    let reference = format!("path:{}", dir.display());

    let here = s
        .resolve_target(&TargetSpec::Flake {
            reference: reference.clone(),
            host: None,
        })
        .unwrap();
    assert_eq!(here.name(), "nixos-system-here-1.drv");
    assert!(
        !s.valid_paths(&[here]).unwrap().is_empty(),
        "the .drv was written"
    );

    let other = s
        .resolve_target(&TargetSpec::Flake {
            reference: reference.clone(),
            host: Some("other".into()),
        })
        .unwrap();
    assert_eq!(other.name(), "nixos-system-other-1.drv");

    let e = s
        .resolve_target(&TargetSpec::Flake {
            reference: reference.clone(),
            host: Some("broken".into()),
        })
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Target(m) if m.contains(FLAKE_EVAL_ERROR)),
        "{e}"
    );
    let e = s
        .resolve_target(&TargetSpec::Flake {
            reference,
            host: Some("absent".into()),
        })
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Target(m) if m.contains("absent")),
        "{e}"
    );
}

#[test]
fn file_target_that_is_neither_a_derivation_nor_a_system() {
    let bed = Bed::new().unwrap();
    let f = bed.root().join("t.nix");
    std::fs::write(&f, "{ just = { a = 1; }; }\n").unwrap();
    let e = cli(&bed)
        .resolve_target(&TargetSpec::File {
            file: f.clone(),
            attr: Some("just".into()),
        })
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Target(m) if m.contains("neither a derivation nor a NixOS system")),
        "{e}"
    );
    let e = cli(&bed)
        .resolve_target(&TargetSpec::File {
            file: bed.root().join("missing.nix"),
            attr: None,
        })
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Target(m) if m.contains("missing.nix")),
        "{e}"
    );
}

#[test]
fn a_link_to_a_drv_names_it() {
    let bed = Bed::new().unwrap();
    let f = bed.root().join("t.nix");
    std::fs::write(
        &f,
        "derivation { name = \"t-1\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; }\n",
    )
    .unwrap();
    let drv = bed.instantiate(&f, None).unwrap();
    let link = bed.root().join("t.drv");
    std::os::unix::fs::symlink(drv.trim(), &link).unwrap();
    let s = cli(&bed);
    let p = s.resolve_target(&TargetSpec::Drv(link)).unwrap();
    assert_eq!(s.store_dir().display(&p), drv.trim());
    let e = s
        .resolve_target(&TargetSpec::Drv(bed.root().join("t.nix")))
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Target(m) if m.contains("t.nix")),
        "{e}"
    );
}

#[test]
fn detection_failure_names_the_command() {
    let e = NixCli::new(NixCliConfig {
        bin_dir: Some(PathBuf::from("/nonexistent/bin")),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/bin/nix --version"),
        "{e}"
    );
}

#[test]
fn detection_reads_version_store_dir_and_substituters() {
    let cache = tempfile::tempdir().unwrap();
    let bed = Bed::create(stepwise_testbed::Disk::Unlimited, Some(cache.path())).unwrap();
    let s = cli(&bed);
    assert_eq!(s.store_dir().as_str(), bed.store_dir());
    assert_eq!(
        s.substituters(),
        [format!("file://{}", cache.path().display())]
    );
    // This machine's Nix is 2.8: no `nix derivation add`.
    if s.nix_info().version < (2, 15, 0) {
        assert!(!s.nix_info().has_derivation_add);
    }
}

#[test]
fn reserve_is_refused_on_a_full_disk_and_released_to_make_room() {
    if !require_root("the reserve file on a tmpfs") {
        return;
    }
    let bed = Bed::on_tmpfs(16).unwrap();
    let s = cli(&bed);
    let dir = bed.nix_dir().join("var/lib/stepwise");
    let reserve = Reserve::new(dir.join("reserve"), 4 << 20);
    reserve.take().unwrap();
    assert!(reserve.is_held());
    let with_reserve = s.space().unwrap().free;

    // Fill the rest of the disk.
    let filler = dir.join("filler");
    let e = std::fs::write(&filler, vec![0u8; 32 << 20]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC));
    assert!(s.space().unwrap().free < 1 << 20);

    // A second reserve does not fit: a clear out-of-space error, and no partial file left.
    let other = Reserve::new(dir.join("reserve2"), 4 << 20);
    assert!(matches!(
        other.take().unwrap_err(),
        StoreError::OutOfSpace(_)
    ));
    assert!(!dir.join("reserve2").exists() && !dir.join("reserve2.tmp").exists());

    // Releasing gives its blocks back.
    reserve.release().unwrap();
    assert!(s.space().unwrap().free >= 4 << 20);
    std::fs::remove_file(&filler).unwrap();
    // Taken again once there is room: the whole reserve is allocated. (Not compared with the
    // filesystem's free bytes: they also move with anything else written meanwhile.)
    reserve.take().unwrap();
    assert!(reserve.is_held());
    let allocated = std::fs::metadata(dir.join("reserve")).unwrap().blocks() * 512;
    assert!(allocated >= 4 << 20, "{allocated} bytes allocated");
    assert!(with_reserve > 0);
}

#[test]
fn cancelled_commands_are_refused_with_a_clear_error() {
    let bed = Bed::new().unwrap();
    let s = cli(&bed);
    s.space().unwrap();
    s.live_paths().unwrap();
    s.cancel_token().cancel();
    let e = s.live_paths().unwrap_err();
    assert!(
        matches!(&e, StoreError::Interrupted { why, .. } if why.contains("cancelled")),
        "{e}"
    );
}
