//! Stops are stops, on real Nix: a signal sent to every process of a realise (as systemd's stop,
//! a shutdown or a session-wide kill sends it) is `StoreError::Interrupted`, never a failed build,
//! and realising again afterwards finishes the build.
//!
//! One test in its own binary: it signals every descendant of this process, so nothing else may
//! run beside it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stepwise::drv::StoreDir;
use stepwise::effects::nix::{NixCli, NixCliConfig};
use stepwise::effects::store::{RealiseError, Store};
use stepwise_testbed::{nix_str, require_root, Bed};

/// Every process descended from this one (the realise's `nix-store` and its builder, which
/// Nix puts in a session of its own).
fn descendants() -> Vec<Pid> {
    let mut parent_of: BTreeMap<i32, i32> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: i32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        parent_of.insert(pid, ppid);
    }
    let me = std::process::id() as i32;
    parent_of
        .keys()
        .filter(|&&p| {
            let mut q = p;
            while let Some(&pp) = parent_of.get(&q) {
                if pp == me {
                    return true;
                }
                if pp <= 1 {
                    return false;
                }
                q = pp;
            }
            false
        })
        .map(|&p| Pid::from_raw(p))
        .collect()
}

/// Wait for the file the builder writes once it runs (bounded: a broken fixture fails here).
fn wait_for(marker: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_group_wide_stop_signal_during_a_realise_is_an_interruption() {
    if !require_root("realising on a real Nix store") {
        return;
    }
    let bed = Bed::new().unwrap();
    let marker = bed.root().join("build-started");
    let release = bed.root().join("build-may-finish");
    // The builder says it runs, then waits until the test lets it finish.
    let script = format!(
        "touch {m}; while [ ! -e {r} ]; do sleep 0.05; done; echo built > $out",
        m = marker.display(),
        r = release.display()
    );
    let file = bed.root().join("slow.nix");
    std::fs::write(
        &file,
        format!(
            "derivation {{ name = \"slow-1.0\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; args = [ \"-c\" {} ]; }}\n",
            nix_str(&script)
        ),
    )
    .unwrap();
    let drv = bed.instantiate(&file, None).unwrap();
    let drv = StoreDir::new(bed.store_dir())
        .unwrap()
        .parse(drv.trim())
        .unwrap();
    let s = NixCli::new(NixCliConfig {
        env: bed.env(),
        ..Default::default()
    })
    .unwrap();
    let root = bed.root().join("roots/slow");

    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGKILL,
    ] {
        let _ = std::fs::remove_file(&marker);
        let e = std::thread::scope(|scope| {
            let realise = scope.spawn(|| s.realise(&drv, &root, &mut |_| {}));
            wait_for(&marker);
            for pid in descendants() {
                let _ = kill(pid, sig);
            }
            realise.join().unwrap().unwrap_err()
        });
        assert!(e.is_interrupted(), "{sig}: {e}");
        assert!(!matches!(e, RealiseError::BuildFailed { .. }), "{sig}: {e}");
    }

    // Realising again (what `resume` does) finishes the build.
    std::fs::write(&release, "").unwrap();
    let outs = s.realise(&drv, &root, &mut |_| {}).unwrap();
    assert!(bed.is_valid(&bed_path(&bed, &outs["out"])).unwrap());
}

fn bed_path(bed: &Bed, p: &stepwise::drv::StorePath) -> String {
    format!("{}/{p}", bed.store_dir())
}
