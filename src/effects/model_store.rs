//! An in-memory store implementing the same traits as the real one, for the engine's property tests.
