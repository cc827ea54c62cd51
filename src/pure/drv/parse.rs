//! Parse a `.drv` file's ATerm. Strict: only the canonical form Nix writes is accepted, so that
//! `write(parse(b)) == b` for every `b` that parses. Every error carries the byte offset and what
//! was expected there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

use super::derivation::{Derivation, Output};
use super::store_path::{StoreDir, StorePath};

/// A malformed derivation: where, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("byte {offset}: {kind}")]
pub struct ParseError {
    pub offset: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    #[error("unexpected end of file (truncated?), expected {expected}")]
    Truncated { expected: &'static str },
    #[error("expected {expected}, found {found}")]
    Unexpected {
        expected: &'static str,
        found: Found,
    },
    #[error("{count} trailing byte(s) after the closing `)`, expected end of file")]
    Trailing { count: usize },
    #[error("duplicate {what} {key:?}, expected each at most once")]
    Duplicate { what: &'static str, key: String },
    #[error("{what} {key:?} comes after {prev:?}, expected entries sorted by byte value")]
    Unsorted {
        what: &'static str,
        key: String,
        prev: String,
    },
    #[error("bad escape `\\{escaped}`, expected one of \\\" \\\\ \\n \\r \\t")]
    BadEscape { escaped: Found },
    #[error("raw {byte} inside a string, expected it escaped (Nix writes {escape})")]
    Unescaped { byte: Found, escape: &'static str },
    #[error("backslash in a {what}, which Nix writes without escapes")]
    BackslashInPlain { what: &'static str },
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("invalid store path in {what}: {why}")]
    StorePath { what: &'static str, why: String },
    #[error("unsupported derivation format {0:?} (dynamic derivations); expected `Derive(`")]
    UnsupportedVersion(String),
}

/// What stood where something else was expected, for messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Found(pub u8);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b'\n' => f.write_str("newline"),
            b'\r' => f.write_str("carriage return"),
            b'\t' => f.write_str("tab"),
            c if c.is_ascii_graphic() => write!(f, "`{}`", c as char),
            c => write!(f, "byte {c:#04x}"),
        }
    }
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parse `.drv` bytes whose store paths live in `store_dir`.
pub fn parse(bytes: &[u8], store_dir: &StoreDir) -> Result<Derivation, ParseError> {
    let mut p = Parser {
        b: bytes,
        pos: 0,
        store_dir,
    };
    let drv = p.derivation()?;
    if p.pos != bytes.len() {
        return Err(p.err(ParseErrorKind::Trailing {
            count: bytes.len() - p.pos,
        }));
    }
    Ok(drv)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    store_dir: &'a StoreDir,
}

/// Whether a string field is written escaped (builder, args, env) or as is (everything else).
#[derive(Clone, Copy)]
enum Quoting {
    Escaped,
    Plain(&'static str),
}

impl<'a> Parser<'a> {
    fn err(&self, kind: ParseErrorKind) -> ParseError {
        self.err_at(self.pos, kind)
    }

    fn err_at(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError { offset, kind }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Consume exactly `lit`; `what` names it in the error.
    fn expect(&mut self, lit: &[u8], what: &'static str) -> Result<(), ParseError> {
        for &c in lit {
            match self.peek() {
                None => return Err(self.err(ParseErrorKind::Truncated { expected: what })),
                Some(x) if x == c => self.pos += 1,
                Some(x) => {
                    return Err(self.err(ParseErrorKind::Unexpected {
                        expected: what,
                        found: Found(x),
                    }))
                }
            }
        }
        Ok(())
    }

    /// Canonical list syntax: `[` already consumed; before each element after the first a `,`.
    /// Returns true when the list ended (`]` consumed).
    fn list_next(&mut self, first: bool, elem: &'static str) -> Result<bool, ParseError> {
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b',') if !first => {
                self.pos += 1;
                Ok(false)
            }
            _ if first => Ok(false),
            None => Err(self.err(ParseErrorKind::Truncated { expected: elem })),
            Some(x) => Err(self.err(ParseErrorKind::Unexpected {
                expected: elem,
                found: Found(x),
            })),
        }
    }

    fn string(&mut self, q: Quoting) -> Result<Vec<u8>, ParseError> {
        self.expect(b"\"", "`\"` (start of a string)")?;
        let mut out = Vec::new();
        loop {
            // Copy the run of ordinary bytes at once; stop at anything that needs a decision.
            let rest = &self.b[self.pos..];
            let run = rest
                .iter()
                .position(|&c| matches!(c, b'"' | b'\\' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(rest.len());
            out.extend_from_slice(&rest[..run]);
            self.pos += run;
            let at = self.pos;
            let Some(c) = self.peek() else {
                return Err(self.err(ParseErrorKind::Truncated {
                    expected: "`\"` (end of the string)",
                }));
            };
            self.pos += 1;
            match (c, q) {
                (b'"', _) => return Ok(out),
                (b'\\', Quoting::Plain(what)) => {
                    return Err(self.err_at(at, ParseErrorKind::BackslashInPlain { what }))
                }
                (b'\\', Quoting::Escaped) => {
                    let Some(e) = self.peek() else {
                        return Err(self.err(ParseErrorKind::Truncated {
                            expected: "an escaped character",
                        }));
                    };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'"' | b'\\' => e,
                        _ => {
                            return Err(
                                self.err_at(at, ParseErrorKind::BadEscape { escaped: Found(e) })
                            )
                        }
                    });
                }
                (b'\n' | b'\r' | b'\t', Quoting::Escaped) => {
                    let escape = match c {
                        b'\n' => "\\n",
                        b'\r' => "\\r",
                        _ => "\\t",
                    };
                    return Err(self.err_at(
                        at,
                        ParseErrorKind::Unescaped {
                            byte: Found(c),
                            escape,
                        },
                    ));
                }
                _ => out.push(c),
            }
        }
    }

    /// A plain (unescaped) field that must be UTF-8 (names, paths, hashes).
    fn text(&mut self, what: &'static str) -> Result<(String, usize), ParseError> {
        let at = self.pos;
        let bytes = self.string(Quoting::Plain(what))?;
        String::from_utf8(bytes)
            .map(|s| (s, at))
            .map_err(|_| self.err_at(at + 1, ParseErrorKind::NotUtf8 { what }))
    }

    fn store_path(&self, s: &str, at: usize, what: &'static str) -> Result<StorePath, ParseError> {
        self.store_dir.parse(s).map_err(|e| {
            self.err_at(
                at,
                ParseErrorKind::StorePath {
                    what,
                    why: e.to_string(),
                },
            )
        })
    }

    fn check_order(
        &self,
        prev: Option<&[u8]>,
        key: &[u8],
        at: usize,
        what: &'static str,
    ) -> Result<(), ParseError> {
        if let Some(prev) = prev {
            let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            if prev == key {
                return Err(self.err_at(
                    at,
                    ParseErrorKind::Duplicate {
                        what,
                        key: show(key),
                    },
                ));
            }
            if prev > key {
                return Err(self.err_at(
                    at,
                    ParseErrorKind::Unsorted {
                        what,
                        key: show(key),
                        prev: show(prev),
                    },
                ));
            }
        }
        Ok(())
    }

    fn derivation(&mut self) -> Result<Derivation, ParseError> {
        if self.b.starts_with(b"DrvWithVersion(") {
            self.pos = "DrvWithVersion(".len();
            let v = self.string(Quoting::Plain("version")).unwrap_or_default();
            return Err(self.err_at(
                0,
                ParseErrorKind::UnsupportedVersion(String::from_utf8_lossy(&v).into_owned()),
            ));
        }
        self.expect(b"Derive([", "`Derive([`")?;
        let mut drv = Derivation {
            outputs: self.outputs()?,
            ..Derivation::default()
        };
        self.expect(b",[", "`,[` (start of the input derivations)")?;
        drv.input_drvs = self.input_drvs()?;
        self.expect(b",[", "`,[` (start of the input sources)")?;
        drv.input_srcs = self.input_srcs()?;
        self.expect(b",", "`,` before the system")?;
        drv.system = self.string(Quoting::Plain("system"))?;
        self.expect(b",", "`,` before the builder")?;
        drv.builder = self.string(Quoting::Escaped)?;
        self.expect(b",[", "`,[` (start of the builder arguments)")?;
        let mut first = true;
        while !self.list_next(first, "an argument or `]`")? {
            first = false;
            drv.args.push(self.string(Quoting::Escaped)?);
        }
        self.expect(b",[", "`,[` (start of the environment)")?;
        drv.env = self.env()?;
        self.expect(b")", "`)` closing `Derive(`")?;
        Ok(drv)
    }

    /// `(name,path,hashAlgo,hash)` tuples, sorted by name, up to the closing `]`.
    fn outputs(&mut self) -> Result<BTreeMap<String, Output>, ParseError> {
        let mut outputs = BTreeMap::new();
        let mut first = true;
        let mut prev: Option<String> = None;
        while !self.list_next(first, "`(` (an output) or `]`")? {
            first = false;
            self.expect(b"(", "`(` (an output)")?;
            let (name, at) = self.text("output name")?;
            self.check_order(
                prev.as_deref().map(str::as_bytes),
                name.as_bytes(),
                at,
                "output",
            )?;
            self.expect(b",", "`,` after the output name")?;
            let (path, path_at) = self.text("output path")?;
            self.expect(b",", "`,` after the output path")?;
            let (hash_algo, _) = self.text("output hash algorithm")?;
            self.expect(b",", "`,` after the output hash algorithm")?;
            let (hash, _) = self.text("output hash")?;
            self.expect(b")", "`)` closing the output")?;
            let path = if path.is_empty() {
                None
            } else {
                Some(self.store_path(&path, path_at, "output path")?)
            };
            outputs.insert(
                name.clone(),
                Output {
                    path,
                    hash_algo,
                    hash,
                },
            );
            prev = Some(name);
        }
        Ok(outputs)
    }

    /// `(drvPath,[outputName,…])` tuples, both levels sorted, up to the closing `]`.
    fn input_drvs(&mut self) -> Result<BTreeMap<StorePath, BTreeSet<String>>, ParseError> {
        let mut input_drvs = BTreeMap::new();
        let mut first = true;
        let mut prev: Option<String> = None;
        while !self.list_next(first, "`(` (an input derivation) or `]`")? {
            first = false;
            self.expect(b"(", "`(` (an input derivation)")?;
            let (path, at) = self.text("input derivation path")?;
            let sp = self.store_path(&path, at, "input derivation")?;
            self.check_order(
                prev.as_deref().map(str::as_bytes),
                path.as_bytes(),
                at,
                "input derivation",
            )?;
            self.expect(b",[", "`,[` (the input derivation's outputs)")?;
            let mut outs = BTreeSet::new();
            let mut first_out = true;
            let mut prev_out: Option<String> = None;
            while !self.list_next(first_out, "an output name or `]`")? {
                first_out = false;
                let (o, at) = self.text("input derivation output name")?;
                self.check_order(
                    prev_out.as_deref().map(str::as_bytes),
                    o.as_bytes(),
                    at,
                    "input derivation output",
                )?;
                outs.insert(o.clone());
                prev_out = Some(o);
            }
            self.expect(b")", "`)` closing the input derivation")?;
            input_drvs.insert(sp, outs);
            prev = Some(path);
        }
        Ok(input_drvs)
    }

    /// Sorted store paths, up to the closing `]`.
    fn input_srcs(&mut self) -> Result<BTreeSet<StorePath>, ParseError> {
        let mut input_srcs = BTreeSet::new();
        let mut first = true;
        let mut prev: Option<String> = None;
        while !self.list_next(first, "an input source or `]`")? {
            first = false;
            let (path, at) = self.text("input source path")?;
            let sp = self.store_path(&path, at, "input source")?;
            self.check_order(
                prev.as_deref().map(str::as_bytes),
                path.as_bytes(),
                at,
                "input source",
            )?;
            input_srcs.insert(sp);
            prev = Some(path);
        }
        Ok(input_srcs)
    }

    /// `(name,value)` pairs sorted by name (bytes, not necessarily UTF-8), up to the closing `]`.
    fn env(&mut self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ParseError> {
        let mut env = BTreeMap::new();
        let mut first = true;
        let mut prev: Option<Vec<u8>> = None;
        while !self.list_next(first, "`(` (an environment variable) or `]`")? {
            first = false;
            self.expect(b"(", "`(` (an environment variable)")?;
            let at = self.pos;
            let key = self.string(Quoting::Escaped)?;
            self.check_order(prev.as_deref(), &key, at, "environment variable")?;
            self.expect(b",", "`,` after the variable name")?;
            let value = self.string(Quoting::Escaped)?;
            self.expect(b")", "`)` closing the environment variable")?;
            env.insert(key.clone(), value);
            prev = Some(key);
        }
        Ok(env)
    }
}
