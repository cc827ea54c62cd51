//! Shared by the `drv_*` integration tests: a private Nix store in a temp dir (doc/design.md, "Test beds") and the
//! derivation shapes of `tests/fixtures/drv/shapes.nix` instantiated in it by real Nix.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use stepwise::drv::{StoreDir, StorePath};
use stepwise::effects::nix::argv::Invocation;

pub const LATIN1: &[u8] = b"caf\xe9 \xff\xfe end";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drv")
}

/// A store of its own: NIX_STORE_DIR, NIX_STATE_DIR, NIX_LOG_DIR under one directory.
pub struct PrivateStore {
    pub root: PathBuf,
    pub store_dir: StoreDir,
    _tmp: Option<tempfile::TempDir>,
}

impl PrivateStore {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("stepwise-drv-")
            .tempdir()
            .expect("temp dir");
        let mut s = Self::at(tmp.path());
        s._tmp = Some(tmp);
        s
    }

    /// A store at a chosen root (kept; used to produce the checked-in fixtures).
    pub fn at(root: &Path) -> Self {
        let store = root.join("store");
        std::fs::create_dir_all(&store).unwrap();
        PrivateStore {
            root: root.to_path_buf(),
            store_dir: StoreDir::new(store.to_str().unwrap()).unwrap(),
            _tmp: None,
        }
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("NIX_STORE_DIR", self.store_dir.as_str())
            .env("NIX_STATE_DIR", self.root.join("var"))
            .env("NIX_LOG_DIR", self.root.join("log"))
            .env(
                "NIX_CONFIG",
                "experimental-features = nix-command\nsandbox = false\nsubstituters =\nrequire-sigs = false\nbuild-users-group =",
            )
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_PATH");
        c
    }

    /// Run an invocation built by stepwise in this store: stdout, or stderr as the error.
    pub fn run(&self, inv: &Invocation) -> Result<Vec<u8>, String> {
        let mut c = self.cmd(inv.program.to_str().unwrap());
        c.args(&inv.args)
            .stdin(if inv.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", inv.display()))?;
        if let Some(bytes) = &inv.stdin {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(bytes).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "`{}` failed: {}",
                inv.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Run a command in this store, panicking with its stderr on failure.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().expect("spawn");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn path(&self, p: &StorePath) -> PathBuf {
        self.store_dir.to_path(p)
    }

    pub fn parse(&self, s: &str) -> StorePath {
        self.store_dir.parse(s.trim()).unwrap()
    }

    /// Instantiate every shape; name → (drv path, output → path), as Nix reports them.
    pub fn instantiate_shapes(&self) -> BTreeMap<String, Shape> {
        let latin1 = self.root.join("latin1.txt");
        std::fs::write(&latin1, LATIN1).unwrap();
        let expr = format!(
            "builtins.mapAttrs (n: d: {{ drvPath = d.drvPath; outputs = builtins.listToAttrs \
             (map (o: {{ name = o.outputName; value = o.outPath; }}) d.all); }}) \
             (import {} {{ latin1File = {}; }})",
            fixtures().join("shapes.nix").display(),
            latin1.display()
        );
        let json = self.ok(
            "nix-instantiate",
            &[
                "--eval",
                "--read-write-mode",
                "--strict",
                "--json",
                "-E",
                &expr,
            ],
        );
        let v: BTreeMap<String, RawShape> = serde_json::from_str(&json).unwrap();
        v.into_iter()
            .map(|(k, s)| {
                (
                    k,
                    Shape {
                        drv_path: self.parse(&s.drv_path),
                        outputs: s
                            .outputs
                            .iter()
                            .map(|(o, p)| (o.clone(), self.parse(p)))
                            .collect(),
                    },
                )
            })
            .collect()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawShape {
    drv_path: String,
    outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Shape {
    pub drv_path: StorePath,
    pub outputs: BTreeMap<String, StorePath>,
}
