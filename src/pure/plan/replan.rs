//! Re-planning after a step ran out of space: what the failure teaches about the cost of a byte,
//! and the rule that a step is never tried again without more room than it failed with.
//!
//! The re-plan itself is [`super::plan`] again, from the generation the run stands at (its closure
//! as G0, the disk measured again), with the cost learnt here on every estimate of a path still to
//! come. What a step really needed is unknown (Nix stopped when the disk was full); it was more
//! than the room it had, so the estimate is scaled up by at least room / estimate, with a margin.

use serde::{Deserialize, Serialize};

use super::disk::PPM;

/// The margin on a learnt cost: 10 % above what the failure proves.
pub const LEARNT_MARGIN_PPM: u64 = 100_000;

/// A step's realise that ran out of space: it was estimated to add `estimated` bytes of the disk
/// and had `free` bytes when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RanOut {
    pub estimated: u64,
    pub free: u64,
}

/// The factor (ppm) on every estimate after `ran_out`, given the factor the failed step was
/// estimated with (`prev_ppm`; 0 or [`PPM`]: none). The step needed more than `free`, so its
/// estimate was short by at least `free / estimated`; the factor never falls. A step estimated
/// to add nothing teaches no ratio: the factor doubles.
pub fn learnt_cost_ppm(prev_ppm: u64, ran_out: RanOut) -> u64 {
    let prev = prev_ppm.max(PPM) as u128;
    let factor = if ran_out.estimated == 0 {
        2 * PPM as u128
    } else {
        (ran_out.free as u128 * (PPM + LEARNT_MARGIN_PPM) as u128)
            .div_ceil(ran_out.estimated as u128)
            .max(PPM as u128)
    };
    (prev * factor).div_ceil(PPM as u128).min(u64::MAX as u128) as u64
}

/// Whether a re-plan would try the failed step again without more room than it failed with:
/// the same generation first (`same_step`), and no more free bytes now than then. Such a plan
/// does not fit, whatever its estimate says.
pub fn retries_without_more_room(same_step: bool, ran_out: RanOut, free_now: u64) -> bool {
    same_step && free_now <= ran_out.free
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_step_that_had_twice_its_estimate_and_ran_out_costs_more_than_twice() {
        let f = learnt_cost_ppm(
            0,
            RanOut {
                estimated: 100,
                free: 200,
            },
        );
        assert_eq!(f, 2_200_000);
        // Learnt again on top of the first lesson.
        let g = learnt_cost_ppm(
            f,
            RanOut {
                estimated: 220,
                free: 220,
            },
        );
        assert_eq!(g, 2_420_000);
    }

    #[test]
    fn room_filled_by_something_else_teaches_no_ratio_below_one() {
        // 40 free for an estimate of 100: the disk was filled by someone else; the estimate
        // may still be right, the factor stays where it was (with the margin).
        let f = learnt_cost_ppm(
            0,
            RanOut {
                estimated: 100,
                free: 40,
            },
        );
        assert_eq!(f, PPM);
        assert_eq!(
            learnt_cost_ppm(
                0,
                RanOut {
                    estimated: 0,
                    free: 40
                }
            ),
            2 * PPM
        );
    }

    #[test]
    fn the_same_step_needs_more_room_than_it_failed_with() {
        let r = RanOut {
            estimated: 100,
            free: 50,
        };
        assert!(retries_without_more_room(true, r, 50));
        assert!(retries_without_more_room(true, r, 10));
        assert!(!retries_without_more_room(true, r, 51));
        assert!(!retries_without_more_room(false, r, 10));
    }

    proptest! {
        /// Whatever the figures: the factor never falls, never overflows, and the failed step's
        /// estimate under it is more than the room it failed with.
        #[test]
        fn the_learnt_estimate_exceeds_the_room_it_failed_with(
            prev in 0u64..10 * PPM,
            estimated in 0u64..u64::MAX / 4,
            free in 0u64..u64::MAX / 4,
        ) {
            let f = learnt_cost_ppm(prev, RanOut { estimated, free });
            prop_assert!(f >= prev.max(PPM));
            // The failed step's estimate was `estimated` under `prev`; under `f` it is at
            // least the room it failed with.
            let prev = prev.max(PPM) as u128;
            if estimated > 0 {
                prop_assert!(estimated as u128 * f as u128 >= free as u128 * prev);
            }
        }
    }
}
