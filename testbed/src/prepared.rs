//! `Bed::prepared`: a bed on a small tmpfs whose binary cache holds the fixture's packages.
//!
//! A cache filled from a store at directory X only serves stores at X (store paths embed X), so a
//! fixture is built once per (spec, slot) at a slot's fixed root on the machine's disk, its packages
//! copied to the slot's cache, and that store wiped; each prepared bed then mounts its tmpfs at the
//! same root, re-instantiates the `.drv` files (cheap) and substitutes from the cache. Slots are
//! locked (flock), so tests in parallel threads or processes each get their own; a slot's cache
//! survives between runs and is reused while the spec (and the generator) stay the same.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::bed::{base_dir, Bed, Disk, Holder};
use crate::error::{BedError, Result};
use crate::fixture::{
    Fixture, FixtureSpec, GenerationInfo, Links, PackageInfo, PackageVersionInfo,
};
use crate::mount::{is_mount_point, unmount};
use crate::util::{force_remove, write_atomic};

const SLOTS: usize = 64;

/// An exclusive lock on a slot directory, held while a bed uses it.
#[derive(Debug)]
pub struct SlotLock {
    _lock: Flock<File>,
    dir: PathBuf,
}

impl SlotLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Prepared fixtures unused for this long are removed (their caches take room in /tmp).
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Takes the first free slot under `parent`.
pub(crate) fn take_slot(parent: &Path) -> Result<SlotLock> {
    remove_stale_prepared();
    fs::create_dir_all(parent)
        .map_err(|e| BedError::io(format!("creating {}", parent.display()), e))?;
    // Marks this fixture as in use, for `remove_stale_prepared`.
    let _ = fs::write(parent.join("last-used"), b"");
    for i in 0..SLOTS {
        let lock_path = parent.join(format!("slot-{i:02}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BedError::io(format!("opening {}", lock_path.display()), e))?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok(SlotLock {
                _lock: lock,
                dir: parent.join(format!("slot-{i:02}")),
            });
        }
    }
    Err(BedError::msg(format!(
        "all {SLOTS} test-bed slots under {} are busy",
        parent.display()
    )))
}

impl Bed {
    /// A bed whose store and Nix state share a tmpfs of `disk_mib` MiB, with the fixture of `spec`
    /// instantiated (both generations' `.drv` files valid, no outputs) and its packages in the
    /// attached cache. Needs root (check `require_root` first). Panics on failure (test support).
    pub fn prepared(spec: &FixtureSpec, disk_mib: u64) -> (Bed, Fixture) {
        Bed::prepared_with(spec, |_| Disk::TmpfsMib(disk_mib))
    }

    /// As `prepared`, choosing the disk once the fixture's sizes are known.
    pub fn prepared_with(
        spec: &FixtureSpec,
        disk: impl FnOnce(&Fixture) -> Disk,
    ) -> (Bed, Fixture) {
        match Bed::try_prepared_with(spec, disk) {
            Ok(r) => r,
            Err(e) => panic!("preparing the test bed: {e}"),
        }
    }

    /// The disk of issue 8's non-vital tests: `spec` on a tmpfs 32 MiB above its tight size, G0
    /// installed, switched since boot (no booted pin), and a reserve size that leaves only
    /// `room_mib` MiB for the upgrade. Returns the bed, the fixture, G0's toplevel and the
    /// `--reserve` value to pass.
    pub fn squeezed(spec: &FixtureSpec, room_mib: u64) -> (Bed, Fixture, String, String) {
        let (bed, fx) = Bed::prepared_with(spec, |f| Disk::TmpfsMib(f.tight_disk_mib() + 32));
        let g0 = bed.install(&fx.old.drv).expect("installing G0");
        std::fs::remove_file(bed.booted_system_link()).expect("removing the booted pin");
        let reserve = bed
            .available_bytes()
            .checked_sub(room_mib << 20)
            .unwrap_or_else(|| panic!("the tmpfs leaves more than {room_mib} MiB after G0"));
        (bed, fx, g0, reserve.to_string())
    }

    /// As `prepared_with`, returning errors.
    pub fn try_prepared_with(
        spec: &FixtureSpec,
        disk: impl FnOnce(&Fixture) -> Disk,
    ) -> Result<(Bed, Fixture)> {
        let slot = take_slot(&base_dir().join(format!("prepared-{}", spec.key())))?;
        let dir = slot.dir().to_path_buf();
        let root = dir.join("r");
        let cache = dir.join("cache");
        let file = dir.join("fixture.nix");
        let json = dir.join("fixture.json");
        // A process killed while holding this slot may have left its tmpfs and store behind.
        if is_mount_point(&root.join("nix")) {
            unmount(&root.join("nix"));
        }
        force_remove(&root).map_err(|e| BedError::io(format!("wiping {}", root.display()), e))?;
        fs::create_dir_all(&dir)
            .map_err(|e| BedError::io(format!("creating {}", dir.display()), e))?;

        let text = spec.nix_text(&Links::for_root(&root));
        let cached: Option<Fixture> = fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|f: &Fixture| {
                &f.spec == spec && fs::read_to_string(&file).is_ok_and(|t| t == text)
            });
        let fixture = match cached {
            Some(f) => f,
            None => {
                let _ = fs::remove_file(&json);
                write_atomic(&file, text.as_bytes())
                    .map_err(|e| BedError::io("writing the fixture", e))?;
                force_remove(&cache).map_err(|e| BedError::io("wiping the cache", e))?;
                let builder = Bed::at(root.clone(), Disk::Unlimited, None, Holder::Nothing)?;
                let f = build_fixture(&builder, spec, &file, &cache)?;
                drop(builder);
                let bytes =
                    serde_json::to_vec_pretty(&f).map_err(|e| BedError::msg(e.to_string()))?;
                write_atomic(&json, &bytes).map_err(|e| BedError::io("writing fixture.json", e))?;
                f
            }
        };
        let disk = disk(&fixture);
        let mut bed = Bed::at(root, disk, Some(cache), Holder::Slot(slot))?;
        bed.set_optimise(spec.optimise);
        let again = read_manifest(&bed, &file)?;
        if again.0.drv != fixture.old.drv || again.1.drv != fixture.new.drv {
            return Err(BedError::msg(format!(
                "re-instantiating the fixture gave other .drv paths ({} vs {})",
                again.0.drv, fixture.old.drv
            )));
        }
        Ok((bed, fixture))
    }
}

/// Removes `prepared-*` fixtures not used for `STALE_AFTER` whose slots are all free. Once per
/// process.
fn remove_stale_prepared() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = fs::read_dir(base_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !entry.file_name().to_string_lossy().starts_with("prepared-") {
                continue;
            }
            let used = fs::metadata(dir.join("last-used"))
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified());
            let stale = used.is_ok_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age > STALE_AFTER)
            });
            if !stale {
                continue;
            }
            // Hold every slot's lock while removing, so nobody is using or taking one.
            let mut locks = Vec::new();
            let mut all_free = true;
            for i in 0..SLOTS {
                let lock_path = dir.join(format!("slot-{i:02}.lock"));
                let Ok(file) = File::open(&lock_path) else {
                    continue;
                };
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(l) => locks.push(l),
                    Err(_) => all_free = false,
                }
            }
            if all_free {
                for i in 0..SLOTS {
                    let root = dir.join(format!("slot-{i:02}/r/nix"));
                    if is_mount_point(&root) {
                        unmount(&root);
                    }
                }
                let _ = force_remove(&dir);
            }
        }
    });
}

/// Evaluates the fixture's manifest (writing every `.drv`): (old, new, packages without sizes).
fn read_manifest(
    bed: &Bed,
    file: &Path,
) -> Result<(GenerationInfo, GenerationInfo, Vec<PackageInfo>)> {
    let m = bed.eval_json(file, Some("manifest"))?;
    let bad = |what: &str| BedError::msg(format!("the fixture manifest lacks {what}"));
    let gen = |attr: &str| -> Result<GenerationInfo> {
        let t = &m[attr]["toplevel"];
        Ok(GenerationInfo {
            attr: attr.to_string(),
            name: t["name"].as_str().ok_or_else(|| bad("a name"))?.to_string(),
            drv: t["drvPath"]
                .as_str()
                .ok_or_else(|| bad("a drvPath"))?
                .to_string(),
            out: t["outputs"]["out"]
                .as_str()
                .ok_or_else(|| bad("an out"))?
                .to_string(),
        })
    };
    let pkg = |attr: &str, pname: &str| -> Option<PackageVersionInfo> {
        let p = m[attr]["packages"].get(pname)?;
        let outputs: BTreeMap<String, String> = p["outputs"]
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let name = p["name"].as_str()?.to_string();
        Some(PackageVersionInfo {
            version: name
                .strip_prefix(&format!("{pname}-"))
                .unwrap_or("")
                .to_string(),
            name,
            drv: p["drvPath"].as_str()?.to_string(),
            outputs,
            nar_sizes: BTreeMap::new(),
            fails: false,
        })
    };
    let mut names: Vec<String> = Vec::new();
    for attr in ["old", "new"] {
        if let Some(o) = m[attr]["packages"].as_object() {
            for k in o.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    let packages = names
        .iter()
        .map(|n| PackageInfo {
            pname: n.clone(),
            role: crate::fixture::Role::Package,
            old: pkg("old", n),
            new: pkg("new", n),
        })
        .collect();
    Ok((gen("old")?, gen("new")?, packages))
}

/// Builds the fixture in `bed` (on disk), measures it and copies its packages into `cache`.
fn build_fixture(bed: &Bed, spec: &FixtureSpec, file: &Path, cache: &Path) -> Result<Fixture> {
    let (old, new, mut packages) = read_manifest(bed, file)?;
    // Keep the spec's order and roles, and mark failing versions.
    packages.sort_by_key(|p| spec.packages.iter().position(|s| s.pname == p.pname));
    for p in &mut packages {
        let s = spec
            .packages
            .iter()
            .find(|s| s.pname == p.pname)
            .expect("manifest names come from the spec");
        p.role = s.role;
        if let (Some(v), Some(sv)) = (&mut p.old, &s.old) {
            v.fails = sv.fails;
        }
        if let (Some(v), Some(sv)) = (&mut p.new, &s.new) {
            v.fails = sv.fails;
        }
    }
    if let Some(p) = packages
        .iter()
        .find(|p| p.old.as_ref().is_some_and(|v| v.fails))
    {
        return Err(BedError::msg(format!(
            "the old generation must build, but {} fails",
            p.pname
        )));
    }
    bed.realise(&[&old.drv])?;
    let new_ok: Vec<&str> = packages
        .iter()
        .filter_map(|p| p.new.as_ref())
        .filter(|v| !v.fails)
        .map(|v| v.drv.as_str())
        .collect();
    bed.realise(&new_ok)?;
    let new_builds = packages
        .iter()
        .all(|p| p.new.as_ref().is_none_or(|v| !v.fails));
    if new_builds {
        bed.realise(&[&new.drv])?;
    }

    // Sizes of every built package output.
    let built: Vec<String> = packages
        .iter()
        .flat_map(|p| p.old.iter().chain(p.new.iter()))
        .filter(|v| !v.fails)
        .flat_map(|v| v.outputs.values().cloned())
        .collect();
    let sizes = bed.nar_sizes(&built)?;
    for v in packages
        .iter_mut()
        .flat_map(|p| p.old.iter_mut().chain(p.new.iter_mut()))
    {
        if !v.fails {
            v.nar_sizes = v
                .outputs
                .iter()
                .map(|(o, path)| (o.clone(), sizes.get(path).copied().unwrap_or(0)))
                .collect();
        }
    }

    let old_closure = bed.closure(&[&old.out])?;
    let old_bytes: u64 = bed
        .nar_sizes(&old_closure.iter().collect::<Vec<_>>())?
        .values()
        .sum();
    let (new_bytes, union_bytes) = if new_builds {
        let new_closure = bed.closure(&[&new.out])?;
        let union: Vec<&String> = old_closure.union(&new_closure).collect();
        let new_b: u64 = bed
            .nar_sizes(&new_closure.iter().collect::<Vec<_>>())?
            .values()
            .sum();
        (new_b, bed.nar_sizes(&union)?.values().sum())
    } else {
        // Estimate: the old glue, plus every new package (failing ones at their spec size).
        let old_pkgs: u64 = packages
            .iter()
            .filter_map(|p| p.old.as_ref())
            .map(|v| v.bytes())
            .sum();
        let glue = old_bytes.saturating_sub(old_pkgs);
        let estimate = |v: &PackageVersionInfo, pname: &str| -> u64 {
            if v.fails {
                let s = spec
                    .packages
                    .iter()
                    .find(|s| s.pname == pname)
                    .and_then(|s| s.new.as_ref());
                s.map(|s| s.kib * 1024).unwrap_or(0)
            } else {
                v.bytes()
            }
        };
        let new_pkgs: u64 = packages
            .iter()
            .filter_map(|p| p.new.as_ref().map(|v| estimate(v, &p.pname)))
            .sum();
        let added: u64 = packages
            .iter()
            .filter(|p| p.changes())
            .filter_map(|p| p.new.as_ref().map(|v| estimate(v, &p.pname)))
            .sum();
        (glue + new_pkgs, old_bytes + added + glue)
    };

    bed.copy_to_cache(cache, &built)?;
    Ok(Fixture {
        spec: spec.clone(),
        file: file.to_path_buf(),
        store_dir: bed.store_dir(),
        old,
        new,
        packages,
        old_bytes,
        new_bytes,
        union_bytes,
        new_builds,
    })
}
