//! `stepwise plan`: what an upgrade would do, without changing anything.

use std::io::Write;

use crate::cli::args::{PlanArgs, RebootPolicy};
use crate::effects::nix::cli::{NixCli, NixCliConfig};
use crate::effects::store::{Store, System};
use crate::engine::plan_inputs::{gather, SystemLinks};
use crate::error::{Error, Exit};
use crate::output::write_document;
use crate::plan::report::{json_body, write_human, Header};
use crate::plan::{plan, PlanOptions};

/// Run `stepwise plan` against the real Nix.
pub fn run(args: &PlanArgs, json: bool, config: NixCliConfig) -> Result<Exit, Error> {
    let nix = NixCli::new(config)?;
    run_with(&nix, &nix, args, json, &mut std::io::stdout().lock())
}

/// `stepwise plan` over any store and system; the report goes to `out`. Exit 0 when a plan
/// fits, 3 when none does.
pub fn run_with(
    store: &dyn Store,
    system: &dyn System,
    args: &PlanArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<Exit, Error> {
    let target = store.resolve_target(&args.target.spec())?;
    crate::cli::checks::target_is_system(&target)?;
    let links = SystemLinks {
        profile: args.system.profile.clone(),
        current_system: args.system.current_system.clone(),
        booted_system: args.system.booted_system.clone(),
    };
    let options = PlanOptions {
        non_vital: args.room.non_vital.clone(),
        together: args.room.together.clone(),
        reboot_allowed: args.room.reboot == RebootPolicy::WhenNeeded,
        merge_headroom_percent: 0,
    };
    let input = gather(store, system, &target, &links, args.room.reserve, options)?;
    let planned = plan(&input)?;
    let sd = store.store_dir();
    let header = Header::new(
        sd,
        input.g0.toplevel.as_ref(),
        &target,
        input.target.root_out(),
    );
    let io = |e: std::io::Error| Error::Io {
        context: "writing the plan".into(),
        source: e,
    };
    if json {
        write_document(out, "plan", &json_body(&header, &planned, sd)).map_err(io)?;
    } else {
        write_human(out, &header, &planned).map_err(io)?;
    }
    Ok(if planned.outcome.is_ok() {
        Exit::Done
    } else {
        Exit::Stopped
    })
}
