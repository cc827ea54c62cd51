//! Proves the real-Nix test bed: the fixture realises and switches, a plain upgrade really runs out
//! of space on a tmpfs smaller than |old ∪ new| and succeeds on a larger one, GC roots are honoured,
//! and nothing leaks when a bed is dropped (also by a panic).

use std::fs;
use std::path::PathBuf;

use stepwise_testbed::{is_mount_point, require_root, Bed, Disk, Fixture, FixtureSpec};

const MIB: u64 = 1024 * 1024;

#[test]
fn old_generation_realises_and_switches() {
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    assert_eq!(
        bed.current_system(),
        None,
        "a fresh bed has no current system"
    );

    let g0 = bed
        .install(&fx.old.drv)
        .expect("installing the old generation");
    assert_eq!(g0, fx.old.out);
    assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.booted_system().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.profile_target().as_deref(), Some(g0.as_str()));
    assert_eq!(bed.boot_default().as_deref(), Some(g0.as_str()));

    // NixOS-shaped: sw/bin from system-path, unit files naming package paths, kernel and initrd.
    let big_a = fx.package("big-a").old.as_ref().unwrap();
    let unit = fs::read_to_string(format!("{g0}/etc/systemd/system/big-a.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}/bin/big-a", big_a.out())),
        "{unit}"
    );
    let out = bed.command(format!("{g0}/sw/bin/big-a")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "big-a-1.0");
    let pkgs: Vec<String> =
        serde_json::from_str(&fs::read_to_string(format!("{g0}/sw/pkgs.json")).unwrap()).unwrap();
    assert!(pkgs.contains(&big_a.out().to_string()));
    let man = &fx.package("big-b").old.as_ref().unwrap().outputs["man"];
    assert!(pkgs.contains(man), "system-path references the man output");
    let kernel = fs::read_link(format!("{g0}/kernel")).unwrap();
    assert!(kernel.starts_with(fx.package("linux").old.as_ref().unwrap().out()));
    assert!(fs::metadata(format!("{g0}/initrd")).is_ok());
    assert_eq!(
        fs::read_to_string(format!("{g0}/nixos-version")).unwrap(),
        "23.05"
    );

    // The new generation: `test` moves current-system only, `boot` records the boot default only.
    let t = bed
        .realise(&[&fx.new.drv])
        .expect("realising the new generation on a large disk");
    assert_eq!(t, vec![fx.new.out.clone()]);
    bed.switch(&fx.new.out, "test").unwrap();
    assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    assert_eq!(bed.boot_default().as_deref(), Some(g0.as_str()));
    bed.switch(&fx.new.out, "boot").unwrap();
    assert_eq!(bed.boot_default().as_deref(), Some(fx.new.out.as_str()));
    let log = fs::read_to_string(bed.activation_log()).unwrap();
    assert_eq!(
        log,
        format!("switch {g0}\ntest {}\nboot {}\n", fx.new.out, fx.new.out),
        "activations in order"
    );
    // Boot-loader installs (switch, boot) record the profile's generation links: one here.
    assert_eq!(
        bed.boot_installs(),
        vec![
            (1, "switch".to_string(), g0.clone()),
            (1, "boot".to_string(), fx.new.out.clone())
        ]
    );
    assert!(
        bed.switch(&fx.new.out, "bogus").is_err(),
        "an unknown action fails"
    );
}

#[test]
fn fixture_sizes_add_up() {
    let spec = FixtureSpec::standard();
    let (_bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    eprintln!("standard fixture: {}", fx.sizes_line());
    assert!(fx.new_builds);
    // Every package is at least its payload; the union exceeds both sides by the changed packages.
    for (p, s) in fx.packages.iter().zip(&spec.packages) {
        assert_eq!(p.pname, s.pname, "packages in the spec's order");
        for (v, sv) in [(&p.old, &s.old), (&p.new, &s.new)] {
            match (v, sv) {
                (Some(v), Some(sv)) => {
                    assert!(
                        v.bytes() >= sv.kib * 1024,
                        "{} is smaller than its payload",
                        v.name
                    );
                    assert!(
                        v.bytes() < sv.kib * 1024 + 64 * 1024,
                        "{} is much larger",
                        v.name
                    );
                }
                (None, None) => {}
                _ => panic!(
                    "{}: a version the spec does not have, or lacks one it has",
                    p.pname
                ),
            }
        }
    }
    let changed_new: u64 = fx
        .packages
        .iter()
        .filter(|p| p.changes())
        .filter_map(|p| p.new.as_ref())
        .map(|v| v.bytes())
        .sum();
    assert!(fx.union_bytes >= fx.old_bytes + changed_new);
    assert!(fx.union_bytes > fx.new_bytes && fx.union_bytes > fx.old_bytes);
    assert_eq!(
        fx.package("coreutils").old,
        fx.package("coreutils").new,
        "unchanged package, same path"
    );
    assert!(fx.package("legacy-tool").new.is_none() && fx.package("new-tool").old.is_none());
}

#[test]
fn plain_upgrade_runs_out_of_space_between_old_and_union() {
    if !require_root("plain_upgrade_runs_out_of_space_between_old_and_union") {
        return;
    }
    let spec = FixtureSpec::standard();
    let mut disk = 0;
    let (bed, fx) = Bed::prepared_with(&spec, |fx| {
        // Room for G0 and the state, but not for the new packages beside the old ones.
        disk = fx.tight_disk_mib();
        Disk::TmpfsMib(disk)
    });
    assert!(
        disk * MIB > fx.old_bytes && disk * MIB < fx.union_bytes,
        "{disk} MiB, {}",
        fx.sizes_line()
    );
    assert_eq!(bed.tmpfs_mib(), Some(disk));
    assert_eq!(bed.capacity(), disk * MIB);

    let g0 = bed.install(&fx.old.drv).expect("G0 fits");
    assert!(bed.used_bytes() >= fx.old_bytes);
    let err = bed
        .realise(&[&fx.new.drv])
        .expect_err("the plain upgrade must not fit");
    eprintln!("the plain upgrade on {disk} MiB: {err}");
    assert!(err.is_out_of_space(), "not an out-of-space failure: {err}");
    // Still on G0, and nothing about it broke.
    assert_eq!(bed.current_system().as_deref(), Some(g0.as_str()));
    assert!(bed.is_valid(&g0).unwrap());
    assert!(!bed.is_valid(&fx.new.out).unwrap());
}

#[test]
fn plain_upgrade_succeeds_on_a_large_tmpfs() {
    if !require_root("plain_upgrade_succeeds_on_a_large_tmpfs") {
        return;
    }
    let spec = FixtureSpec::standard();
    let (bed, fx) = Bed::prepared_with(&spec, |fx| Disk::TmpfsMib(fx.roomy_disk_mib()));
    bed.install(&fx.old.drv).expect("G0");
    let t = bed.realise(&[&fx.new.drv]).expect("the plain upgrade fits");
    assert_eq!(t, vec![fx.new.out.clone()]);
    // The new packages came from the cache, not from a local build.
    assert!(bed.used_bytes() >= fx.union_bytes);
}

#[test]
fn gc_roots_are_honoured() {
    let spec = FixtureSpec::two_big(1);
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    let g0 = bed.install(&fx.old.drv).unwrap();
    let t = bed.realise(&[&fx.new.drv]).unwrap().remove(0);
    let old_a = fx.package("big-a").old.as_ref().unwrap().out().to_string();
    let stray_file = bed.root().join("stray.txt");
    fs::write(&stray_file, "not rooted").unwrap();
    let added = bed
        .command("nix-store")
        .arg("--add")
        .arg(&stray_file)
        .output()
        .unwrap();
    let stray = String::from_utf8(added.stdout).unwrap().trim().to_string();
    assert!(bed.is_valid(&stray).unwrap());

    // T only in the profile (generation 2); current and booted are G0.
    bed.set_profile(&t).unwrap();
    bed.gc().unwrap();
    assert!(
        !bed.is_valid(&stray).unwrap(),
        "an unrooted path is collected"
    );
    assert!(bed.is_valid(&t).unwrap(), "the profile is a root");
    assert!(bed.is_valid(&g0).unwrap() && bed.is_valid(&old_a).unwrap());

    // G0 only booted: current → T, G0's generation deleted.
    bed.switch(&t, "test").unwrap();
    let mut del = bed.command("nix-env");
    del.arg("-p")
        .arg(bed.profile())
        .args(["--delete-generations", "1"]);
    assert!(del.output().unwrap().status.success());
    bed.gc().unwrap();
    assert!(bed.is_valid(&g0).unwrap(), "booted-system is a root");
    assert!(bed.is_valid(&old_a).unwrap());

    // T only current: the profile's generation deleted too, booted still G0.
    // (Nix refuses to delete a profile's current generation: remove the profile's links.)
    fs::remove_file(bed.profile()).unwrap();
    fs::remove_file(bed.state_dir().join("profiles/system-2-link")).unwrap();
    bed.gc().unwrap();
    assert!(bed.is_valid(&t).unwrap(), "current-system is a root");

    // Nothing roots G0 any more once booted moves to T.
    bed.set_booted(&t).unwrap();
    bed.gc().unwrap();
    assert!(!bed.is_valid(&g0).unwrap(), "G0 is no longer reachable");
    assert!(!bed.is_valid(&old_a).unwrap());
    assert!(bed.is_valid(&t).unwrap());
    assert!(bed
        .is_valid(fx.package("big-a").new.as_ref().unwrap().out())
        .unwrap());
    let coreutils = fx.package("coreutils").old.as_ref().unwrap();
    assert!(bed.is_valid(coreutils.out()).unwrap(), "shared with T");
}

#[test]
fn failing_new_package_fails_the_plain_upgrade_but_not_for_space() {
    let spec = FixtureSpec::two_big(1);
    let spec = FixtureSpec {
        packages: spec
            .packages
            .into_iter()
            .map(|p| if p.pname == "big-b" { p.new_fails() } else { p })
            .collect(),
        ..spec
    };
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    assert!(!fx.new_builds);
    bed.install(&fx.old.drv).unwrap();
    let err = bed
        .realise(&[&fx.new.drv])
        .expect_err("big-b-2.0 fails to build");
    assert!(!err.is_out_of_space(), "{err}");
    assert!(err.stderr.contains("big-b-2.0"), "{err}");
    // The other new package is substitutable.
    let a2 = fx.package("big-a").new.as_ref().unwrap();
    assert_eq!(bed.realise(&[&a2.drv]).unwrap(), vec![a2.out().to_string()]);
}

#[test]
fn dropping_a_bed_unmounts_and_removes_it_even_on_panic() {
    if !require_root("dropping_a_bed_unmounts_and_removes_it_even_on_panic") {
        return;
    }
    let bed = Bed::on_tmpfs(8).unwrap();
    let root: PathBuf = bed.root().to_path_buf();
    assert!(is_mount_point(&bed.nix_dir()));
    assert_eq!(bed.capacity(), 8 * MIB);
    drop(bed);
    assert!(!root.exists(), "{} left behind", root.display());

    let result = std::panic::catch_unwind(|| {
        let bed = Bed::on_tmpfs(8).unwrap();
        let root = bed.root().to_path_buf();
        std::panic::resume_unwind(Box::new(root));
    });
    let root = *result.unwrap_err().downcast::<PathBuf>().unwrap();
    assert!(
        !root.exists(),
        "{} left behind by a panicking test",
        root.display()
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(root.to_str().unwrap()), "a mount leaked");
}

#[test]
fn a_plain_bed_builds_without_a_cache() {
    let bed = Bed::new().unwrap();
    let file = bed.root().join("hello.nix");
    fs::write(
        &file,
        r#"derivation { name = "hello-1.0"; system = builtins.currentSystem; builder = "/bin/sh";
             PATH = "/usr/bin:/bin"; args = [ "-c" "echo hello > $out" ]; }"#,
    )
    .unwrap();
    let drv = bed.instantiate(&file, None).unwrap();
    assert!(
        drv.starts_with(&bed.store_dir()),
        "{drv} is in the private store"
    );
    let out = bed.realise(&[&drv]).unwrap().remove(0);
    assert_eq!(fs::read_to_string(&out).unwrap(), "hello\n");
    assert!(bed.nar_size(&out).unwrap() > 0);
    let _ = Fixture::mib(0);
}

#[test]
fn prepared_beds_in_parallel_get_their_own_directories() {
    let spec = FixtureSpec::two_big(1);
    let (a, fa) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    let (b, fb) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    assert_ne!(a.root(), b.root());
    assert_ne!(
        fa.old.out, fb.old.out,
        "different store dirs, different paths"
    );
    let threads = [(a, fa), (b, fb)].map(|(bed, fx)| {
        std::thread::spawn(move || {
            let g0 = bed.install(&fx.old.drv).unwrap();
            assert_eq!(bed.current_system(), Some(g0));
        })
    });
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn nix_reads_only_the_beds_configuration() {
    let spec = FixtureSpec::two_big(1);
    let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
    let out = bed.command("nix").args(["show-config"]).output().unwrap();
    assert!(out.status.success());
    let config = String::from_utf8(out.stdout).unwrap();
    let cache = bed.cache_dir().unwrap().display().to_string();
    assert!(
        config.contains(&format!("substituters = file://{cache}\n")),
        "{config}"
    );
    assert!(config.contains("sandbox = false\n"));
    assert!(config.contains("require-sigs = false\n"));
    assert!(fx.store_dir == bed.store_dir());
    // The new packages come from the cache (substituted, not built).
    let a2 = fx.package("big-a").new.as_ref().unwrap();
    let out = bed
        .command("nix-store")
        .args(["--realise", &a2.drv])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("copying path") && !log.contains("building"),
        "{log}"
    );
}

#[test]
fn killing_a_group_kills_its_children() {
    let bed = Bed::new().unwrap();
    let pidfile = bed.root().join("grandchild.pid");
    // A shell that starts a background sleeper, records its pid, then waits.
    let mut cmd = bed.command("/bin/sh");
    cmd.arg("-c")
        .arg("sleep 1000 & echo $! > \"$1\"; wait")
        .arg("sh")
        .arg(&pidfile)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = stepwise_testbed::spawn_own_group(&mut cmd).unwrap();
    // Wait for the pid file by polling the child's state, not by sleeping a fixed time.
    let grandchild: i32 = loop {
        if let Some(p) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the shell exited early"
        );
        std::thread::yield_now();
    };
    // Should the group kill miss it, the sleeper must not outlive the test.
    // (Disarmed once it is seen gone, so a reused pid is never hit.)
    struct Reap(Option<i32>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    let mut reap = Reap(Some(grandchild));
    let status = stepwise_testbed::kill_group(&mut child).unwrap();
    assert!(!status.success());
    // The grandchild dies too (SIGKILL is delivered at once; its exit may take a moment to show
    // in /proc): gone, or a zombie left for init to reap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state = fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            reap.0 = None;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the grandchild survived: {state}"
        );
        std::thread::yield_now();
    }
}

/// Whether no loop device carries `image` any more. The kernel lets go of a loop device in the
/// background after its filesystem is unmounted: this waits for that, at most 10 s.
fn detached(image: &std::path::Path) -> bool {
    stepwise_testbed::wait_detached(image, std::time::Duration::from_secs(10))
}

/// btrfs `compress-force=zstd` and ext4 on loop devices: the store is on them (half-random files
/// take about half their size on btrfs), and dropping the bed (also by a panic) unmounts the
/// filesystem and detaches its loop device.
#[test]
fn loop_filesystems_hold_the_store_and_go_away() {
    if !require_root("loop_filesystems_hold_the_store_and_go_away") {
        return;
    }
    use stepwise_testbed::Payload;
    let spec = FixtureSpec::standard().with_payload(Payload::HalfRandom);
    for disk in [Disk::BtrfsZstdMib(256), Disk::Ext4Mib(256)] {
        let (bed, fx) = Bed::prepared_with(&spec, |_| disk);
        let nix = bed.nix_dir();
        let image = bed.root().join("disk.img");
        assert!(
            is_mount_point(&nix),
            "{disk:?}: the store is on the loop device"
        );
        assert!(
            !stepwise_testbed::loop_devices_of(&image).is_empty(),
            "{disk:?}: a loop device carries the image"
        );
        let before = bed.used_bytes();
        bed.install(&fx.old.drv).expect("installing G0");
        nix::unistd::sync();
        let used = bed.used_bytes() - before;
        let ratio = used as f64 / fx.old_bytes as f64;
        eprintln!("{disk:?}: G0 takes {:.2} of its NAR size", ratio);
        match disk {
            Disk::BtrfsZstdMib(_) => assert!(ratio < 0.7, "btrfs compresses: {ratio}"),
            _ => assert!(ratio > 0.95, "ext4 does not compress: {ratio}"),
        }
        drop(bed);
        assert!(!is_mount_point(&nix), "{disk:?}: unmounted");
        assert!(detached(&image), "{disk:?}: the loop device is detached");
    }
    // A panic while the bed lives unwinds through its drop.
    let image = std::sync::Mutex::new(PathBuf::new());
    let r = std::panic::catch_unwind(|| {
        let (bed, _) = Bed::prepared_with(&spec, |_| Disk::BtrfsZstdMib(256));
        *image.lock().unwrap() = bed.root().join("disk.img");
        panic!("a failing test");
    });
    assert!(r.is_err());
    assert!(detached(&image.lock().unwrap()), "detached after a panic");
}
