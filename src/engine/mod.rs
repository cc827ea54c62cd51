//! The executor: journals each transition's intent, runs its effect through the store traits,
//! journals the outcome. Decisions come from `pure::transition`.

pub mod plan_inputs;
