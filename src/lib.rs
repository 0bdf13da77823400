//! hardmine: hard-example mining and sampling analysis of object detectors.
//!
//! The library reads anchor-level prediction dumps from Parquet ([`input`]), computes every
//! strategy's loss in one parallel streaming pass ([`analysis`]), gathers the results into a
//! serialisable [`report::Report`] and renders it ([`render`]). [`synth`] generates the synthetic
//! RetinaNet-like dumps used by `hardmine demo`, the tests and the benchmarks.
//!
//! Data flows one way: input → analysis → report → render.
//!
//! ```
//! use hardmine::{analysis, config::AnalysisParams, input::Dump, render, synth};
//!
//! // A small synthetic dump (what `hardmine generate` writes), then the whole pipeline.
//! let dir = tempfile::tempdir().unwrap();
//! let small = synth::SynthConfig { images: 2, anchors_per_image: 2_000, classes: 4, ..Default::default() };
//! synth::generate(dir.path(), &small)?;
//!
//! let config = AnalysisParams::default().check()?;
//! let dump = Dump::open(&[dir.path().display().to_string()], config.dump())?;
//! let report = analysis::analyze(&dump, &config)?;
//! assert_eq!(report.dataset.decisions, 2 * 2_000 * 4 - report.dataset.ignored * 4);
//! let table = render::render_to_string(&report, render::Format::Table)?;
//! assert!(table.contains("easy negatives"));
//! # Ok::<(), hardmine::Error>(())
//! ```
#![deny(missing_docs)]

pub mod analysis;
pub mod compare;
pub mod config;
pub mod error;
pub mod fastmath;
pub mod input;
pub mod loss;
pub mod mine;
pub mod output;
pub mod render;
pub mod report;
pub mod rng;
pub mod state;
pub mod synth;
pub mod trend;
pub mod vocab;

pub use error::Error;
