//! `stepwise plan`: what an upgrade would do, without changing anything.

use std::io::Write;

use crate::cli::args::{PlanArgs, RebootPolicy};
use crate::effects::nix::cli::{NixCli, NixCliConfig};
use crate::effects::store::{Store, System};
use crate::engine::plan_inputs::{gather, SystemLinks};
use crate::error::{Error, Exit};
use crate::output::write_document;
use crate::plan::keep::auto_chain;
use crate::plan::report::{json_body, write_human, Header};
use crate::plan::{keep_previous, plan, PlanOptions};

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
    // `--keep-previous`: the chain an `auto` upgrade would walk decides (`plan` has no strategy).
    let keep = args
        .room
        .keep_previous
        .then(|| keep_previous(&planned.frame, auto_chain(&planned.frame)));
    if json {
        let mut body = json_body(&header, &planned, sd);
        if let (Some(k), Some(map)) = (&keep, body.as_object_mut()) {
            map.insert("keep_previous".into(), serde_json::json!(k));
        }
        write_document(out, "plan", &body).map_err(io)?;
    } else {
        write_human(out, &header, &planned).map_err(io)?;
        if let Some(k) = &keep {
            writeln!(out, "{}", k.why).map_err(io)?;
        }
    }
    Ok(if planned.outcome.is_ok() {
        Exit::Done
    } else {
        Exit::Stopped
    })
}
