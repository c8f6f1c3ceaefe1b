//! The inference engine: department switch and op execution over a caller-owned arena.
pub mod layout;
