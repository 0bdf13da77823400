//! The library's typed errors.
//!
//! Every message names what the user can act on (the file, the column, the row or the flag) and
//! ends with how to fix it. The binary prints them once, prefixed with `error:`.

use std::path::PathBuf;

/// Any error the library can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting was invalid (bad flag value, unknown strategy, ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The dump could not be found, read or validated.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A result could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A shard state could not be read or merged.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A shard state that cannot be read or merged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a hardmine state.
    #[error("{}: not a hardmine state file ({detail})\n  fix: pass files written by `hardmine analyze --save-state`", path.display())]
    Parse {
        /// The state file.
        path: PathBuf,
        /// What the parser reported.
        detail: String,
    },
    /// Written by a hardmine with another state layout.
    #[error("{}: state version {found}, this hardmine reads version {expected}\n  fix: re-run the shard with this hardmine version", path.display())]
    Version {
        /// The state file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// Two states that cannot be combined.
    #[error("{} cannot be merged with {}: {what}\n  fix: run every shard with the same flags on the same kind of dump", path.display(), first.display())]
    Incompatible {
        /// The later state.
        path: PathBuf,
        /// The first state.
        first: PathBuf,
        /// What differs.
        what: String,
    },
    /// An image's rows were split between shards.
    #[error("image '{image}' is in both {} and {}: ohem, ssd and sampled finalise each image within its shard\n  fix: shard by image (every row of an image in one shard), e.g. one shard per file of a dump written image by image", first.display(), path.display())]
    SplitImage {
        /// The later state.
        path: PathBuf,
        /// The first state.
        first: PathBuf,
        /// The image id.
        image: String,
    },
    /// Nothing to merge.
    #[error("no state files given\n  fix: pass the files written by `hardmine analyze --save-state`")]
    NoStates,
}

/// An invalid setting, caught before any data is read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag has a value outside its valid range.
    #[error("invalid value {value} for {flag}: {reason}")]
    InvalidValue {
        /// The flag, e.g. `--gamma`.
        flag: &'static str,
        /// The value given, as the user typed it.
        value: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::InvalidValue`].
    pub fn invalid(flag: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        ConfigError::InvalidValue { flag, value: value.to_string(), reason: reason.into() }
    }
}

/// A problem with the input dump.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path, glob or directory named on the command line gave no Parquet files.
    #[error("{spec}: {problem}\n  fix: {fix}")]
    NoFiles {
        /// The argument as given.
        spec: String,
        /// What was found instead.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not readable as Parquet (corrupt, truncated, or another format).
    #[error("{}: not a readable Parquet file ({detail})\n  fix: check that the file was completely written (a crashed writer leaves no footer) and is Parquet, not CSV/Arrow IPC/NumPy", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader reported.
        detail: String,
    },
    /// An in-memory Arrow source could not be imported (its producer failed, or handed over
    /// malformed data).
    #[error("{name}: cannot read the Arrow stream ({detail})\n  fix: check that the object's __arrow_c_stream__ yields valid data (pyarrow, polars and DuckDB objects do), or write it to Parquet and pass the file")]
    Arrow {
        /// The source's name.
        name: String,
        /// What the import reported.
        detail: String,
    },
    /// The columns do not form a dump hardmine understands.
    #[error("{}: {problem}\n  fix: {fix}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong with its columns.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A value in the dump is invalid.
    #[error("{}: column '{column}', row {row}: {problem}\n  fix: {fix}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The Parquet column (its name in the file).
        column: String,
        /// The 0-based row within the file.
        row: u64,
        /// What is wrong with the value.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The inputs hold no rows at all.
    #[error("the dump is empty: {files} file(s) with 0 rows in total\n  fix: point hardmine at the files your dumping code wrote (`hardmine generate --out DIR` makes an example)")]
    Empty {
        /// How many files were read.
        files: usize,
    },
    /// Rows of one image are not contiguous, and a per-image strategy needs them together.
    #[error("image '{image}' appears again in {} from row {row}, after rows of other images\n  fix: streaming selection needs each image's rows together: sort the dump by image_id, or use the partitioned mode (`analysis::run` and the CLI switch to it by themselves)", path.display())]
    Unsorted {
        /// The image id.
        image: String,
        /// The file where it reappeared.
        path: PathBuf,
        /// First row of the row group where it reappeared.
        row: u64,
    },
    /// The dump has decisions but not one positive.
    #[error("the dump has {decisions} decisions and not one positive: every loss normalised by positives is undefined\n  fix: check the label mapping of the dumping code (sigmoid: 0..C-1 foreground, -1 background, -2 ignored; softmax: class index, background = --background-class); or pass --allow-no-positives to analyse it anyway")]
    NoPositives {
        /// Valid decisions read.
        decisions: u64,
    },
    /// Images whose anchors are all ignored (label -2).
    #[error("image '{image}' has {anchors} anchors and all are ignored (label -2){more}\n  fix: check the ignore rule of the dumping code (ignored = -2 only for anchors between the IoU thresholds); or pass --keep-ignored-images to count such images with zero loss, as torchvision's mean over images does")]
    IgnoredImage {
        /// The first such image (in image-id order).
        image: String,
        /// Its anchors.
        anchors: u64,
        /// ", and N more such images" or empty.
        more: String,
    },
    /// Two rows with the same `(image_id, anchor_id)`.
    #[error("image '{image}' has {anchor} twice: row {first_row} of {} and row {second_row} of {}\n  fix: dump each image once and give each anchor its own id within the image (a resumed dumping job appending to the same files is the usual cause)", first.display(), second.display())]
    Duplicate {
        /// The image.
        image: String,
        /// "anchor_id N" (and the class in binary dumps).
        anchor: String,
        /// File of the first row.
        first: PathBuf,
        /// Its row.
        first_row: u64,
        /// File of the repeat.
        second: PathBuf,
        /// Its row.
        second_row: u64,
    },
    /// An image with more rows than distinct anchor ids: some `(image_id, anchor_id)` repeats.
    #[error("image '{image}' has {rows} rows but only {ids} distinct anchor ids fit between its smallest and largest: some (image_id, anchor_id) pairs repeat, so the image was probably dumped twice\n  fix: dump each image once and give each anchor its own id within the image")]
    Overfull {
        /// The image.
        image: String,
        /// Its rows (with an anchor id).
        rows: u64,
        /// The ids its span can hold.
        ids: u64,
    },
    /// The run was interrupted before it finished.
    #[error("interrupted before the pass finished; no output was written")]
    Interrupted,
}

/// A result could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Writing or renaming the output file failed.
    #[error("cannot write {}: {source}\n  fix: check that the directory exists and is writable, or choose another path", path.display())]
    Io {
        /// The destination file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing to a stream (stdout) failed.
    #[error("cannot write output: {0}")]
    Stream(#[source] std::io::Error),
    /// The JSON serialiser failed.
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
    /// The Parquet writer failed.
    #[error("cannot write Parquet {}: {detail}", path.display())]
    Parquet {
        /// The destination file.
        path: PathBuf,
        /// What the writer reported.
        detail: String,
    },
}

/// Short alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
