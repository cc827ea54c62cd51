//! Checks of the command line clap cannot make, before any command does anything: the SYSTEM
//! arguments (`--profile`, `--current-system`) of `plan` and `upgrade` — a mistyped path is bad
//! input (exit 2), never a new profile that nothing boots from — and flag combinations across
//! the global flags. Nothing on disk changes.

use std::path::Path;

use super::args::{Cli, Command, DrvCommand, SystemArgs};
use crate::drv::StorePath;
use crate::error::Error;

/// Run the checks the command needs.
pub fn before_run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Plan(a) => system_args(&a.system),
        Command::Upgrade(a) => system_args(&a.system),
        // clap checks `conflicts_with` of a global flag only when it follows the subcommand.
        Command::Drv(DrvCommand::Inspect { aterm: true, .. }) if cli.json => Err(Error::bad_input(
            "--aterm cannot be used with --json: --aterm prints the derivation's raw bytes",
            "drop one of them: --json for the parsed derivation as JSON, --aterm for its canonical bytes",
        )),
        _ => Ok(()),
    }
}

/// The profile must exist and be a profile (a symlink to `PROFILE-N-link`): stepwise adds
/// generations to the system's profile and never creates one. The running system's link must
/// exist. The booted system's may be absent (as in a container, or before the first boot).
pub fn system_args(sys: &SystemArgs) -> Result<(), Error> {
    let profile = &sys.profile;
    let shown = profile.display();
    match std::fs::symlink_metadata(profile) {
        Ok(m) if m.file_type().is_symlink() => {}
        Ok(_) => return Err(Error::bad_input(
            format!("--profile {shown} is not a profile: a profile is a symlink to PROFILE-N-link"),
            "pass the system profile (on NixOS /nix/var/nix/profiles/system); nothing was changed",
        )),
        Err(e) => {
            let missing_dir = profile
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.is_dir());
            let what = match missing_dir {
                Some(d) => format!(
                    "--profile {shown}: its directory {} does not exist",
                    d.display()
                ),
                None => format!("--profile {shown}: {}", describe(&e)),
            };
            return Err(Error::bad_input(
                what,
                "pass the system profile that exists (on NixOS /nix/var/nix/profiles/system): \
                 stepwise adds generations to it and never creates one; nothing was changed",
            ));
        }
    }
    link_exists(
        &sys.current_system,
        "--current-system",
        "pass the link to the running system (on NixOS /run/current-system); nothing was changed",
    )
}

/// The target must be a NixOS system's toplevel, which NixOS names `nixos-system-NAME-LABEL`
/// (`system.build.toplevel`). Anything else would be planned as "remove every package" and, in an
/// upgrade, built and set in the profile before activation refused it. Call it right after the
/// target is resolved, before anything is built.
pub fn target_is_system(drv: &StorePath) -> Result<(), Error> {
    match drv.derivation_name() {
        Some(name) if name.starts_with("nixos-system-") => Ok(()),
        _ => Err(Error::bad_input(
            format!(
                "{drv} is not a NixOS system: the toplevel of a NixOS configuration is a \
                 derivation named nixos-system-HOST-VERSION"
            ),
            "pass the system's toplevel: --flake REF#HOST, --file F.nix evaluating to the NixOS \
             system, or --target with the .drv of config.system.build.toplevel; nothing was changed",
        )),
    }
}

fn link_exists(link: &Path, flag: &str, hint: &str) -> Result<(), Error> {
    match std::fs::symlink_metadata(link) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::bad_input(
            format!("{flag} {}: {}", link.display(), describe(&e)),
            hint,
        )),
    }
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(dir: &Path, profile: &str) -> SystemArgs {
        SystemArgs {
            profile: dir.join(profile),
            current_system: dir.join("current-system"),
            booted_system: dir.join("booted-system"),
        }
    }

    #[test]
    fn only_a_nixos_toplevel_is_a_target() {
        let p = |n: &str| StorePath::from_base_name(&format!("{}-{n}", "0".repeat(32))).unwrap();
        assert!(target_is_system(&p("nixos-system-web-23.11.20231129.057f9ae.drv")).is_ok());
        for wrong in [
            "hello-2.12.drv",
            "nixos-system-web-23.11",
            "system-path.drv",
        ] {
            let e = target_is_system(&p(wrong)).unwrap_err();
            assert!(e.to_string().contains(wrong), "{e}");
            assert_eq!(e.exit() as u8, 2);
        }
    }

    #[test]
    fn profile_and_current_system_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::os::unix::fs::symlink("system-1-link", d.join("system")).unwrap();
        std::os::unix::fs::symlink("/nix/store/x", d.join("current-system")).unwrap();
        std::fs::write(d.join("plain-file"), b"").unwrap();

        assert!(
            system_args(&sys(d, "system")).is_ok(),
            "booted-system may be absent"
        );

        let e = system_args(&sys(d, "no-such-dir/system")).unwrap_err();
        assert!(e.to_string().contains("no-such-dir does not exist"), "{e}");
        assert_eq!(e.exit() as u8, 2);

        let e = system_args(&sys(d, "sytem")).unwrap_err();
        assert!(e.to_string().contains("sytem: no such file"), "{e}");

        let e = system_args(&sys(d, "plain-file")).unwrap_err();
        assert!(e.to_string().contains("is not a profile"), "{e}");

        let mut s = sys(d, "system");
        s.current_system = d.join("nowhere");
        let e = system_args(&s).unwrap_err();
        assert!(e.to_string().contains("--current-system"), "{e}");
    }
}
