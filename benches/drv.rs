//! Parse + hashDerivationModulo over a synthetic graph of 10,000 derivations (the size of a NixOS
//! system's build closure). Prints wall time and peak heap; run with
//! `cargo bench --bench drv` (add `-- N` for another graph size).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use stepwise::drv::{
    self, Derivation, DrvSource, Hasher, Output, SourceError, StoreDir, StorePath,
};

/// Counts live heap bytes and their peak, to report the memory of the measured phase alone.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Derivations as bytes, read and parsed on demand: what reading them from the store costs.
struct Bytes<'a> {
    sd: &'a StoreDir,
    files: &'a HashMap<StorePath, Vec<u8>>,
}

impl DrvSource for Bytes<'_> {
    fn read(&self, p: &StorePath) -> Result<Derivation, SourceError> {
        let b = self.files.get(p).ok_or("missing")?;
        Ok(drv::parse(b, self.sd)?)
    }
}

/// User + system CPU seconds of this process (from /proc/self/stat; 100 ticks a second): the
/// figure that does not depend on how busy the machine is.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The generator's own derivations, growing while it hashes them.
struct Shared(RefCell<HashMap<StorePath, Derivation>>);

impl DrvSource for Shared {
    fn read(&self, p: &StorePath) -> Result<Derivation, SourceError> {
        Ok(self.0.borrow().get(p).cloned().ok_or("missing")?)
    }
}

/// A deterministic pseudo-random sequence (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The files by path, and (path, name) in the order they were made (inputs first).
type Graph = (HashMap<StorePath, Vec<u8>>, Vec<(StorePath, String)>);

fn generate(sd: &StoreDir, n: usize) -> Graph {
    let mut rng = Lcg(42);
    let mut files = HashMap::new();
    let mut made: Vec<(StorePath, Derivation)> = Vec::with_capacity(n);
    let mut order = Vec::with_capacity(n);
    let src = sd.make_store_path("source", &[7; 32], "builder.sh");
    let shared = Shared(RefCell::new(HashMap::new()));
    let mut gen_hasher = Hasher::new(sd.clone(), &shared);
    for i in 0..n {
        let name = format!("pkg{i}-1.{}", i % 17);
        let mut d = Derivation {
            system: b"x86_64-linux".to_vec(),
            builder: b"/nix/store/00000000000000000000000000000000-bash/bin/bash".to_vec(),
            args: vec![b"-e".to_vec(), sd.display(&src).into_bytes()],
            input_srcs: BTreeSet::from([src.clone()]),
            ..Default::default()
        };
        let fixed = i % 10 == 3;
        if fixed {
            let hash = format!("{:064x}", i);
            let p = drv::hash::fixed_output_path(sd, &name, "out", "r:sha256", &hash).unwrap();
            d.outputs.insert(
                "out".into(),
                Output {
                    path: Some(p.clone()),
                    hash_algo: "r:sha256".into(),
                    hash,
                },
            );
            d.env.insert(b"out".to_vec(), sd.display(&p).into_bytes());
        } else {
            let outs: &[&str] = if i % 4 == 0 {
                &["dev", "out"]
            } else {
                &["out"]
            };
            for o in outs {
                d.outputs
                    .insert(o.to_string(), Output::input_addressed(src.clone()));
            }
            // Inputs: a few earlier derivations, biased to recent ones (like a stdenv chain).
            let k = if i == 0 {
                0
            } else {
                1 + (rng.next() % 8) as usize
            };
            for _ in 0..k.min(i) {
                let j = if rng.next() % 2 == 0 {
                    i - 1 - (rng.next() as usize % i.min(20))
                } else {
                    rng.next() as usize % i
                };
                let (p, dep) = &made[j];
                let o = dep.outputs.keys().next().unwrap().clone();
                let out_path = sd.display(dep.outputs[&o].path.as_ref().unwrap());
                d.input_drvs.entry(p.clone()).or_default().insert(o);
                let deps = d.env.entry(b"buildInputs".to_vec()).or_default();
                deps.extend_from_slice(out_path.as_bytes());
                deps.push(b' ');
            }
        }
        d.env.insert(b"name".to_vec(), name.clone().into_bytes());
        d.env.insert(b"system".to_vec(), b"x86_64-linux".to_vec());
        d.env.insert(b"builder".to_vec(), d.builder.clone());
        d.env.insert(
            b"buildPhase".to_vec(),
            format!(
                "runHook preBuild\nmake -j$NIX_BUILD_CORES {i}\n\"quoted\"\trunHook postBuild\n"
            )
            .repeat(8)
            .into_bytes(),
        );
        if !fixed {
            gen_hasher.fill_outputs(&mut d, &name).unwrap();
        }
        let aterm = drv::to_aterm(&d, sd);
        let p = drv::hash::drv_path_of_aterm(sd, &name, &d, &aterm);
        files.insert(p.clone(), aterm);
        shared.0.borrow_mut().insert(p.clone(), d.clone());
        order.push((p.clone(), name));
        made.push((p, d));
    }
    (files, order)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let sd = StoreDir::new("/nix/store").unwrap();
    let t = Instant::now();
    let (files, order) = generate(&sd, n);
    let total_bytes: usize = files.values().map(Vec::len).sum();
    let edges: usize = order.len();
    println!(
        "generated {} derivations ({:.1} MiB of ATerm) in {:.2?}",
        edges,
        total_bytes as f64 / 1048576.0,
        t.elapsed()
    );

    // Parse only.
    let t = Instant::now();
    let cpu = cpu_seconds();
    let mut parsed = 0usize;
    for b in files.values() {
        parsed += drv::parse(b, &sd).unwrap().outputs.len();
    }
    let parse_time = t.elapsed();
    let parse_cpu = cpu_seconds() - cpu;
    assert!(parsed >= n);

    // Parse + hash modulo of every derivation (each read once through the memo) + recompute
    // every output path and compare: the work of checking a whole system.
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let cpu = cpu_seconds();
    let source = Bytes {
        sd: &sd,
        files: &files,
    };
    let mut hasher = Hasher::new(sd.clone(), &source);
    let mut checked = 0usize;
    for (p, name) in &order {
        let d = source.read(p).unwrap();
        let computed = hasher.output_paths(&d, name).unwrap();
        for (o, v) in &d.outputs {
            assert_eq!(Some(&computed[o]), v.path.as_ref());
            checked += 1;
        }
        hasher.path_hash(p).unwrap();
    }
    let hash_time = t.elapsed();
    let hash_cpu = cpu_seconds() - cpu;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        })
        .unwrap_or_default();
    println!(
        "parse:                  {n} derivations in {parse_time:.2?} ({:.1} µs each, {:.0} MiB/s)",
        parse_time.as_secs_f64() * 1e6 / n as f64,
        total_bytes as f64 / 1048576.0 / parse_time.as_secs_f64()
    );
    println!("parse + hash modulo + output paths: {n} derivations, {checked} outputs checked in {hash_time:.2?} ({:.1} µs each)",
        hash_time.as_secs_f64() * 1e6 / n as f64);
    println!(
        "CPU time (independent of machine load): parse {parse_cpu:.2}s, parse + hash {hash_cpu:.2}s"
    );
    println!(
        "peak heap of that phase: {:.1} MiB (memo: {} entries); process VmHWM: {} kB",
        peak as f64 / 1048576.0,
        hasher.memoised(),
        hwm
    );
}
