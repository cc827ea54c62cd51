//! The command line's flags mapped onto the journal's own enums: the journal's codes never
//! depend on the order of a flag's values.

use super::args;
use crate::effects::journal;

impl From<args::Strategy> for journal::Strategy {
    fn from(s: args::Strategy) -> Self {
        match s {
            args::Strategy::Auto => journal::Strategy::Auto,
            args::Strategy::Direct => journal::Strategy::Direct,
            args::Strategy::Stepwise => journal::Strategy::Stepwise,
        }
    }
}

impl From<args::OnFailure> for journal::OnFailure {
    fn from(o: args::OnFailure) -> Self {
        match o {
            args::OnFailure::Unwind => journal::OnFailure::Unwind,
            args::OnFailure::Hold => journal::OnFailure::Hold,
        }
    }
}

impl From<args::OnFailedUnits> for journal::OnFailedUnits {
    fn from(o: args::OnFailedUnits) -> Self {
        match o {
            args::OnFailedUnits::Continue => journal::OnFailedUnits::Continue,
            args::OnFailedUnits::Stop => journal::OnFailedUnits::Stop,
        }
    }
}

impl From<args::RebootPolicy> for journal::RebootPolicy {
    fn from(r: args::RebootPolicy) -> Self {
        match r {
            args::RebootPolicy::Never => journal::RebootPolicy::Never,
            args::RebootPolicy::WhenNeeded => journal::RebootPolicy::WhenNeeded,
        }
    }
}

impl From<super::config::RebootWindow> for journal::RebootWindow {
    fn from(w: super::config::RebootWindow) -> Self {
        journal::RebootWindow {
            lower_minute: w.lower.0,
            upper_minute: w.upper.0,
        }
    }
}
