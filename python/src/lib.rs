//! `hardmine._native`: the Rust side of the Python bindings (`hardmine.analyze`, `sweep`,
//! `report`, `mine`, `merge`; the user-facing functions and their docstrings are in
//! python/hardmine/_bindings.py).
//!
//! Design:
//! - **Settings are parsed by the CLI's own clap definitions.** Python turns the keyword
//!   arguments into the CLI's argument list (`gamma=1.5` → `--gamma=1.5`) and [`run`] parses it
//!   with the binary's `AnalyzeArgs`, `SweepArgs`, ... (compiled in from src/cli, see cli.rs).
//!   Names, defaults, accepted values and error messages therefore cannot drift from the CLI;
//!   a typo'd keyword is clap's "unexpected argument '--gamm'" error, as on the command line.
//! - **The commands share the CLI's steps.** The CLI's `run` functions print the report to
//!   stdout and install a process-wide Ctrl-C handler, so they are not called; the functions in
//!   [`commands`] call the same per-command pieces of src/cli (`config()` of each command's
//!   arguments, `ReportArgs::render`, `MergeArgs::merged`) and the same library calls, but
//!   return the JSON text (rendered by the same renderer as `--format json`) and take an
//!   observer that Python can cancel. The tests compare the results with the binary's output
//!   byte for byte.
//! - **The pass runs on a worker thread with the GIL released.** The calling thread waits in
//!   slices of 50 ms; between slices it takes the GIL and calls `PyErr_CheckSignals`, which runs
//!   Python's SIGINT handler on the main thread (signal handlers only run there). On
//!   KeyboardInterrupt the observer's flag stops the pass at the next row group, the worker is
//!   joined, and the KeyboardInterrupt is raised: no hang, no half-written output.
//! - **Arrow sources are read in place.** Python passes the producers (objects with
//!   `__arrow_c_stream__`) beside the argument list, keyed by their position among the inputs,
//!   whose text there is the name the source goes by (`<pyarrow.lib.Table #0>`). [`run`] takes
//!   each producer's C stream out of its PyCapsule (with the GIL); the worker drains it into
//!   `hardmine::input::ArrowSource`s (the record batches reference the producer's buffers: no
//!   copy) and opens the dump over files and sources alike.
//! - **Errors** are `hardmine.HardmineError` with the message the CLI prints after `error: `
//!   (including the `fix:` line, also available as the exception's `fix` attribute). A panic
//!   (a bug) becomes a HardmineError too, never an abort of the interpreter.

mod cli;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use clap::{CommandFactory, Parser, Subcommand};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use hardmine::analysis::Observer;
use hardmine::input::{ArrowSource, Input};

// As in the binary (src/main.rs): decoding allocates and frees large buffers, which mimalloc
// keeps instead of returning them to the kernel each time. It serves only the Rust side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(
    _native,
    HardmineError,
    PyException,
    "An error hardmine reports: the message is what the CLI prints after `error: `, ending \
     with a `fix:` line when there is one (also in the `fix` attribute)."
);

/// The subcommands the bindings expose, with the binary's argument structs.
#[derive(Debug, Parser)]
#[command(name = "hardmine", max_term_width = 100)]
struct PyCli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Compare CE, alpha-CE, focal loss, OHEM, SSD mining, sampling and GHM bucket by bucket.
    Analyze(cli::analyze::AnalyzeArgs),
    /// Write the full analysis as a self-contained HTML page (or Markdown) with charts.
    Report(cli::report::ReportArgs),
    /// Sweep gamma x alpha: loss shares, CDFs, balanced alphas and a recommendation.
    Sweep(cli::sweep::SweepArgs),
    /// Merge shard states (`analyze --save-state`) into one report.
    Merge(cli::merge::MergeArgs),
    /// Export the hard examples a strategy selects to Parquet.
    Mine(cli::mine::MineArgs),
}

/// The observer of a pass started from Python: cancelled by the waiting thread on Ctrl-C.
struct Watch {
    cancel: AtomicBool,
    quiet: bool,
}

impl Observer for Watch {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn restarted(&self, why: &str) {
        if !self.quiet {
            eprintln!("note: {why}");
        }
    }
}

/// One input of a command: a path as given, or the C stream of an Arrow producer, with the
/// name it goes by.
enum Source {
    Path(String),
    Stream(String, FFI_ArrowArrayStream),
}

/// The command's inputs, with the streams of the producers in `arrow` (position among the
/// inputs, producer) taken out of their capsules.
fn sources(
    py: Python<'_>,
    inputs: &[String],
    arrow: Vec<(usize, Bound<'_, PyAny>)>,
) -> PyResult<Vec<Source>> {
    let mut out: Vec<Source> = inputs.iter().cloned().map(Source::Path).collect();
    for (i, producer) in arrow {
        let Some(Source::Path(name)) = out.get(i) else {
            return Err(hardmine_error(
                py,
                format!("internal error: no input at position {i} for an Arrow source"),
            ));
        };
        let name = name.clone();
        let refused = |why: &str| {
            hardmine_error(
                py,
                format!(
                    "{name}: {why}\n  fix: pass an object whose __arrow_c_stream__() returns an \
                     'arrow_array_stream' PyCapsule (pyarrow Table/RecordBatchReader, polars DataFrame, \
                     DuckDB relation), or a path"
                ),
            )
        };
        let capsule = producer.call_method0("__arrow_c_stream__")?;
        let capsule = capsule
            .downcast::<PyCapsule>()
            .map_err(|_| refused("__arrow_c_stream__() did not return a PyCapsule"))?;
        if capsule.name()? != Some(c"arrow_array_stream") {
            return Err(refused("__arrow_c_stream__() returned a capsule not named 'arrow_array_stream'"));
        }
        // SAFETY: a capsule named "arrow_array_stream" holds an ArrowArrayStream (the Arrow
        // PyCapsule interface); `from_raw` moves it out and marks the capsule's copy released,
        // so the capsule's destructor leaves the stream to us.
        let stream = unsafe { FFI_ArrowArrayStream::from_raw(capsule.pointer().cast()) };
        out[i] = Source::Stream(name, stream);
    }
    Ok(out)
}

/// The inputs of the dump: each stream drained into an in-memory source (the batches stay the
/// producer's buffers); `watch` stops the import between batches.
fn import(sources: Vec<Source>, watch: &Watch) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::with_capacity(sources.len());
    for s in sources {
        inputs.push(match s {
            Source::Path(p) => Input::Path(p),
            Source::Stream(name, stream) => {
                Input::Arrow(ArrowSource::from_stream(name, stream, &|| watch.cancelled())?)
            }
        });
    }
    Ok(inputs)
}

/// The commands, step by step as in src/cli/<command>.rs, returning JSON text.
mod commands {
    use super::*;
    use hardmine::analysis;
    use hardmine::input::Dump;
    use hardmine::output::AtomicFile;
    use hardmine::render::{self, Format};
    use hardmine::report::Report;
    use hardmine::state::State;

    use crate::cli::common::{OutputArgs, Sink};

    fn json(report: &Report) -> anyhow::Result<String> {
        Ok(render::render_to_string(report, Format::Json)?)
    }

    /// `--output FILE` writes the report as the CLI would; without it nothing is printed.
    fn open_sink(output: &OutputArgs) -> anyhow::Result<Option<Sink>> {
        Ok(match output.output {
            Some(_) => Some(output.open()?),
            None => None,
        })
    }

    pub fn analyze(
        args: cli::analyze::AnalyzeArgs,
        sources: Vec<Source>,
        watch: &Watch,
    ) -> anyhow::Result<String> {
        let config = args.params()?.check()?;
        let sink = open_sink(&args.output)?;
        let dump = Dump::open_inputs(import(sources, watch)?, config.dump())?;
        let pass = analysis::run(&dump, &config, watch, None)?;
        let report = pass.finish(&dump, &config, "analyze");
        if let Some(path) = &args.save_state {
            State::new(&config, dump.info(), pass).write(path)?;
        }
        if let Some(sink) = sink {
            sink.write(&report, args.output.format())?;
        }
        json(&report)
    }

    pub fn sweep(args: cli::sweep::SweepArgs, sources: Vec<Source>, watch: &Watch) -> anyhow::Result<String> {
        let config = args.config()?;
        let sink = open_sink(&args.output)?;
        let dump = Dump::open_inputs(import(sources, watch)?, config.dump())?;
        let report = analysis::run(&dump, &config, watch, None)?.finish(&dump, &config, "sweep");
        if let Some(sink) = sink {
            sink.write(&report, args.output.format())?;
        }
        json(&report)
    }

    pub fn report(
        args: cli::report::ReportArgs,
        sources: Vec<Source>,
        watch: &Watch,
        invocation: String,
    ) -> anyhow::Result<String> {
        let config = args.config()?;
        let mut out = AtomicFile::create(&args.out)?;
        let dump = Dump::open_inputs(import(sources, watch)?, config.dump())?;
        let mut report = analysis::run(&dump, &config, watch, None)?.finish(&dump, &config, "report");
        report.metadata.invocation = Some(invocation);
        args.render(&report, &mut out)?;
        out.commit()?;
        json(&report)
    }

    pub fn merge(args: cli::merge::MergeArgs) -> anyhow::Result<String> {
        let sink = open_sink(&args.output)?;
        let report = args.merged()?;
        if let Some(sink) = sink {
            sink.write(&report, args.output.format())?;
        }
        json(&report)
    }

    pub fn mine(args: cli::mine::MineArgs, sources: Vec<Source>, watch: &Watch) -> anyhow::Result<String> {
        let (config, spec) = args.config()?;
        let dump = Dump::open_inputs(import(sources, watch)?, &config.dump().for_export())?;
        let summary = hardmine::mine::mine(&dump, &config, spec, &args.out, watch)?;
        // What the CLI says on stderr ("mined N rows (ohem) from M images into FILE"), as JSON.
        Ok(format!(
            "{{\"rows\": {}, \"images\": {}, \"strategy\": \"{}\", \"out\": {}}}",
            summary.rows,
            summary.images,
            spec.strategy.name(),
            json_string(&args.out.display().to_string())
        ))
    }

    fn json_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
}

/// The argument list quoted for a POSIX shell, as `hardmine report` records its command line.
fn invocation(argv: &[String]) -> String {
    std::iter::once("hardmine")
        .chain(argv.iter().map(String::as_str))
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c)) {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A HardmineError with `message`, its `fix` attribute set from the message's `fix:` line.
fn hardmine_error(py: Python<'_>, message: String) -> PyErr {
    let fix = message.lines().find_map(|l| l.trim_start().strip_prefix("fix: ")).map(str::to_string);
    let err = HardmineError::new_err(message);
    let _ = err.value(py).setattr("fix", fix);
    err
}

/// Runs `work` on a worker thread with the GIL released, polling Python's signal handlers
/// every 50 ms on the calling thread; an exception they raise (KeyboardInterrupt) cancels the
/// pass and is raised once the worker has stopped.
fn interruptible<T: Send>(
    py: Python<'_>,
    quiet: bool,
    work: impl FnOnce(&Watch) -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    let watch = Watch { cancel: AtomicBool::new(false), quiet };
    let (result, signal) = std::thread::scope(|s| {
        let (tx, mut rx) = mpsc::channel::<()>();
        let watch = &watch;
        let worker = s.spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(watch)));
            let _ = tx.send(());
            r
        });
        let mut signal: Option<PyErr> = None;
        loop {
            let (done, back) = py.allow_threads(move || {
                let d = rx.recv_timeout(Duration::from_millis(50));
                (d, rx)
            });
            rx = back;
            if !matches!(done, Err(mpsc::RecvTimeoutError::Timeout)) {
                break;
            }
            if signal.is_none() {
                if let Err(e) = py.check_signals() {
                    watch.cancel.store(true, Ordering::Relaxed);
                    signal = Some(e);
                }
            }
        }
        (py.allow_threads(move || worker.join()), signal)
    });
    if let Some(e) = signal {
        return Err(e);
    }
    match result {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(hardmine_error(py, format!("{e:#}"))),
        Ok(Err(panic)) | Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(hardmine_error(py, format!("internal error (a bug in hardmine, please report it): {what}")))
        }
    }
}

/// Parses `argv` (the CLI's arguments after `hardmine`, e.g. `["analyze", "--gamma=1", "--",
/// "dump/"]`) with the CLI's definitions and runs the command; returns the JSON text. `arrow`
/// lists the Arrow stream producers among the inputs, as (position among the inputs,
/// producer); the input's text at that position is the source's name.
#[pyfunction]
#[pyo3(signature = (argv, arrow = Vec::new()))]
fn run(py: Python<'_>, argv: Vec<String>, arrow: Vec<(usize, Bound<'_, PyAny>)>) -> PyResult<String> {
    let cli = match PyCli::try_parse_from(std::iter::once("hardmine".to_string()).chain(argv.iter().cloned()))
    {
        Ok(c) => c,
        Err(e) => {
            // clap's own rendering, as the binary prints it, without the leading "error: ".
            let text = e.render().to_string();
            let text = text.trim_end();
            let text = text.strip_prefix("error: ").unwrap_or(text);
            return Err(hardmine_error(py, text.to_string()));
        }
    };
    match cli.command {
        Cmd::Analyze(a) => {
            let (quiet, s) = (a.run.quiet, sources(py, &a.inputs, arrow)?);
            interruptible(py, quiet, move |w| commands::analyze(a, s, w))
        }
        Cmd::Sweep(a) => {
            let (quiet, s) = (a.run.quiet, sources(py, &a.inputs, arrow)?);
            interruptible(py, quiet, move |w| commands::sweep(a, s, w))
        }
        Cmd::Report(a) => {
            let (quiet, s) = (a.analysis.run.quiet, sources(py, &a.inputs, arrow)?);
            let inv = invocation(&argv);
            interruptible(py, quiet, move |w| commands::report(a, s, w, inv))
        }
        Cmd::Merge(a) => {
            sources(py, &[], arrow)?;
            interruptible(py, true, move |_| commands::merge(a))
        }
        Cmd::Mine(a) => {
            let (quiet, s) = (a.run.quiet, sources(py, &a.inputs, arrow)?);
            interruptible(py, quiet, move |w| commands::mine(a, s, w))
        }
    }
}

/// The long options (without `--`) the CLI's `command` takes, in definition order; the tests
/// check that every one is documented in the Python function's docstring.
#[pyfunction]
fn options(command: &str) -> PyResult<Vec<String>> {
    let cmd = PyCli::command();
    let sub = cmd
        .find_subcommand(command)
        .ok_or_else(|| pyo3::exceptions::PyValueError::new_err(format!("no command {command}")))?;
    Ok(sub.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect())
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // As the binary does: the Parquet decoder's panics on corrupt files become errors naming the
    // file, so the default hook need not print them. Every other panic still prints.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !hardmine::input::in_reader_call() {
                previous(info);
            }
        }));
    });
    m.add("HardmineError", m.py().get_type::<HardmineError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(options, m)?)?;
    Ok(())
}
