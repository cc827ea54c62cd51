//! Restart triggers that glue rewriting cannot see change.
//!
//! NixOS restarts a unit on a switch when its unit file changed. A unit's `restartTriggers` go
//! into its file as `X-Restart-Triggers=` (in the unit text itself, or, since nixpkgs moved them
//! out, as the path of a `writeText "X-Restart-Triggers-NAME"` whose text is the triggers). A
//! trigger that is a store path (a config file in the store) is rewritten with everything else
//! under a step's mask, so the unit changes exactly when its config does. A trigger without
//! context, such as `builtins.hashString "sha256" configText`, is a bare hash of the *target's*
//! text: every step would carry the target's hash, and the step whose switch really changes the
//! configuration would not restart the unit.
//!
//! We cannot recompute such a hash (the hashed text is gone after evaluation). So every
//! intermediate step marks it: ` stepwise-step-DIGEST` is appended, DIGEST a hash of the step's
//! mask. Steps with different masks get different trigger values, so each switch restarts a unit
//! with a context-free trigger, and the target (empty mask, never rewritten) has its own value
//! back, so the last switch restarts it too: more restarts than strictly needed, never one too few.

use sha2::{Digest, Sha256};

use super::mask::Mask;
use super::units::TargetGraph;
use crate::drv::{Derivation, StoreDir};

const KEY: &[u8] = b"X-Restart-Triggers=";
const WRITE_TEXT_PREFIX: &str = "X-Restart-Triggers-";

/// The mark an intermediate step appends to a context-free trigger (`None` for the target).
pub fn step_mark(mask: &Mask, sd: &StoreDir) -> Option<Vec<u8>> {
    if mask.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for (from, to) in &mask.0 {
        h.update(sd.display(from).as_bytes());
        h.update(b"=");
        h.update(sd.display(to).as_bytes());
        h.update(b"\n");
    }
    let digest: [u8; 32] = h.finalize().into();
    Some(
        format!(
            " stepwise-step-{}",
            crate::drv::store_path::hex(&digest[..8])
        )
        .into_bytes(),
    )
}

/// Whether any glue derivation of `g` has a context-free restart trigger (a step marks it).
pub fn any_marked(g: &TargetGraph) -> bool {
    g.glue.iter().any(|d| {
        let name = d.derivation_name().unwrap_or(d.name());
        mark_triggers(&g.drvs[d], name, &g.store_dir, b" ").is_some()
    })
}

/// Whether `value` (triggers separated by spaces) holds a trigger that is not a store path.
fn has_context_free_trigger(value: &[u8], sd: &StoreDir) -> bool {
    let prefix = format!("{}/", sd.as_str());
    value
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .any(|t| !t.starts_with(prefix.as_bytes()))
}

/// `drv` (named `name`) with `mark` appended to each context-free restart trigger it writes, or
/// `None` when it writes none. Reads the `text` attribute, where `writeText` and `makeUnit` put
/// the file's contents (`passAsFile` keeps it in the environment too).
pub fn mark_triggers(
    drv: &Derivation,
    name: &str,
    sd: &StoreDir,
    mark: &[u8],
) -> Option<Derivation> {
    let text = drv.env.get(b"text".as_slice())?;
    let marked = if name.starts_with(WRITE_TEXT_PREFIX) {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        has_context_free_trigger(body, sd).then(|| {
            let mut t = body.to_vec();
            t.extend_from_slice(mark);
            t.extend_from_slice(&text[body.len()..]);
            t
        })
    } else {
        mark_unit_text(text, sd, mark)
    }?;
    let mut out = drv.clone();
    out.env.insert(b"text".to_vec(), marked);
    Some(out)
}

/// A unit text with `mark` appended to each `X-Restart-Triggers=` line holding a context-free
/// trigger; `None` when there is no such line.
fn mark_unit_text(text: &[u8], sd: &StoreDir, mark: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + mark.len());
    let mut changed = false;
    for line in text.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        match body.strip_prefix(KEY) {
            Some(value) if has_context_free_trigger(value, sd) => {
                out.extend_from_slice(body);
                out.extend_from_slice(mark);
                out.extend_from_slice(&line[body.len()..]);
                changed = true;
            }
            _ => out.extend_from_slice(line),
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    fn with_text(text: &str) -> Derivation {
        let mut d = Derivation::default();
        d.env.insert(b"text".to_vec(), text.as_bytes().to_vec());
        d
    }

    fn text_of(d: &Derivation) -> String {
        String::from_utf8(d.env[b"text".as_slice()].clone()).unwrap()
    }

    #[test]
    fn a_hash_trigger_in_the_unit_text_is_marked() {
        let unit = with_text("[Unit]\nX-Restart-Triggers=5d41402abc4b2a76\nAfter=network.target\n");
        let d = mark_triggers(&unit, "unit-sshd.service", &sd(), b" M").unwrap();
        assert_eq!(
            text_of(&d),
            "[Unit]\nX-Restart-Triggers=5d41402abc4b2a76 M\nAfter=network.target\n"
        );
    }

    #[test]
    fn store_path_triggers_are_left_to_the_rewriting() {
        let unit = with_text(
            "[Unit]\nX-Restart-Triggers=/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-sshd.conf\n",
        );
        assert!(mark_triggers(&unit, "unit-sshd.service", &sd(), b" M").is_none());
        let text = with_text("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-sshd.conf");
        assert!(mark_triggers(&text, "X-Restart-Triggers-sshd", &sd(), b" M").is_none());
        assert!(mark_triggers(&with_text("[Unit]\n"), "unit-a.service", &sd(), b" M").is_none());
    }

    #[test]
    fn a_write_text_trigger_with_a_hash_is_marked() {
        let text = with_text("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-a.conf 5d41402abc");
        let d = mark_triggers(&text, "X-Restart-Triggers-sshd", &sd(), b" M").unwrap();
        assert_eq!(
            text_of(&d),
            "/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-a.conf 5d41402abc M"
        );
    }

    #[test]
    fn steps_with_different_masks_mark_differently_and_the_target_not_at_all() {
        let sd = sd();
        let p = |s: &str| sd.parse(&format!("/nix/store/{s}")).unwrap();
        let a = p("0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12");
        let b = p("1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.10");
        let c = p("2mdqa9w1p6cmli6976v4wi0sw9r4p5pr-jq-1.7");
        let d = p("3mdqa9w1p6cmli6976v4wi0sw9r4p5pr-jq-1.6");
        let one = Mask([(a.clone(), b.clone()), (c.clone(), d.clone())].into());
        let two = Mask([(c, d)].into());
        assert_eq!(step_mark(&Mask::default(), &sd), None);
        assert_ne!(step_mark(&one, &sd), step_mark(&two, &sd));
        assert_eq!(step_mark(&one, &sd), step_mark(&one.clone(), &sd));
    }
}
