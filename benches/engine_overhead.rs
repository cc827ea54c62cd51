//! The overhead of `stepwise upgrade --strategy auto` when the plain upgrade fits, against the
//! plain upgrade itself (realise + set profile + switch), on the same fixture and machine, same
//! run. Prints figures; needs root (test beds). `cargo bench --bench engine_overhead`.

use std::time::{Duration, Instant};

use stepwise_testbed::{is_root, Bed, Disk, FixtureSpec};

fn main() {
    // `cargo test --all-targets` runs bench binaries too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("engine_overhead: run with `cargo bench --bench engine_overhead`; skipped under cargo test");
        return;
    }
    if !is_root() {
        eprintln!("engine_overhead: needs root (test beds); skipped");
        return;
    }
    let stepwise = std::env::var_os("STEPWISE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap();
            me.parent().unwrap().parent().unwrap().join("stepwise")
        });
    assert!(
        stepwise.exists(),
        "build the binary first: {}",
        stepwise.display()
    );
    let spec = FixtureSpec::two_big(8);
    let rounds = 3;
    let (mut plain, mut ours) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
        bed.install(&fx.old.drv).unwrap();
        let t = Instant::now();
        bed.install(&fx.new.drv).unwrap();
        plain += t.elapsed();
        drop(bed);

        let (bed, fx) = Bed::prepared_with(&spec, |_| Disk::Unlimited);
        bed.install(&fx.old.drv).unwrap();
        let t = Instant::now();
        let o = bed
            .command(&stepwise)
            .arg("--journal")
            .arg(bed.journal_path())
            .args(["-q", "upgrade", "--target", &fx.new.drv])
            .args(bed.system_args())
            .output()
            .unwrap();
        ours += t.elapsed();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(bed.current_system().as_deref(), Some(fx.new.out.as_str()));
    }
    let p = plain / rounds;
    let s = ours / rounds;
    println!("fixture two_big(8), {rounds} rounds, mean wall time:");
    println!("  plain realise + set profile + switch: {p:?}");
    println!("  stepwise upgrade --strategy auto:     {s:?}");
    println!("  overhead ratio: {:.2}", s.as_secs_f64() / p.as_secs_f64());
}
