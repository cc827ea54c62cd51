//! A series of revisions of one system, as an hourly nixpkgs bump brings them: revision 0 is
//! installed, and every later one is a target. Each revision is a `generation` of the fixture's
//! Nix text (same packages where the version did not change, so consecutive revisions share
//! store paths), all in one file, with every revision's packages in one binary cache.
//!
//! The bed is built as `Bed::prepared` builds one: the whole series once at a fixed root on the
//! machine's disk, its packages copied to a cache, then a bed on a small tmpfs at the same root
//! that instantiates every revision's `.drv` files and substitutes from the cache.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::bed::{base_dir, Bed, Disk, Holder};
use crate::error::{BedError, Result};
use crate::fixture::{
    nix_str, package_line, switch_script, FixtureSpec, Links, PackageSpec, NIX_PRELUDE,
};
use crate::mount::{is_mount_point, unmount};
use crate::util::force_remove;

/// The revisions: each a list of packages whose `old` version is the one in that revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSpec {
    pub host: String,
    pub revisions: Vec<Vec<PackageSpec>>,
}

/// One built revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// `r0`, `r1`, …: the release string and the attribute in the file.
    pub name: String,
    pub drv: String,
    pub out: String,
}

/// A built series: its Nix file and its revisions in order.
#[derive(Debug, Clone)]
pub struct Series {
    pub file: PathBuf,
    pub revisions: Vec<Revision>,
    /// NAR bytes of each revision's closure.
    pub closure_bytes: Vec<u64>,
    /// NAR bytes of the union of each pair of consecutive revisions (the plain upgrade's peak
    /// without Nix's state).
    pub union_bytes: Vec<u64>,
}

impl SeriesSpec {
    /// The Nix text: every revision as an attribute `rK` (its toplevel) and `outs`, the list of
    /// their output paths.
    pub fn nix_text(&self, links: &Links) -> String {
        // Plain zero payloads, nothing shared: the defaults of a fixture.
        let defaults = FixtureSpec::new(&self.host);
        let mut t = String::from(NIX_PRELUDE);
        for (k, packages) in self.revisions.iter().enumerate() {
            let _ = writeln!(t, "  r{k}Pkgs = {{");
            for p in packages {
                if let Some(v) = &p.old {
                    t.push_str(&package_line(&defaults, p, v));
                }
            }
            let _ = writeln!(t, "  }};");
            let _ = writeln!(
                t,
                "  r{k} = generation {{ release = {}; pkgs = r{k}Pkgs; }};",
                nix_str(&format!("r{k}"))
            );
        }
        let _ = writeln!(t, "  host = {};", nix_str(&self.host));
        let _ = writeln!(t, "  switchScript = {};", nix_str(&switch_script(links)));
        let names: Vec<String> = (0..self.revisions.len()).map(|k| format!("r{k}")).collect();
        let _ = writeln!(t, "in {{");
        for n in &names {
            let _ = writeln!(t, "  {n} = {n}.toplevel;");
        }
        let outs: Vec<String> = names
            .iter()
            .map(|n| format!("{n}.toplevel.outPath"))
            .collect();
        let _ = writeln!(t, "  outs = [ {} ];", outs.join(" "));
        let pkgs: Vec<String> = names
            .iter()
            .map(|n| format!("(builtins.attrValues {n}Pkgs)"))
            .collect();
        let _ = writeln!(
            t,
            "  packages = builtins.concatLists (map (p: map (o: p.${{o}}) p.outputs) (builtins.concatLists [ {} ]));",
            pkgs.join(" ")
        );
        t.push_str("}\n");
        t
    }
}

impl Bed {
    /// A bed on a tmpfs of `disk_mib` MiB at a root of its own, with revision 0 installed (as
    /// `Bed::install` does) and every revision's `.drv` files valid. Needs root.
    pub fn series(spec: &SeriesSpec, disk_mib: u64) -> Result<(Bed, Series)> {
        let dir = tempfile::Builder::new()
            // `bed-PID-`: a series left by a killed test is cleaned up like a bed.
            .prefix(&format!("bed-{}-series-", std::process::id()))
            .tempdir_in(base_dir())
            .map_err(|e| BedError::io("creating the series directory", e))?;
        let root = dir.path().join("r");
        let cache = dir.path().join("cache");
        let file = dir.path().join("series.nix");
        fs::write(&file, spec.nix_text(&Links::for_root(&root)))
            .map_err(|e| BedError::io("writing the series", e))?;

        let (closure_bytes, union_bytes) = {
            let builder = Bed::at(root.clone(), Disk::Unlimited, None, Holder::Nothing)?;
            let outs = revision_outs(&builder, &file)?;
            let packages: Vec<String> =
                serde_json::from_value(builder.eval_json(&file, Some("packages"))?)
                    .map_err(|e| BedError::msg(format!("the series' packages: {e}")))?;
            let drvs = revision_drvs(&builder, &file, spec.revisions.len())?;
            builder.realise(&drvs)?;
            builder.copy_to_cache(&cache, &packages)?;
            measure(&builder, &outs)?
        };
        if is_mount_point(&root.join("nix")) {
            unmount(&root.join("nix"));
        }
        force_remove(&root).map_err(|e| BedError::io("wiping the builder's store", e))?;

        let bed = Bed::at(
            root,
            Disk::TmpfsMib(disk_mib),
            Some(cache),
            Holder::Temp(dir),
        )?;
        let drvs = revision_drvs(&bed, &file, spec.revisions.len())?;
        let outs = revision_outs(&bed, &file)?;
        bed.install(&drvs[0])?;
        let revisions = drvs
            .into_iter()
            .zip(outs)
            .enumerate()
            .map(|(k, (drv, out))| Revision {
                name: format!("r{k}"),
                drv,
                out,
            })
            .collect();
        Ok((
            bed,
            Series {
                file,
                revisions,
                closure_bytes,
                union_bytes,
            },
        ))
    }
}

fn revision_drvs(bed: &Bed, file: &Path, n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|k| bed.instantiate(file, Some(&format!("r{k}"))))
        .collect()
}

fn revision_outs(bed: &Bed, file: &Path) -> Result<Vec<String>> {
    serde_json::from_value(bed.eval_json(file, Some("outs"))?)
        .map_err(|e| BedError::msg(format!("the series' outputs: {e}")))
}

/// Closure sizes of each revision and of each consecutive pair's union.
fn measure(bed: &Bed, outs: &[String]) -> Result<(Vec<u64>, Vec<u64>)> {
    let closures = outs
        .iter()
        .map(|o| bed.closure(&[o]))
        .collect::<Result<Vec<_>>>()?;
    let bytes = |set: &std::collections::BTreeSet<String>| -> Result<u64> {
        Ok(bed
            .nar_sizes(&set.iter().collect::<Vec<_>>())?
            .values()
            .sum())
    };
    let each = closures.iter().map(bytes).collect::<Result<Vec<_>>>()?;
    let unions = closures
        .windows(2)
        .map(|w| bytes(&w[0].union(&w[1]).cloned().collect()))
        .collect::<Result<Vec<_>>>()?;
    Ok((each, unions))
}
