//! One run per system: the lock is keyed to the system profile, whatever the journal.

use std::os::unix::fs::{symlink, PermissionsExt};

use stepwise::effects::system_lock::{acquire, canonical_profile, lock_path};
use stepwise::error::{Error, Exit};

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run/stepwise");
    let profiles = d.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    (d, run, profiles.join("system"))
}

#[test]
fn two_journals_on_one_profile_the_second_is_refused_naming_the_first() {
    let (d, run, profile) = dirs();
    let first = acquire(&run, &profile, &d.path().join("a.redb"), 1_700_000_000_000).unwrap();
    let e = acquire(&run, &profile, &d.path().join("b.redb"), 0).unwrap_err();
    assert_eq!(e.exit(), Exit::Journal);
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("pid {}", std::process::id())),
        "{shown}"
    );
    assert!(
        shown.contains("a.redb"),
        "names the holder's journal: {shown}"
    );
    assert!(shown.contains("2023-11-14"), "{shown}");
    assert!(shown.contains("hint:"), "{shown}");
    // The same journal again: refused too.
    assert!(acquire(&run, &profile, &d.path().join("a.redb"), 0).is_err());
    drop(first);
    acquire(&run, &profile, &d.path().join("b.redb"), 0).unwrap();
}

#[test]
fn every_spelling_of_one_profile_meets_one_lock_and_other_profiles_do_not() {
    let (d, run, profile) = dirs();
    let alias = d.path().join("alias");
    symlink(profile.parent().unwrap(), &alias).unwrap();
    let _held = acquire(&run, &profile, &d.path().join("a.redb"), 0).unwrap();
    let e = acquire(&run, &alias.join("system"), &d.path().join("b.redb"), 0).unwrap_err();
    assert!(matches!(e, Error::Journal { .. }), "{e}");
    assert_eq!(
        canonical_profile(&alias.join("system")).unwrap(),
        canonical_profile(&profile).unwrap()
    );
    // Another profile (another system, e.g. a test bed) is another lock.
    let other = profile.with_file_name("other");
    acquire(&run, &other, &d.path().join("b.redb"), 0).unwrap();
    assert_ne!(
        lock_path(&run, &canonical_profile(&other).unwrap()),
        lock_path(&run, &canonical_profile(&profile).unwrap())
    );
}

#[test]
fn a_lock_directory_others_control_is_refused_before_anything_is_created() {
    let (d, run, profile) = dirs();
    let journal = d.path().join("a.redb");
    // A symlink to a directory someone else could own.
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(run.parent().unwrap()).unwrap();
    symlink(&elsewhere, &run).unwrap();
    let e = acquire(&run, &profile, &journal, 0).unwrap_err();
    assert!(e.to_string().contains("is a symlink"), "{e}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_file(&run).unwrap();

    // World-writable.
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = acquire(&run, &profile, &journal, 0).unwrap_err();
    assert!(e.to_string().contains("writable by others"), "{e}");
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);

    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    acquire(&run, &profile, &journal, 0).unwrap();
}

#[test]
fn a_profile_whose_directory_is_missing_is_bad_input() {
    let (d, run, _) = dirs();
    let e = acquire(&run, &d.path().join("nope/system"), &d.path().join("a"), 0).unwrap_err();
    assert_eq!(e.exit(), Exit::BadInput);
    assert!(!run.exists(), "nothing created");
}

/// The holder in another process, killed as an OOM kill or a power cut would: its lock dies
/// with it, so a stale lock file never blocks the next run.
#[test]
fn a_lock_held_by_another_process_is_refused_and_dies_with_it() {
    use std::io::BufRead;
    let (d, run, profile) = dirs();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STEPWISE_LOCK_HELPER", d.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("LOCK-HELD") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the helper never took the lock"
        );
    }
    let e = acquire(&run, &profile, &d.path().join("mine.redb"), 0).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains(&format!("pid {}", child.id())), "{shown}");
    assert!(shown.contains("theirs.redb"), "{shown}");
    child.kill().unwrap();
    child.wait().unwrap();
    acquire(&run, &profile, &d.path().join("mine.redb"), 0).unwrap();
}

/// Runs only inside the test above: takes the lock, says so, and holds it until killed.
#[test]
fn lock_holder_helper() {
    let Some(root) = std::env::var_os("STEPWISE_LOCK_HELPER") else {
        return;
    };
    let root = std::path::PathBuf::from(root);
    let _held = acquire(
        &root.join("run/stepwise"),
        &root.join("profiles/system"),
        &root.join("theirs.redb"),
        0,
    )
    .unwrap();
    println!("LOCK-HELD");
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}
