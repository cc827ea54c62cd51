//! What a NAR byte costs on the store's filesystem: the planner works in the disk's own bytes.
//!
//! `statvfs` counts allocated blocks; Nix counts NAR bytes. They differ by block rounding (a
//! small file takes a whole block), by compression (btrfs `compress=`, ZFS) and by
//! deduplication (`auto-optimise-store` hard-links identical files through `<store>/.links`).
//! `effects::fs::measure_store` walks the paths already on disk and fills a [`DiskCost`]; here it
//! becomes the size of every path in the space problem:
//!
//! - a path on disk: its measured bytes, counting only files no other store path shares (what
//!   deleting it frees; a shared file frees nothing, so frees are never over-stated);
//! - a path not on disk: its NAR size × [`DiskCost::ratio_ppm`], a conservative ratio: the
//!   sample's ratio without credit for deduplication (new files may share nothing), plus a
//!   margin on filesystems that compress (a new version need not compress as well as the
//!   sample), never below [`COMPRESSED_FLOOR_PPM`], and never below 1 where the filesystem
//!   does not compress (block rounding only adds);
//! - where the filesystem does not compress, never below its NAR size plus the sample's mean
//!   rounding per path ([`DiskCost::path_overhead`]). One ratio over the sample is set by its
//!   large files, where rounding is nothing; a step of a thousand small paths (a mass rebuild)
//!   pays a block or two per file, and was under-estimated by ~6 KiB a path;
//! - and for each path Nix's own bookkeeping beside it, on the store's filesystem when Nix's
//!   state is ([`DiskCost::bookkeeping`]): its rows in Nix's database, and for a derivation a
//!   step builds (glue, configuration-specific derivations) the `.drv` file; its build log
//!   ([`DiskCost::build_log`]) stays for good, one for every glue build of every step;
//! - while a realise runs, Nix's write-ahead log beside the database
//!   ([`DiskCost::registration_transient`] a path it registers): a step's peak and the plain
//!   upgrade's count it, what stays after does not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::order::OrderedStep;
use super::space::{Simulator, SpaceProblem, StepSpace};
use crate::drv::StorePath;

/// Parts per million.
pub const PPM: u64 = 1_000_000;

/// The lowest ratio assumed for a path not yet on disk: 1/3. Nix store contents (ELF files,
/// libraries, already-compressed man pages and icons) rarely compress better than 3:1 with
/// btrfs's zstd level 3; a sample that does better (a store of mostly text) must not promise
/// it for what is still to come.
pub const COMPRESSED_FLOOR_PPM: u64 = 333_334;

/// The margin on a compressing filesystem's measured ratio: 10%, for new versions that compress
/// worse than the old ones and for the metadata btrfs keeps per extent beside the data blocks.
pub const COMPRESSED_MARGIN_PPM: u64 = 100_000;

/// Bytes Nix's database grows by for each path it registers (its `ValidPaths` row, its
/// `Refs` rows): about 0.5 KiB measured on the real-scale fixture's steps, doubled.
pub const NIX_DB_BYTES_PER_PATH: u64 = 1024;

/// Bytes Nix's SQLite write-ahead log grows by for each path one process registers: a
/// transaction each, of a few whole pages (`ValidPaths`, `Refs` and their indexes). The log is
/// reset only at a checkpoint, which Nix defers to 40,000 pages, and deleted when the process
/// exits: it is a step's transient, not a lasting cost. Measured on Nix 2.8 with the real-scale
/// fixture (`cargo bench --bench nix_transient`): 32–43 KiB a path (the mass rebuild's realise of
/// 316 paths: 10.3 MiB of log, gone after it), hence 40 KiB. Nix 2.34 writes the same: `nix-store
/// --add` of 2,000 small files grows the log by 14.1 KB a path there, 14.3 KB on 2.8 (no
/// references, so fewer pages than a package's registration).
pub const NIX_WAL_BYTES_PER_PATH: u64 = 40 * 1024;

/// The most the write-ahead log holds: Nix's checkpoint interval, 40,000 frames of a 4 KiB
/// page and its 24-byte header.
pub const NIX_WAL_MAX_BYTES: u64 = 40_000 * (4096 + 24);

/// What was measured on the store's filesystem (empty: nothing measured, sizes stay NAR bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCost {
    /// The filesystem's type as `statfs` names it (`btrfs`, `ext4`, `tmpfs`, …).
    pub filesystem: String,
    /// Whether the filesystem may store fewer bytes than written (btrfs, ZFS, bcachefs).
    pub compresses: bool,
    /// Paths measured, and their NAR bytes.
    pub sample_paths: u64,
    pub sample_nar: u64,
    /// Their allocated bytes, each path counted on its own (a file shared by two paths counted
    /// in both): compression and block rounding, no deduplication.
    pub sample_allocated: u64,
    /// The same files with every inode counted once: what the disk really holds for them.
    pub sample_allocated_unique: u64,
    /// Per measured path: bytes in files no other store path shares (what deleting it frees).
    pub own_bytes: BTreeMap<StorePath, u64>,
    /// Whether the store is deduplicated (`<store>/.links` exists).
    pub optimised: bool,
    /// Bytes the filesystem really uses (`f_blocks − f_bfree`): on btrfs `st_blocks` counts
    /// bytes before compression, so compression shows only here.
    pub fs_used: u64,
    /// NAR bytes of every live path (0: not asked, the filesystem does not compress).
    pub live_nar: u64,
    /// What a step that ran out of space taught, in ppm on top of the ratio (0: nothing learnt;
    /// see `replan::learnt_cost_ppm`): the run's own evidence that estimates here were low.
    #[serde(default)]
    pub learnt_ppm: u64,
    /// The filesystem's allocation unit (`f_frsize`; 0: not measured).
    #[serde(default)]
    pub block: u64,
    /// Whether Nix's state directory (its database, build logs) is on the store's filesystem.
    #[serde(default)]
    pub state_on_store_fs: bool,
    /// The sample's mean bytes per path beyond its NAR size, where the filesystem does not
    /// compress (block rounding of each file; 0 where it compresses or nothing was measured).
    #[serde(default)]
    pub path_overhead: u64,
}

impl DiskCost {
    /// Whether anything was measured.
    pub fn is_measured(&self) -> bool {
        self.sample_nar > 0
    }

    /// The sample's ratio of allocated bytes (`st_blocks`) to NAR bytes, in ppm.
    fn block_ratio_ppm(&self) -> u64 {
        ratio(self.sample_allocated, self.sample_nar).max(1)
    }

    /// What a NAR byte costs on disk, measured, in ppm (1.0 when unmeasured). Where the
    /// filesystem compresses, the lower of the block ratio and the whole filesystem's used bytes
    /// over the live paths' NAR bytes, with the hard links' saving added back. Both over-state
    /// the cost (blocks before compression; used bytes include dead paths, Nix's database and
    /// anything else on the filesystem), so the lower one still does.
    pub fn measured_ratio_ppm(&self) -> u64 {
        if !self.is_measured() {
            return PPM;
        }
        let block = self.block_ratio_ppm();
        if !self.compresses || self.live_nar == 0 || self.sample_allocated_unique == 0 {
            return block;
        }
        let undeduplicated = self.fs_used as u128 * self.sample_allocated as u128
            / self.sample_allocated_unique as u128;
        block.min(ratio(undeduplicated as u64, self.live_nar))
    }

    /// The ratio applied to a path not yet on disk (see the module comment), in ppm, with what
    /// the run learnt from a step that ran out of space on top.
    pub fn ratio_ppm(&self) -> u64 {
        self.scale_learnt(self.base_ratio_ppm())
    }

    fn base_ratio_ppm(&self) -> u64 {
        let measured = self.measured_ratio_ppm();
        if !self.is_measured() {
            PPM
        } else if self.compresses {
            (measured * (PPM + COMPRESSED_MARGIN_PPM))
                .div_ceil(PPM)
                .max(COMPRESSED_FLOOR_PPM)
        } else {
            measured.max(PPM)
        }
    }

    /// Disk bytes of a path not yet on disk, from its NAR size: NAR × ratio, at least NAR plus
    /// the mean rounding per path, and Nix's database rows for it.
    pub fn estimate(&self, nar: u64) -> u64 {
        self.contents(nar) + self.bookkeeping(false)
    }

    /// Disk bytes of a path a step builds (glue, a configuration-specific derivation) from its
    /// NAR size: [`Self::estimate`] and its derivation file and build log.
    pub fn estimate_built(&self, nar: u64) -> u64 {
        self.contents(nar) + self.bookkeeping(true)
    }

    /// Disk bytes of the new version of a glue path `path` (NAR size `nar`) a step builds: its
    /// [`Self::estimate_built`], or what the version on disk takes if that is more. A tree of
    /// symlinks (system-path, etc) takes a block for each link whose target is too long to keep
    /// in its inode (ext4: 60 bytes; a store path is longer), which its NAR size does not show:
    /// 20,000 links are ~80 MiB on a 4 KiB ext4 against a few MB of NAR.
    pub fn estimate_rebuilt(&self, path: &StorePath, nar: u64, present: bool) -> u64 {
        let estimate = self.estimate_built(nar);
        match self.bytes_of(path, nar, present) {
            (measured, true) => estimate.max(self.scale_learnt(measured) + self.bookkeeping(true)),
            _ => estimate,
        }
    }

    fn contents(&self, nar: u64) -> u64 {
        let scaled = ((nar as u128 * self.ratio_ppm() as u128).div_ceil(PPM as u128)) as u64;
        if self.compresses {
            return scaled;
        }
        scaled.max(self.scale_learnt(nar.saturating_add(self.path_overhead)))
    }

    /// What Nix writes beside a path it registers, on the store's filesystem: its database rows,
    /// and for a path a step `built` the derivation file (a block). Its build log is
    /// [`Self::build_log`]: it stays when the path goes.
    pub fn bookkeeping(&self, built: bool) -> u64 {
        if !self.is_measured() || !self.state_on_store_fs {
            return 0;
        }
        NIX_DB_BYTES_PER_PATH + if built { self.block } else { 0 }
    }

    /// What a build leaves in Nix's log directory (a compressed log: a block), on the store's
    /// filesystem when Nix's state is. No collect deletes it: a chain leaves one for every glue
    /// build of every step.
    pub fn build_log(&self) -> u64 {
        if !self.is_measured() || !self.state_on_store_fs {
            return 0;
        }
        self.block
    }

    /// What each path a realise registers holds beside it while the realise runs (Nix's
    /// write-ahead log), where Nix's state shares the store's filesystem.
    pub fn registration_transient(&self) -> u64 {
        if !self.is_measured() || !self.state_on_store_fs {
            return 0;
        }
        NIX_WAL_BYTES_PER_PATH
    }

    /// The mean bytes per path beyond its NAR size over `samples` (NAR, allocated), where the
    /// filesystem does not compress: what one ratio misses for a path of small files.
    pub fn fit_path_overhead(&mut self, samples: &[(u64, u64)]) {
        let excess: u128 = samples
            .iter()
            .map(|&(nar, allocated)| allocated.saturating_sub(nar) as u128)
            .sum();
        self.path_overhead = if self.compresses || samples.is_empty() {
            0
        } else {
            (excess.div_ceil(samples.len() as u128)).min(u64::MAX as u128) as u64
        };
    }

    /// `bytes` with what the run learnt from a step that ran out of space on top.
    fn scale_learnt(&self, bytes: u64) -> u64 {
        if self.learnt_ppm <= PPM {
            return bytes;
        }
        (bytes as u128 * self.learnt_ppm as u128)
            .div_ceil(PPM as u128)
            .min(u64::MAX as u128) as u64
    }

    /// Disk bytes of a path: measured when on disk and measured, else estimated.
    pub fn bytes_of(&self, path: &StorePath, nar: u64, present: bool) -> (u64, bool) {
        match self.own_bytes.get(path) {
            // Blocks before compression, scaled by the compression the filesystem showed.
            Some(&b) if present => (
                (b as u128 * self.measured_ratio_ppm() as u128 / self.block_ratio_ppm() as u128)
                    as u64,
                true,
            ),
            _ => (self.estimate(nar), false),
        }
    }

    /// The share of the sample's bytes saved by hard links between store paths, in percent.
    pub fn dedup_percent(&self) -> u64 {
        if self.sample_allocated == 0 {
            return 0;
        }
        100 - (self.sample_allocated_unique * 100).div_ceil(self.sample_allocated)
    }

    /// One line for the plan's notes: what was measured and the ratio used.
    pub fn describe(&self) -> String {
        if !self.is_measured() {
            return "sizes are NAR bytes: nothing on the store's filesystem was measured".into();
        }
        let r = |ppm: u64| format!("{:.3}", ppm as f64 / PPM as f64);
        let compression = if self.compresses && self.live_nar > 0 {
            format!(
                "; the filesystem uses {} for {} NAR of live paths",
                super::report::human_bytes(self.fs_used),
                super::report::human_bytes(self.live_nar)
            )
        } else {
            String::new()
        };
        format!(
            "disk bytes on {}{}: measured for the {} paths on disk ({} NAR, {} in blocks{}: ratio {}{}); \
             paths still to come are estimated at NAR × {} ({})",
            self.filesystem,
            if self.compresses { " (may compress)" } else { "" },
            self.sample_paths,
            super::report::human_bytes(self.sample_nar),
            super::report::human_bytes(self.sample_allocated),
            compression,
            r(self.measured_ratio_ppm()),
            if self.optimised {
                format!(
                    ", {}% saved by hard links, not assumed for new paths",
                    self.dedup_percent()
                )
            } else {
                String::new()
            },
            r(self.ratio_ppm()),
            if self.compresses {
                format!(
                    "the measured ratio + {}%, at least {}",
                    COMPRESSED_MARGIN_PPM * 100 / PPM,
                    r(COMPRESSED_FLOOR_PPM)
                )
            } else {
                format!(
                    "the measured ratio, at least 1: this filesystem does not compress; \
                     and at least NAR + {} a path, the sample's mean rounding",
                    super::report::human_bytes(self.path_overhead)
                )
            }
        ) + &if self.bookkeeping(true) > 0 {
            format!(
                "; Nix's state shares the filesystem: {} a path for its database, {} more a \
                 derivation built and {} for its log (which stays), and {} a path registered \
                 while its realise runs (the database's write-ahead log)",
                super::report::human_bytes(self.bookkeeping(false)),
                super::report::human_bytes(self.bookkeeping(true) - self.bookkeeping(false)),
                super::report::human_bytes(self.build_log()),
                super::report::human_bytes(self.registration_transient())
            )
        } else {
            String::new()
        }
    }
}

fn ratio(a: u64, b: u64) -> u64 {
    if b == 0 {
        return PPM;
    }
    (a as u128 * PPM as u128).div_ceil(b as u128) as u64
}

/// The steps of an order computed on one problem, replayed on another with the same paths and
/// jobs but other sizes (the NAR bytes beside the disk bytes).
pub fn replay(p: &SpaceProblem, steps: &[OrderedStep]) -> Vec<StepSpace> {
    let mut sim = Simulator::new(p);
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        for &m in &s.moves {
            sim.add_move(m);
        }
        let mut space = sim.close_step();
        if s.reboot_after {
            space.reboot_frees = sim.reboot();
        }
        out.push(space);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(compresses: bool, nar: u64, alloc: u64) -> DiskCost {
        DiskCost {
            filesystem: "x".into(),
            compresses,
            sample_paths: 1,
            sample_nar: nar,
            sample_allocated: alloc,
            sample_allocated_unique: alloc,
            ..Default::default()
        }
    }

    #[test]
    fn a_learnt_cost_scales_estimates_not_measured_paths() {
        let mut c = cost(false, 1000, 1000);
        let p = StorePath::from_base_name("0123456789abcdfghijklmnpqrsvwxyz-p").unwrap();
        c.own_bytes.insert(p.clone(), 4096);
        c.learnt_ppm = 1_500_000;
        assert_eq!(c.estimate(1000), 1500);
        assert_eq!(c.bytes_of(&p, 4000, true), (4096, true));
        c.learnt_ppm = 0;
        assert_eq!(c.estimate(1000), 1000);
    }

    #[test]
    fn a_rebuilt_glue_path_costs_at_least_what_its_version_on_disk_takes() {
        let mut c = cost(false, 1000, 1100);
        c.block = 4096;
        c.state_on_store_fs = true;
        let links =
            StorePath::from_base_name("0123456789abcdfghijklmnpqrsvwxyz-system-path").unwrap();
        let small = StorePath::from_base_name("00000000000000000000000000000000-etc").unwrap();
        // 1,000 symlinks: 150 KB of NAR, a block each on disk.
        c.own_bytes.insert(links.clone(), 1000 * 4096);
        c.own_bytes.insert(small.clone(), 10);
        let book = c.bookkeeping(true);
        assert_eq!(
            c.estimate_rebuilt(&links, 150_000, true),
            1000 * 4096 + book
        );
        assert_eq!(
            c.estimate_rebuilt(&small, 5000, true),
            c.estimate_built(5000)
        );
        assert_eq!(
            c.estimate_rebuilt(&links, 150_000, false),
            c.estimate_built(150_000)
        );
        c.learnt_ppm = 1_500_000;
        assert_eq!(
            c.estimate_rebuilt(&links, 150_000, true),
            1500 * 4096 + book
        );
    }

    #[test]
    fn unmeasured_is_nar_bytes() {
        let c = DiskCost::default();
        assert_eq!(c.estimate(12345), 12345);
        assert_eq!(c.ratio_ppm(), PPM);
    }

    #[test]
    fn uncompressed_never_below_one() {
        assert_eq!(cost(false, 1000, 900).ratio_ppm(), PPM);
        assert_eq!(cost(false, 1000, 1100).ratio_ppm(), 1_100_000);
        assert_eq!(cost(false, 1000, 900).estimate(4096), 4096);
    }

    #[test]
    fn compressed_gets_a_margin_and_a_floor() {
        assert_eq!(cost(true, 1000, 500).ratio_ppm(), 550_000);
        assert_eq!(cost(true, 1000, 100).ratio_ppm(), COMPRESSED_FLOOR_PPM);
        assert_eq!(cost(true, 1000, 500).estimate(1000), 550);
    }

    #[test]
    fn compression_comes_from_the_filesystem_and_dedup_is_not_credited() {
        // Blocks say 1.0; the filesystem holds 600 for 1000 live NAR bytes, of which the hard
        // links saved a quarter: what a new byte costs is 600 × 4/3 / 1000 = 0.8.
        let mut c = cost(true, 1000, 1000);
        c.sample_allocated_unique = 750;
        c.fs_used = 600;
        c.live_nar = 1000;
        assert_eq!(c.measured_ratio_ppm(), 800_000);
        assert_eq!(c.ratio_ppm(), 880_000);
        assert_eq!(c.dedup_percent(), 25);
        let p = StorePath::from_base_name("00000000000000000000000000000000-a").unwrap();
        c.own_bytes.insert(p.clone(), 1000);
        assert_eq!(c.bytes_of(&p, 1000, true), (800, true));
        // Not compressing: the filesystem figure is not used.
        c.compresses = false;
        assert_eq!(c.measured_ratio_ppm(), PPM);
    }

    #[test]
    fn many_small_paths_pay_the_samples_mean_rounding() {
        // One 1 MiB file (rounding nothing) and three small paths of 100 NAR bytes in a 4 KiB
        // block each: the ratio says 1.01, each small path really costs 41×.
        let mut c = cost(false, 0, 0);
        let samples = [(1 << 20, 1 << 20), (100, 4096), (100, 4096), (100, 4096)];
        for (nar, alloc) in samples {
            c.sample_nar += nar;
            c.sample_allocated += alloc;
        }
        c.fit_path_overhead(&samples);
        assert_eq!(c.path_overhead, (3 * 3996u64).div_ceil(4));
        assert_eq!(c.estimate(100), 100 + c.path_overhead);
        // The sample's total is never under-stated, and a large path keeps the ratio.
        let total: u64 = samples.iter().map(|s| c.estimate(s.0)).sum();
        assert!(total >= c.sample_allocated, "{total}");
        assert_eq!(
            c.estimate(100 << 20),
            (100u64 << 20) * c.ratio_ppm() / PPM + 1
        );
        // A path of less than its NAR size does not lower the mean.
        c.fit_path_overhead(&[(1000, 0), (100, 4096)]);
        assert_eq!(c.path_overhead, 1998);
        // Where the filesystem compresses, the measured ratio alone (rounding shows in it).
        c.compresses = true;
        c.fit_path_overhead(&samples);
        assert_eq!(c.path_overhead, 0);
    }

    #[test]
    fn nix_bookkeeping_counts_where_its_state_shares_the_filesystem() {
        let mut c = cost(false, 1000, 1000);
        c.block = 4096;
        assert_eq!(c.estimate(1000), 1000, "state elsewhere");
        assert_eq!(c.registration_transient(), 0, "state elsewhere");
        c.state_on_store_fs = true;
        assert_eq!(c.registration_transient(), NIX_WAL_BYTES_PER_PATH);
        assert_eq!(c.estimate(1000), 1000 + NIX_DB_BYTES_PER_PATH);
        assert_eq!(c.estimate_built(1000), 1000 + NIX_DB_BYTES_PER_PATH + 4096);
        assert_eq!(c.build_log(), 4096);
        assert_eq!(
            DiskCost::default().estimate_built(1000),
            1000,
            "nothing measured"
        );
        assert_eq!(DiskCost::default().registration_transient(), 0);
        assert_eq!(DiskCost::default().build_log(), 0);
    }

    #[test]
    fn present_paths_use_what_was_measured() {
        let mut c = cost(true, 1000, 500);
        let p = StorePath::from_base_name("00000000000000000000000000000000-a").unwrap();
        c.own_bytes.insert(p.clone(), 7);
        assert_eq!(c.bytes_of(&p, 1000, true), (7, true));
        assert_eq!(c.bytes_of(&p, 1000, false), (550, false));
    }
}
