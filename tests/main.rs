//! Integration tests through the real `hardmine` binary (one test binary, as in ripgrep).
//! Every test writes its own Parquet files into its own temporary directory.

mod util;

mod analyze;
mod cli;
mod durability;
mod errors;
mod fuzz;
mod report;
mod strategies;
mod sweep;
mod trend;
