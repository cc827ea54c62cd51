//! `--keep-previous`: whether G0 can stay a generation (the rollback `nixos-rebuild --rollback`
//! goes back to) once the run has reached the target, decided from the plan's figures alone.
//!
//! The plain upgrade's peak is everything on disk now (G0 included) plus what the target adds:
//! the very bytes used after the run when G0's closure is kept instead of collected. So G0 can be
//! kept exactly when the plain upgrade is the chain walked and that peak stays within the ceiling.
//! A stepwise chain exists because G0 and the target do not fit together: G0 is collected after
//! the first step, as always.

use serde::Serialize;

use super::report::human_bytes;
use super::Frame;
use crate::transition::Chain;

/// The decision, and the one line that tells people why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeepPrevious {
    pub kept: bool,
    pub why: String,
}

/// Whether G0 stays a generation when the run walks `chain`.
pub fn keep_previous(frame: &Frame, chain: Chain) -> KeepPrevious {
    let peak = human_bytes(frame.plain_peak);
    let ceiling = human_bytes(frame.ceiling);
    match chain {
        Chain::Direct if frame.plain_peak <= frame.ceiling => KeepPrevious {
            kept: true,
            why: format!(
                "keepPrevious: G0 stays a generation to roll back to: the target beside it \
                 uses {peak} of a ceiling of {ceiling}"
            ),
        },
        Chain::Direct => KeepPrevious {
            kept: false,
            why: format!(
                "keepPrevious: G0 cannot be kept: the target beside it needs {peak}, above the \
                 ceiling of {ceiling}; G0 is collected once the target is active"
            ),
        },
        Chain::Steps => KeepPrevious {
            kept: false,
            why: format!(
                "keepPrevious: G0 cannot be kept: the upgrade goes in steps because G0 and the \
                 target together need {peak}, above the ceiling of {ceiling}; G0 is collected \
                 after the first step"
            ),
        },
    }
}

/// The chain an `auto` upgrade walks, as far as the plan tells (`stepwise plan` has no strategy).
pub fn auto_chain(frame: &Frame) -> Chain {
    if frame.plain_fits {
        Chain::Direct
    } else {
        Chain::Steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(plain_peak: u64, ceiling: u64) -> Frame {
        Frame {
            used: 100,
            free: ceiling.saturating_sub(100),
            reserve: 0,
            ceiling,
            g0_closure: 60,
            target_closure: 70,
            lower_bound: 110,
            plain_peak,
            plain_fits: plain_peak <= ceiling,
            estimated: 0,
            largest_move: 0,
            largest_move_name: String::new(),
            disk: Default::default(),
        }
    }

    #[test]
    fn kept_when_the_plain_upgrade_fits_with_g0_beside_the_target() {
        let d = keep_previous(&frame(170, 170), Chain::Direct);
        assert!(d.kept, "{d:?}");
        assert!(d.why.contains("G0 stays a generation"), "{}", d.why);
    }

    #[test]
    fn not_kept_when_the_plain_upgrade_is_forced_over_the_ceiling() {
        let d = keep_previous(&frame(171, 170), Chain::Direct);
        assert!(!d.kept);
        assert!(d.why.contains("above the ceiling"), "{}", d.why);
    }

    #[test]
    fn never_kept_in_steps_whatever_the_figures() {
        for f in [frame(150, 170), frame(300, 170)] {
            let d = keep_previous(&f, Chain::Steps);
            assert!(!d.kept);
            assert!(d.why.contains("goes in steps"), "{}", d.why);
        }
    }

    #[test]
    fn an_auto_run_walks_the_plain_chain_only_when_it_fits() {
        assert_eq!(auto_chain(&frame(170, 170)), Chain::Direct);
        assert_eq!(auto_chain(&frame(171, 170)), Chain::Steps);
    }
}
