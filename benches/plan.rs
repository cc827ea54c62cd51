//! Planning time and peak memory on synthetic closures of 1,000, 10,000 and 100,000 paths with
//! (up to) 2,000 changed packages, without and with local derivations (2% of the paths, as many
//! as a NixOS toplevel's initrd, etc-metadata, checks…; read by the planner as local glue).
//! Prints figures; asserts nothing.
//!
//! `cargo bench --bench plan` (release build). The generator is the tests' (tests/common).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

use stepwise::plan::{plan, Materialiser};
use synthetic::{system_with_locals, Params};

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new > l.size() {
                let now = LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this too, without it: keep
    // that quick.
    let quick =
        !std::env::args().any(|a| a == "--bench") || std::env::var("PLAN_BENCH_QUICK").is_ok();
    let chosen: Option<Vec<usize>> = std::env::var("PLAN_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let sizes: &[usize] = match &chosen {
        Some(v) => v,
        None if quick => &[1_000],
        None => &[1_000, 10_000, 100_000],
    };
    println!(
        "{:>8} {:>6} {:>6} {:>8} {:>8} {:>10} {:>12} {:>10} {:>12} {:>6} {:>10}",
        "paths",
        "locals",
        "units",
        "changed",
        "steps",
        "plan ms",
        "plan MiB",
        "input MiB",
        "step-1 ms",
        "fits",
        "steps@50%"
    );
    let runs = sizes.iter().flat_map(|&n| [(n, 0), (n, (n / 50).max(4))]);
    for (n, locals) in runs {
        let units = (n / 4).max(10);
        let changed = 2_000.min(units * 4 / 5);
        let s = system_with_locals(
            &Params {
                paths: n,
                units,
                changed,
                dep_change_per_mille: 20,
                seed: 7,
                booted: false,
                free: 8 << 30,
                kernel: false,
            },
            locals,
        );
        let input_bytes = LIVE.load(Relaxed);
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let t = Instant::now();
        let planned = plan(&s.input).expect("plan");
        let plan_ms = t.elapsed().as_secs_f64() * 1e3;
        let plan_peak = PEAK.load(Relaxed) - base;
        let steps = planned.outcome.as_ref().map(|p| p.steps.len()).unwrap_or(0);
        // The same with steps merged into half the room above the lowest peak.
        let mut roomy = s.input.clone();
        roomy.options.merge_headroom_percent = 50;
        let merged_steps = plan(&roomy)
            .ok()
            .and_then(|p| p.outcome.ok())
            .map(|p| p.steps.len())
            .unwrap_or(0);
        let t = Instant::now();
        if let Ok(p) = &planned.outcome {
            let mut m = Materialiser::new(&s.input.target, &s.drvs);
            let r = m.materialise(&p.steps[0].mask).expect("materialise");
            std::hint::black_box(r);
        }
        let step_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{:>8} {:>6} {:>6} {:>8} {:>8} {:>10.1} {:>12.1} {:>10.1} {:>12.1} {:>6} {:>10}",
            n,
            locals,
            units,
            changed,
            steps,
            plan_ms,
            mib(plan_peak),
            mib(input_bytes),
            step_ms,
            planned.outcome.is_ok(),
            merged_steps
        );
    }
}
