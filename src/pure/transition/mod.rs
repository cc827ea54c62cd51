//! The run as a state machine: `match (state, event)` with a typed "not allowed" error.
