//! Planning: the closure diff of G0 against the target, upgrade units, masks, and the step order.

pub mod names;
pub mod order;
pub mod space;
