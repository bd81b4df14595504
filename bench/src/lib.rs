//! `stampede-bench`: the load generator (`load`) and, later, the experiment
//! runner (`ladder`) for stampede-layer.
//!
//! The `load` runner is a library function, [`load::run_load`], so the ladder
//! can drive it directly; the binary is a thin clap front-end over it.

pub mod cache_status;
pub mod load;
pub mod stats;

pub use load::{LoadConfig, LoadSummary, run_load};
