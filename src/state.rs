//! Shard states: everything a pass accumulated, saved to a file, so that shards analysed
//! separately (one task per shard on a cluster) merge into exactly the report one run over all
//! the inputs would give.
//!
//! A state is versioned JSON: the analysis settings (without the thread count), the facts about
//! the dump, and the merged accumulators. Every sum in it is exact, so merging is exact too.
//! Shard by image: each image's rows must be in one shard (the per-image strategies finalise an
//! image within its shard); a merge that finds an image in two shards says so. States merge only
//! with states of the same hardmine version (`hardmine_version`) computed alike (`fused`: see
//! [`crate::fastmath`]), and `merge` refuses the rest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::Pass;
use crate::config::AnalysisConfig;
use crate::error::{OutputError, StateError};
use crate::input::DumpInfo;
use crate::output::write_atomic;

/// Version of the state layout; states of another version are refused. 3: an image's
/// selection candidates in the pile's compact columns (a candidate whose decisions all fall in
/// one bucket is a tag and three numbers; `select::pile`). 4: `fused`.
pub const STATE_VERSION: u32 = 4;

/// A saved pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`] when written.
    pub state_version: u32,
    /// The hardmine version that wrote it.
    pub hardmine_version: String,
    /// Whether the sigmoid kernel that computed it fused its multiply-adds
    /// ([`crate::fastmath::fused`]: a processor with AVX2 and FMA), which moves the last bits
    /// of its values.
    pub fused: bool,
    /// The analysis settings.
    pub config: AnalysisConfig,
    /// The dump's facts.
    pub dump: DumpInfo,
    /// The accumulators, finished (every image finalised).
    pub pass: Pass,
}

impl State {
    /// A state for a finished pass.
    pub fn new(config: &AnalysisConfig, dump: DumpInfo, pass: Pass) -> State {
        State {
            state_version: STATE_VERSION,
            hardmine_version: env!("CARGO_PKG_VERSION").to_string(),
            fused: crate::fastmath::fused(),
            config: config.with_threads(None),
            dump,
            pass,
        }
    }

    /// Writes the state atomically.
    pub fn write(&self, path: &Path) -> Result<(), OutputError> {
        let bytes = serde_json::to_vec(self)?;
        write_atomic(path, &bytes)
    }

    /// Reads a state, refusing other versions.
    pub fn read(path: &Path) -> Result<State, StateError> {
        let bytes =
            std::fs::read(path).map_err(|source| StateError::Io { path: path.to_path_buf(), source })?;
        // Check the version before the full parse, for a clear message on old files.
        #[derive(Deserialize)]
        struct Version {
            state_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Parse { path: path.to_path_buf(), detail: e.to_string() })?;
        if v.state_version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: v.state_version,
                expected: STATE_VERSION,
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Parse { path: path.to_path_buf(), detail: e.to_string() })
    }
}

/// Merges states (in the order given) into one: same hardmine version, settings and dump shape
/// required.
pub fn merge(states: Vec<(PathBuf, State)>) -> Result<State, StateError> {
    let mut iter = states.into_iter();
    let Some((first_path, mut total)) = iter.next() else {
        return Err(StateError::NoStates);
    };
    for (path, s) in iter {
        let incompatible = |what: &str| StateError::Incompatible {
            path: path.clone(),
            first: first_path.clone(),
            what: what.to_string(),
        };
        // Within one version only: a version may change how sums are blocked or rounded, and a
        // merged report must be what one run of one version gives.
        if s.hardmine_version != total.hardmine_version {
            return Err(incompatible(&format!(
                "it was written by hardmine {}, the first by hardmine {}; states merge only within one version (re-run the older shards with this one)",
                s.hardmine_version, total.hardmine_version
            )));
        }
        // The kernel fused or not: values that differ in their last bits.
        if s.fused != total.fused {
            let with = |fused: bool| if fused { "with" } else { "without" };
            return Err(incompatible(&format!(
                "it was computed {} fused multiply-adds (a processor with AVX2 and FMA), the first {}, so their last digits differ; run every shard on processors alike in this",
                with(s.fused),
                with(total.fused)
            )));
        }
        if s.config != total.config {
            return Err(incompatible(
                "the analysis settings differ (strategies, gamma, alpha, thresholds, sweep or columns)",
            ));
        }
        if s.dump.shape != total.dump.shape
            || s.dump.width != total.dump.width
            || s.dump.background_class != total.dump.background_class
        {
            return Err(incompatible("the dumps differ in layout, scores, activation or class count"));
        }
        if let Some(dup) = s.dump.inputs.iter().find(|i| total.dump.inputs.contains(i)) {
            return Err(incompatible(&format!("both include {dup}: each file must be in one shard")));
        }
        // File indices of this shard come after the files already merged.
        let mut pass = s.pass;
        pass.offset_files(total.dump.inputs.len() as u32);
        total.dump.inputs.extend(s.dump.inputs.iter().cloned());
        total.pass.merge(pass).map_err(|r| StateError::SplitImage {
            path: path.clone(),
            first: first_path.clone(),
            image: r.image,
        })?;
    }
    Ok(total)
}
