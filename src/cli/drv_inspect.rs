//! `stepwise drv inspect FILE [--store-dir DIR] [--json | --aterm]`: parse a `.drv`, recompute its
//! path and its output paths (inputs read from the filesystem at their store paths).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::drv::{self, Derivation, DrvSource, Hasher, SourceError, StoreDir, StorePath};
use crate::error::{Error, Exit};
use crate::output::Output;

/// Input derivations read from `<root>/<hash>-<name>.drv` (the store directory itself, or a copy
/// of store files elsewhere, as the test fixtures are).
pub struct FsDrvSource {
    pub store_dir: StoreDir,
    pub root: PathBuf,
}

impl FsDrvSource {
    /// Read from the store directory itself.
    pub fn new(store_dir: StoreDir) -> Self {
        let root = PathBuf::from(store_dir.as_str());
        FsDrvSource { store_dir, root }
    }
}

impl DrvSource for FsDrvSource {
    fn read(&self, path: &StorePath) -> Result<Derivation, SourceError> {
        let file = self.root.join(path.to_string());
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(drv::parse(&bytes, &self.store_dir).map_err(|e| format!("{}: {e}", file.display()))?)
    }
}

/// The store directory of the running Nix: `NIX_STORE_DIR`, else what Nix says, else `/nix/store`.
pub fn detect_store_dir() -> String {
    if let Ok(d) = std::env::var("NIX_STORE_DIR") {
        if !d.is_empty() {
            return d;
        }
    }
    let asked = Command::new("nix-instantiate")
        .args(["--eval", "-E", "builtins.storeDir"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(o) = asked {
        if o.status.success() {
            // Prints a Nix string literal: "/nix/store"
            if let Ok(s) = serde_json::from_slice::<String>(o.stdout.trim_ascii()) {
                return s;
            }
        }
    }
    "/nix/store".to_string()
}

/// Bytes for humans and JSON: UTF-8 as is; otherwise `\` doubled and each byte that is not part
/// of valid UTF-8 written `\xNN`.
pub fn show_bytes(b: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(b) {
        return s.to_string();
    }
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspected {
    file: String,
    drv_path: String,
    name: String,
    /// Whether FILE sits at the path its bytes give (only for files in the store).
    #[serde(skip_serializing_if = "Option::is_none")]
    file_at_drv_path: Option<bool>,
    outputs: BTreeMap<String, InspectedOutput>,
    input_drvs: BTreeMap<String, Vec<String>>,
    input_srcs: Vec<String>,
    system: String,
    builder: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// Why output paths could not be recomputed (an input is missing or malformed).
    #[serde(skip_serializing_if = "Option::is_none")]
    compute_error: Option<String>,
    /// Semantic problems Nix would reject.
    problems: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InspectedOutput {
    path: Option<String>,
    computed_path: Option<String>,
    hash_algo: String,
    hash: String,
}

pub fn run(
    file: &Path,
    store_dir: Option<&str>,
    aterm: bool,
    out: &mut Output,
) -> Result<Exit, Error> {
    let (store_dir, parsed) = read_derivation(file, store_dir)?;
    let io = |e: std::io::Error| Error::Io {
        context: "writing to stdout".into(),
        source: e,
    };
    let mut stdout = std::io::stdout().lock();
    if aterm {
        stdout
            .write_all(&drv::to_aterm(&parsed, &store_dir))
            .and_then(|_| stdout.flush())
            .map_err(io)?;
        return Ok(Exit::Done);
    }
    let inspected = inspect(file, &store_dir, &parsed)?;
    if out.is_json() {
        out.document(&mut stdout, "drv-inspect", &inspected)
            .map_err(io)?;
    } else {
        human(&mut stdout, &inspected).map_err(io)?;
    }
    Ok(Exit::Done)
}

/// The file parsed against the store directory given (or detected): bad input, exit 2, when
/// either is wrong.
fn read_derivation(file: &Path, store_dir: Option<&str>) -> Result<(StoreDir, Derivation), Error> {
    let bytes = std::fs::read(file).map_err(|e| {
        Error::bad_input(
            format!("cannot read {}: {e}", file.display()),
            "give the path of a .drv file",
        )
    })?;
    let dir = store_dir
        .map(str::to_string)
        .unwrap_or_else(detect_store_dir);
    let store_dir = StoreDir::new(dir).map_err(|e| {
        Error::bad_input(
            e.to_string(),
            "--store-dir takes an absolute path such as /nix/store",
        )
    })?;
    let parsed = drv::parse(&bytes, &store_dir).map_err(|e| {
        Error::bad_input(
            format!("{} is not a valid derivation: {e}", file.display()),
            format!(
                "the file must be a .drv as Nix writes it, with store paths under {store_dir} \
                 (use --store-dir if they live elsewhere)"
            ),
        )
    })?;
    Ok((store_dir, parsed))
}

/// The file's store path when it is named like one, and the derivation's name: from that path,
/// else from the environment's `name`.
fn derivation_name(file: &Path, parsed: &Derivation) -> Result<(Option<StorePath>, String), Error> {
    let file_store_path = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| StorePath::from_base_name(n).ok())
        .filter(|p| p.is_derivation());
    let name = match file_store_path.as_ref().and_then(|p| p.derivation_name()) {
        Some(n) => n.to_string(),
        None => parsed.name_from_env().ok_or_else(|| {
            Error::bad_input(
                format!(
                    "{}: cannot tell the derivation's name: the file is not named <hash>-<name>.drv \
                     and its environment has no `name`",
                    file.display()
                ),
                "inspect the file at its store path",
            )
        })?,
    };
    Ok((file_store_path, name))
}

/// What `drv inspect` shows: the derivation as parsed, its output paths as computed, and what
/// validation found.
fn inspect(file: &Path, store_dir: &StoreDir, parsed: &Derivation) -> Result<Inspected, Error> {
    let (file_store_path, name) = derivation_name(file, parsed)?;
    let drv_path = drv::drv_path(store_dir, &name, parsed);
    let mut hasher = Hasher::new(store_dir.clone(), FsDrvSource::new(store_dir.clone()));
    let (computed, compute_error) = match hasher.output_paths(parsed, &name) {
        Ok(c) => (c, None),
        Err(e) => (BTreeMap::new(), Some(e.to_string())),
    };
    let problems = match drv::validate(parsed, store_dir, &name) {
        Ok(()) => Vec::new(),
        Err(e) => e.problems,
    };
    let output = |(o, v): (&String, &drv::Output)| {
        let shown = InspectedOutput {
            path: v.path.as_ref().map(|p| store_dir.display(p)),
            computed_path: computed.get(o).map(|p| store_dir.display(p)),
            hash_algo: v.hash_algo.clone(),
            hash: v.hash.clone(),
        };
        (o.clone(), shown)
    };
    Ok(Inspected {
        file: file.display().to_string(),
        drv_path: store_dir.display(&drv_path),
        name,
        file_at_drv_path: file_store_path.map(|p| p == drv_path),
        outputs: parsed.outputs.iter().map(output).collect(),
        input_drvs: parsed
            .input_drvs
            .iter()
            .map(|(p, outs)| (store_dir.display(p), outs.iter().cloned().collect()))
            .collect(),
        input_srcs: parsed
            .input_srcs
            .iter()
            .map(|p| store_dir.display(p))
            .collect(),
        system: show_bytes(&parsed.system),
        builder: show_bytes(&parsed.builder),
        args: parsed.args.iter().map(|a| show_bytes(a)).collect(),
        env: parsed
            .env
            .iter()
            .map(|(k, v)| (show_bytes(k), show_bytes(v)))
            .collect(),
        compute_error,
        problems,
    })
}

fn human(w: &mut impl Write, i: &Inspected) -> std::io::Result<()> {
    writeln!(w, "derivation {}", i.name)?;
    writeln!(w, "  drv path:  {}", i.drv_path)?;
    match i.file_at_drv_path {
        Some(true) => writeln!(w, "  file:      {} (at its computed path)", i.file)?,
        Some(false) => writeln!(
            w,
            "  file:      {} (NOT at its computed path: the bytes differ from what was registered)",
            i.file
        )?,
        None => writeln!(w, "  file:      {}", i.file)?,
    }
    writeln!(w, "  system:    {}", i.system)?;
    writeln!(w, "  builder:   {}", i.builder)?;
    writeln!(w, "outputs:")?;
    for (name, o) in &i.outputs {
        let path = o.path.as_deref().unwrap_or("(not known before the build)");
        let check = match (&o.path, &o.computed_path) {
            (Some(p), Some(c)) if p == c => " (recomputed: same)".to_string(),
            (_, Some(c)) => format!(" (recomputed: {c} DIFFERS)"),
            (_, None) => String::new(),
        };
        let fixed = if o.hash.is_empty() {
            String::new()
        } else {
            format!(" fixed {}:{}", o.hash_algo, o.hash)
        };
        writeln!(w, "  {name}: {path}{fixed}{check}")?;
    }
    if let Some(e) = &i.compute_error {
        writeln!(w, "  output paths not recomputed: {e}")?;
    }
    writeln!(w, "input derivations:")?;
    for (p, outs) in &i.input_drvs {
        writeln!(w, "  {p} [{}]", outs.join(", "))?;
    }
    writeln!(w, "input sources:")?;
    for p in &i.input_srcs {
        writeln!(w, "  {p}")?;
    }
    writeln!(w, "args:")?;
    for a in &i.args {
        writeln!(w, "  {a:?}")?;
    }
    writeln!(w, "env:")?;
    for (k, v) in &i.env {
        writeln!(w, "  {k} = {v:?}")?;
    }
    if !i.problems.is_empty() {
        writeln!(w, "problems:")?;
        for p in &i.problems {
            writeln!(w, "  {p}")?;
        }
    }
    Ok(())
}
