//! The man pages and shell completions of `stepwise`, generated from its clap definition.
//!
//! Used by `cargo run -p xtask -- gen-docs` (writes doc/) and by the stepwise test
//! `tests/cli_docs.rs` (regenerates into a temporary folder and compares), which includes this
//! file by path: it must depend on nothing but std, clap, clap_mangen and clap_complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Sections appended to stepwise(1): what clap cannot describe.
const EXTRA_MAN: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Done: the target was reached, an unwind finished, the journal verified.
.TP
\fB1\fR
The run failed and was unwound to the generation it started from (or held there, if asked).
.TP
\fB2\fR
Bad usage or bad input (flags, settings file, target); nothing was changed.
.TP
\fB3\fR
Stopped before the end (signal, reboot pending, no room even step by step): \fBstepwise resume\fR continues.
.TP
\fB4\fR
The journal is unusable: corrupt, locked by another run, or of a newer format.
.PP
A command that only reads (all but \fBupgrade\fR, \fBresume\fR and \fBunwind\fR) exits 0,
quietly, when its standard output is closed by the reader (\fBstepwise journal show | head \-1\fR).
.SH "JSON OUTPUT"
With \fB\-\-json\fR, standard output always carries \fB"version"\fR. One\-shot commands
(\fBplan\fR, \fBstatus\fR, \fBdrv inspect\fR, \fBjournal verify\fR) print exactly one JSON
document on one line, \fB{"stepwise": KIND, "version": 1, ...}\fR; when one fails, or the command
line is wrong, that document is the error: \fB{"stepwise": "error", "version": 1, "event":
"error", "exit": CODE, "message": ...}\fR. Streaming commands (\fBupgrade\fR, \fBresume\fR,
\fBunwind\fR, \fBjournal show\fR, \fBjournal export\fR) print JSON lines: a header carrying
\fB"version"\fR first, then one event (or record) a line; a failure ends the stream with an
\fB"event": "error"\fR line carrying the exit code.
.SH FILES
.TP
\fI/etc/stepwise/config.toml\fR
Settings (TOML), written by the NixOS module \fBservices.stepwise\fR. The top level may set
\fBjournal\fR; the table \fB[upgrade]\fR sets the long flags of \fBstepwise upgrade\fR under the
same names: \fBtarget\fR, \fBflake\fR or \fBfile\fR (with \fBattr\fR), \fBprofile\fR,
\fBcurrent\-system\fR, \fBbooted\-system\fR, \fBaction\fR, \fBstrategy\fR, \fBnon\-vital\fR (a list),
\fBtogether\fR (a list of lists), \fBreserve\fR (bytes, or a string such as "64M"), \fBon\-failure\fR,
\fBreboot\fR, \fBreboot\-command\fR, \fBreboot\-window\fR ({ lower = "01:00", upper = "05:00" }).
The table \fB[nix\-options]\fR holds Nix settings for every command, passed as
\fB\-\-nix\-option\fR NAME VALUE before those of the command line.
Flags given on the command line win over the file. A missing default file is fine; an unknown key
or a bad value is exit 2 naming the line and column.
.TP
\fI/var/lib/stepwise/journal.redb\fR
The run journal (\fB\-\-journal\fR), with a reserve file beside it.
.SH ENVIRONMENT
.TP
\fBSTEPWISE_CONFIG\fR
The settings file, as \fB\-\-config\fR.
.TP
\fBSTEPWISE_JOURNAL\fR
The journal, as \fB\-\-journal\fR.
.TP
\fBSTEPWISE_LOG\fR
Log filter (tracing's EnvFilter syntax), overriding \fB\-v\fR and \fB\-q\fR.
.SH "SEE ALSO"
\fBnixos\-rebuild\fR(8), \fBnix\-store\fR(1), \fBsystemd.timer\fR(5)
"#;

/// Write every generated file under `out` (`man/*.1`, `completions/*`); returns their paths,
/// relative to `out`, sorted.
pub fn generate(cmd: clap::Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();

    std::fs::create_dir_all(out.join("man"))?;
    man_pages(&cmd, true, out, &mut written)?;

    std::fs::create_dir_all(out.join("completions"))?;
    for (shell, file) in [
        (Shell::Bash, "stepwise.bash"),
        (Shell::Zsh, "_stepwise"),
        (Shell::Fish, "stepwise.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "stepwise", &mut buf);
        let rel = Path::new("completions").join(file);
        std::fs::write(out.join(&rel), buf)?;
        written.push(rel);
    }
    written.sort();
    Ok(written)
}

fn man_pages(
    cmd: &clap::Command,
    top: bool,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, false, out, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).manual("stepwise manual");
    let rel = Path::new("man").join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    if top {
        page.write_all(EXTRA_MAN.as_bytes())?;
    }
    std::fs::write(out.join(&rel), page)?;
    written.push(rel);
    Ok(())
}
