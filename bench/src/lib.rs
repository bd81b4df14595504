//! `stampede-bench`: the load generator (`load`), the experiment runner
//! (`ladder`), the soak (`soak`) and the fault campaign (`campaign`) for
//! stampede-layer.
//!
//! The `load` runner is a library function, [`load::run_load`], so the ladder
//! can drive it directly; the binary is a thin clap front-end over it.

pub mod cache_status;
pub mod campaign;
pub mod charts;
pub mod ladder;
pub mod load;
pub mod procs;
pub mod soak;
pub mod stats;
pub mod traffic;

pub use load::{LoadConfig, LoadSummary, run_load};
