//! Rendering a plan: a human table, and the body of its JSON document (the version and the
//! framing are `stepwise::output`'s, the same for every command).

use std::io::{self, Write};

use serde::Serialize;

use super::boot::{BootPlan, Initrd};
use super::diff::Diff;
use super::planner::{Frame, Plan, Planned, Shortfall, Step};
use super::units::Change;
use crate::drv::{StoreDir, StorePath};

/// `1.5 MiB`, binary units, one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    // GiB and up: two decimals, so steps on a 10 GiB disk still differ visibly.
    if u >= 3 {
        format!("{v:.2} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn signed_bytes(d: i64) -> String {
    if d < 0 {
        format!("-{}", human_bytes(d.unsigned_abs()))
    } else {
        format!("+{}", human_bytes(d as u64))
    }
}

/// What the plan is about, for the header.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub g0: Option<String>,
    pub target_drv: String,
    pub target_out: Option<String>,
    /// For the full paths of the boot figures.
    #[serde(skip)]
    pub store_dir: Option<StoreDir>,
}

impl Header {
    pub fn new(
        sd: &StoreDir,
        g0: Option<&StorePath>,
        drv: &StorePath,
        out: Option<&StorePath>,
    ) -> Self {
        Header {
            g0: g0.map(|p| sd.display(p)),
            target_drv: sd.display(drv),
            target_out: out.map(|p| sd.display(p)),
            store_dir: Some(sd.clone()),
        }
    }
}

fn versions(v: &[String]) -> String {
    if v.is_empty() {
        "∅".into()
    } else {
        v.join(", ")
    }
}

/// The human table.
pub fn write_human(w: &mut dyn Write, h: &Header, p: &Planned) -> io::Result<()> {
    writeln!(
        w,
        "Upgrade {} → {}",
        h.g0.as_deref().unwrap_or("(no running system)"),
        h.target_out.as_deref().unwrap_or(&h.target_drv)
    )?;
    writeln!(w)?;
    write_packages(w, &p.diff)?;
    writeln!(w)?;
    write_frame(w, &p.frame, p.outcome.as_ref().ok().map(|x| x.peak))?;
    writeln!(w)?;
    match &p.outcome {
        Ok(plan) => write_steps(w, plan, p.frame.disk.measured)?,
        Err(s) => write_shortfall(w, s, &p.frame)?,
    }
    if let (Some(b), Some(sd)) = (&p.boot, &h.store_dir) {
        writeln!(w)?;
        write_boot(w, b, sd)?;
    }
    if !p.notes.is_empty() {
        writeln!(w)?;
        writeln!(w, "Notes:")?;
        for n in &p.notes {
            writeln!(w, "  - {n}")?;
        }
    }
    Ok(())
}

/// What changes: a row per package, the build inputs apart, the closures.
fn write_packages(w: &mut dyn Write, d: &Diff) -> io::Result<()> {
    writeln!(
        w,
        "Packages: {} changed, {} added, {} removed, {} unchanged",
        d.count(Change::Changed),
        d.count(Change::Added),
        d.count(Change::Removed),
        d.unchanged
    )?;
    let width = d
        .rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for r in &d.rows {
        let tag = match r.change {
            Change::Changed => "C",
            Change::Added => "A",
            Change::Removed => "R",
            Change::Unchanged => "=",
        };
        let outs = if r.outputs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", r.outputs.join(","))
        };
        writeln!(
            w,
            "  {tag}  {:<width$}  {} → {}{}  {}{}",
            r.name,
            versions(&r.old_versions),
            versions(&r.new_versions),
            outs,
            signed_bytes(r.delta()),
            if r.estimate { " (estimate)" } else { "" },
        )?;
    }
    if !d.build_inputs.is_empty() {
        let names: Vec<String> = d
            .build_inputs
            .iter()
            .map(|r| format!("{} {}", r.name, versions(&r.new_versions)))
            .collect();
        let bytes: u64 = d.build_inputs.iter().map(|r| r.new_size).sum();
        writeln!(
            w,
            "Build inputs (on disk while building, in no generation): {} ({})",
            names.join(", "),
            human_bytes(bytes)
        )?;
    }
    writeln!(
        w,
        "Closure: {} → {} ({})",
        human_bytes(d.g0_closure),
        human_bytes(d.target_closure),
        signed_bytes(d.target_closure as i64 - d.g0_closure as i64)
    )
}

/// The steps' table; with `nar`, their NAR figures beside the disk's.
fn write_steps(w: &mut dyn Write, plan: &Plan, nar: bool) -> io::Result<()> {
    writeln!(w, "Steps ({}):", plan.steps.len())?;
    let names: Vec<String> = plan.steps.iter().map(step_name).collect();
    let nw = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 48);
    write!(
        w,
        "  {:>3}  {:<nw$}  {:>11}  {:>11}  {:>11}",
        "#", "upgrades", "adds", "frees", "peak"
    )?;
    if nar {
        write!(w, "  {:>11}  {:>11}", "adds (NAR)", "frees (NAR)")?;
    }
    writeln!(w)?;
    for (s, n) in plan.steps.iter().zip(&names) {
        let n = if n.chars().count() > nw {
            let cut: String = n.chars().take(nw - 1).collect();
            format!("{cut}…")
        } else {
            n.clone()
        };
        let frees = if s.space.frees == 0 {
            "0 B".to_string()
        } else {
            format!("-{}", human_bytes(s.space.frees))
        };
        write!(
            w,
            "  {:>3}  {:<nw$}  {:>11}  {:>11}  {:>11}",
            s.index,
            n,
            format!("+{}", human_bytes(s.space.adds)),
            frees,
            human_bytes(s.space.peak)
        )?;
        if nar {
            write!(
                w,
                "  {:>11}  {:>11}",
                format!("+{}", human_bytes(s.space_nar.adds)),
                format!("-{}", human_bytes(s.space_nar.frees))
            )?;
        }
        if s.reboot_after {
            let frees = human_bytes(s.space.reboot_frees);
            write!(w, "  then reboot (frees {frees})")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// What a step moves: its packages, its stubs marked, or "(glue only)".
fn step_name(s: &Step) -> String {
    let mut v: Vec<String> = s.upgraded.clone();
    v.extend(s.stubbed.iter().map(|n| format!("{n} (stub)")));
    if v.is_empty() {
        "(glue only)".to_string()
    } else {
        v.join(", ")
    }
}

fn initrd_text(i: &Initrd, sd: &StoreDir) -> String {
    match i {
        Initrd::Path(p) => sd.display(p),
        Initrd::Glue(_) => "rebuilt as glue (its path is known once the step is written)".into(),
        Initrd::Unknown => "G0's (glue)".into(),
        Initrd::None => "none found".into(),
    }
}

fn write_boot(w: &mut dyn Write, b: &BootPlan, sd: &StoreDir) -> io::Result<()> {
    writeln!(w, "Boot loader and /boot (a run that reaches the target):")?;
    writeln!(
        w,
        "  boot-loader installs  {}  (one per step with --action switch or boot; {} with --action test)",
        b.installs, b.installs_with_test
    )?;
    writeln!(
        w,
        "  boot entries          +{} at most at any install  ({} before the run, so at most {}{})",
        b.entries_added_max,
        b.entries_before,
        b.entries_before + b.entries_added_max,
        if b.g0_in_profile {
            ""
        } else {
            "; the running system is not a generation of the profile, so none of the run's replaces it"
        }
    )?;
    match (&b.kernel_unit, b.kernel_step) {
        (None, _) => writeln!(w, "  kernel                none found in the system")?,
        (Some(k), None) => writeln!(w, "  kernel                {k} does not change")?,
        (Some(_), Some(s)) => writeln!(
            w,
            "  kernel group          {} change{} together in step {s}",
            b.kernel_group.join(", "),
            if b.kernel_group.len() == 1 { "s" } else { "" }
        )?,
    }
    writeln!(
        w,
        "  kernel+initrd pairs   at most {} of this run in /boot at once ({} while a loader that copies before removing installs){}",
        b.pairs_max,
        b.pairs_max_copy_first,
        if b.initrd_is_glue {
            "; a bound: the initrd is glue"
        } else {
            ""
        }
    )?;
    writeln!(
        w,
        "  /boot needs room for {} kernel+initrd pair(s) more than it holds now, at most",
        b.pairs_added_max
    )?;
    for s in &b.steps {
        writeln!(
            w,
            "  {:>3}  kernel {}{}",
            s.index,
            s.kernel
                .as_ref()
                .map_or("none found".to_string(), |k| sd.display(k)),
            if s.new_pair { "  (new pair)" } else { "" }
        )?;
        writeln!(w, "       initrd {}", initrd_text(&s.initrd, sd))?;
    }
    Ok(())
}

fn write_frame(w: &mut dyn Write, f: &Frame, peak: Option<u64>) -> io::Result<()> {
    writeln!(
        w,
        "Disk: {} used, {} free, reserve {}: at most {} may be used",
        human_bytes(f.used),
        human_bytes(f.free),
        human_bytes(f.reserve),
        human_bytes(f.ceiling)
    )?;
    writeln!(
        w,
        "  plain upgrade peak  {:>11}  ({})",
        human_bytes(f.plain_peak),
        if f.plain_fits { "fits" } else { "does not fit" }
    )?;
    writeln!(
        w,
        "  lower bound         {:>11}  (used − |G0| + max(|G0|, |target|))",
        human_bytes(f.lower_bound)
    )?;
    if f.largest_move > 0 {
        writeln!(
            w,
            "  largest package     {:>11}  ({}: old and new side by side once)",
            format!("+{}", human_bytes(f.largest_move)),
            f.largest_move_name
        )?;
    }
    if let Some(p) = peak {
        writeln!(w, "  this plan's peak    {:>11}", human_bytes(p))?;
    }
    write_disk_figures(w, &f.disk)?;
    if f.estimated > 0 {
        writeln!(
            w,
            "  of which estimated  {:>11}  (to be built)",
            human_bytes(f.estimated)
        )?;
    }
    Ok(())
}

/// Which of the figures above were measured on the filesystem, which estimated, and the NAR
/// bytes beside them (only when the filesystem was measured: otherwise they are NAR bytes).
fn write_disk_figures(w: &mut dyn Write, d: &super::planner::DiskFigures) -> io::Result<()> {
    if !d.measured {
        return Ok(());
    }
    let ratio = |ppm: u64| format!("{:.3}", ppm as f64 / 1e6);
    writeln!(
        w,
        "  sizes are {} bytes: {} paths measured on disk {} (NAR {}, ratio {}); {} paths estimated {} (NAR {} × {})",
        d.filesystem,
        d.measured_paths,
        human_bytes(d.measured_bytes),
        human_bytes(d.measured_nar),
        ratio(d.measured_ratio_ppm),
        d.estimated_paths,
        human_bytes(d.estimated_bytes),
        human_bytes(d.estimated_nar),
        ratio(d.ratio_ppm)
    )?;
    writeln!(
        w,
        "  in NAR bytes        |G0| {}, |target| {}, plain upgrade peak {}",
        human_bytes(d.g0_closure_nar),
        human_bytes(d.target_closure_nar),
        human_bytes(d.plain_peak_nar)
    )?;
    if d.plain_wal + d.plain_build_logs == 0 {
        return Ok(());
    }
    writeln!(
        w,
        "  Nix's bookkeeping   {} write-ahead log while one realise registers {} paths ({} each, gone when it exits)",
        human_bytes(d.plain_wal),
        d.plain_registrations,
        human_bytes(d.wal_per_path),
    )?;
    writeln!(
        w,
        "                      {} build logs of {} glue builds (kept); both estimated, in the plain peak",
        human_bytes(d.plain_build_logs),
        d.plain_build_logs / d.build_log.max(1),
    )
}

fn write_shortfall(w: &mut dyn Write, s: &Shortfall, f: &Frame) -> io::Result<()> {
    writeln!(
        w,
        "No order fits. After {} step(s), {} more is needed to move {}; the whole upgrade needs {} more without stubs or reboots.",
        s.steps_done,
        human_bytes(s.missing_next),
        if s.bottleneck.is_empty() {
            "on".to_string()
        } else {
            s.bottleneck.join("+")
        },
        human_bytes(s.missing_total)
    )?;
    writeln!(w, "What would help:")?;
    for (n, b) in &s.non_vital_candidates {
        writeln!(
            w,
            "  - --non-vital {n}: stubbing it for the duration frees {}",
            human_bytes(*b)
        )?;
    }
    if !s.non_vital_that_fits.is_empty() {
        let flags: Vec<String> = s
            .non_vital_that_fits
            .iter()
            .map(|n| format!("--non-vital {n}"))
            .collect();
        writeln!(w, "  - {}: with this the plan fits", flags.join(" "))?;
    }
    if s.reboot_would_free > 0 || s.fits_with_reboot {
        writeln!(
            w,
            "  - --reboot when-needed: a reboot frees {} the booted system holds{}",
            human_bytes(s.reboot_would_free),
            if s.fits_with_reboot {
                "; with it the plan fits"
            } else {
                ""
            }
        )?;
    }
    writeln!(
        w,
        "  - {} more free space on the store's filesystem (delete old generations, then collect garbage){}",
        human_bytes(s.missing_total),
        if f.reserve > 0 {
            format!(", or a smaller --reserve (now {})", human_bytes(f.reserve))
        } else {
            String::new()
        }
    )?;
    Ok(())
}

/// The plan's JSON document without its envelope (`stepwise output::write_document` adds the kind
/// and version).
pub fn json_body(h: &Header, p: &Planned, sd: &StoreDir) -> serde_json::Value {
    #[derive(Serialize)]
    struct Doc<'a> {
        fits: bool,
        #[serde(flatten)]
        header: &'a Header,
        frame: &'a Frame,
        peak: Option<u64>,
        diff: &'a Diff,
        steps: Vec<JsonStep<'a>>,
        shortfall: Option<&'a Shortfall>,
        notes: &'a [String],
        boot: Option<JsonBoot<'a>>,
    }
    let steps = p
        .outcome
        .as_ref()
        .map(|plan| plan.steps.iter().map(|s| JsonStep::of(s, sd)).collect())
        .unwrap_or_default();
    let doc = Doc {
        fits: p.outcome.is_ok(),
        header: h,
        frame: &p.frame,
        peak: p.outcome.as_ref().ok().map(|x| x.peak),
        diff: &p.diff,
        steps,
        shortfall: p.outcome.as_ref().err(),
        notes: &p.notes,
        boot: p.boot.as_ref().map(|b| JsonBoot::of(b, sd)),
    };
    // Plain data (strings, numbers, maps with string keys): serialising it cannot fail.
    serde_json::to_value(&doc).expect("the plan serialises to JSON")
}

/// A step in `plan --json`.
#[derive(Serialize)]
struct JsonStep<'a> {
    index: usize,
    upgraded: &'a [String],
    stubbed: &'a [String],
    adds: u64,
    frees: u64,
    peak: u64,
    used_after: u64,
    reboot_after: bool,
    reboot_frees: u64,
    /// The same step in NAR bytes (the figures above are the disk's bytes).
    adds_nar: u64,
    frees_nar: u64,
    peak_nar: u64,
    /// target path → replacement (full paths).
    mask: std::collections::BTreeMap<String, String>,
}

impl<'a> JsonStep<'a> {
    fn of(s: &'a Step, sd: &StoreDir) -> Self {
        JsonStep {
            index: s.index,
            upgraded: &s.upgraded,
            stubbed: &s.stubbed,
            adds: s.space.adds,
            frees: s.space.frees,
            peak: s.space.peak,
            used_after: s.space.used_after,
            reboot_after: s.reboot_after,
            reboot_frees: s.space.reboot_frees,
            adds_nar: s.space_nar.adds,
            frees_nar: s.space_nar.frees,
            peak_nar: s.space_nar.peak,
            mask: s
                .mask
                .0
                .iter()
                .map(|(a, b)| (sd.display(a), sd.display(b)))
                .collect(),
        }
    }
}

/// The boot plan in `plan --json`.
#[derive(Serialize)]
struct JsonBoot<'a> {
    installs: usize,
    installs_with_test: usize,
    entries_before: usize,
    entries_added_max: usize,
    g0_in_profile: bool,
    kernel_unit: &'a Option<String>,
    kernel_group: &'a [String],
    kernel_step: Option<usize>,
    pair_steps: &'a [usize],
    pairs_max: usize,
    pairs_max_copy_first: usize,
    pairs_added_max: usize,
    initrd_is_glue: bool,
    steps: Vec<JsonBootStep>,
}

impl<'a> JsonBoot<'a> {
    fn of(b: &'a BootPlan, sd: &StoreDir) -> Self {
        JsonBoot {
            installs: b.installs,
            installs_with_test: b.installs_with_test,
            entries_before: b.entries_before,
            entries_added_max: b.entries_added_max,
            g0_in_profile: b.g0_in_profile,
            kernel_unit: &b.kernel_unit,
            kernel_group: &b.kernel_group,
            kernel_step: b.kernel_step,
            pair_steps: &b.pair_steps,
            pairs_max: b.pairs_max,
            pairs_max_copy_first: b.pairs_max_copy_first,
            pairs_added_max: b.pairs_added_max,
            initrd_is_glue: b.initrd_is_glue,
            steps: b
                .steps
                .iter()
                .map(|s| JsonBootStep {
                    index: s.index,
                    kernel: s.kernel.as_ref().map(|k| sd.display(k)),
                    initrd: match &s.initrd {
                        Initrd::Path(p) => Some(sd.display(p)),
                        _ => None,
                    },
                    initrd_rebuilt: matches!(s.initrd, Initrd::Glue(_)),
                    new_pair: s.new_pair,
                })
                .collect(),
        }
    }
}

/// A step's kernel and initrd in `plan --json`.
#[derive(Serialize)]
struct JsonBootStep {
    index: usize,
    /// The kernel package's output (full path), if known.
    kernel: Option<String>,
    /// The initrd's path when it is known before the step is written (a unit's output).
    initrd: Option<String>,
    /// The initrd is glue rebuilt for this step.
    initrd_rebuilt: bool,
    new_pair: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(signed_bytes(-2048), "-2.0 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }
}
