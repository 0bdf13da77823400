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
//! - **Errors** are `hardmine.HardmineError` with the message the CLI prints after `error: `
//!   (including the `fix:` line, also available as the exception's `fix` attribute). A panic
//!   (a bug) becomes a HardmineError too, never an abort of the interpreter.

mod cli;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use hardmine::analysis::Observer;

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

    pub fn analyze(args: cli::analyze::AnalyzeArgs, watch: &Watch) -> anyhow::Result<String> {
        let config = args.params()?.check()?;
        let sink = open_sink(&args.output)?;
        let dump = Dump::open(&args.inputs, config.dump())?;
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

    pub fn sweep(args: cli::sweep::SweepArgs, watch: &Watch) -> anyhow::Result<String> {
        let config = args.config()?;
        let sink = open_sink(&args.output)?;
        let dump = Dump::open(&args.inputs, config.dump())?;
        let report = analysis::run(&dump, &config, watch, None)?.finish(&dump, &config, "sweep");
        if let Some(sink) = sink {
            sink.write(&report, args.output.format())?;
        }
        json(&report)
    }

    pub fn report(
        args: cli::report::ReportArgs,
        watch: &Watch,
        invocation: String,
    ) -> anyhow::Result<String> {
        let config = args.config()?;
        let mut out = AtomicFile::create(&args.out)?;
        let dump = Dump::open(&args.inputs, config.dump())?;
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

    pub fn mine(args: cli::mine::MineArgs, watch: &Watch) -> anyhow::Result<String> {
        let (config, spec) = args.config()?;
        let dump = Dump::open(&args.inputs, &config.dump().for_export())?;
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
/// "dump/"]`) with the CLI's definitions and runs the command; returns the JSON text.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> PyResult<String> {
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
            let quiet = a.run.quiet;
            interruptible(py, quiet, move |w| commands::analyze(a, w))
        }
        Cmd::Sweep(a) => {
            let quiet = a.run.quiet;
            interruptible(py, quiet, move |w| commands::sweep(a, w))
        }
        Cmd::Report(a) => {
            let quiet = a.run.quiet;
            let inv = invocation(&argv);
            interruptible(py, quiet, move |w| commands::report(a, w, inv))
        }
        Cmd::Merge(a) => interruptible(py, true, move |_| commands::merge(a)),
        Cmd::Mine(a) => {
            let quiet = a.run.quiet;
            interruptible(py, quiet, move |w| commands::mine(a, w))
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
