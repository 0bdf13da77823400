//! An in-tree fuzz harness (no nightly toolchain or cargo-fuzz needed).
//!
//! Three targets:
//! - **parquet**: seed dumps (pyarrow- and polars-written) mutated at the byte level, biased
//!   towards the footer where Parquet keeps its metadata, then opened and analysed with every
//!   strategy, the sweep and the breakdowns, in-process under `catch_unwind`. A case passes when
//!   it gives a report or a typed error; a panic fails it.
//! - **config**: analysis settings drawn from edge values (NaN, inf, -0, 0, huge) through
//!   `AnalysisParams::check`; accepted settings are then run on a small dump.
//! - **argv**: command lines built from hardmine's flags and edge values, run through the real
//!   binary; a case passes when it exits 0, 1 or 2 without a panic, and every failure prints
//!   one `error:` message.
//!
//! A slow case (over [`SLOW`]) is a failure too. Failing inputs are saved for reproduction.
//! Used by the suite's short smoke test (`tests/fuzz.rs`) and by `examples/fuzz.rs` for long
//! runs (`cargo run --release --example fuzz -- --minutes 10`).

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hardmine::analysis;
use hardmine::config::{AnalysisParams, DumpParams, OnInvalid, StrategyKind, SweepParams};
use hardmine::input::Dump;

/// A case slower than this fails.
pub const SLOW: Duration = Duration::from_secs(30);

/// What a fuzzing run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Cases run.
    pub cases: u64,
    /// Cases that gave a result.
    pub ok: u64,
    /// Cases that gave a typed error, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Failures: what happened and where the input was saved.
    pub failures: Vec<String>,
}

impl Outcome {
    /// A one-paragraph summary.
    pub fn summary(&self, name: &str) -> String {
        let errors: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "{name}: {} cases, {} ok, {} errors ({}), {} failures",
            self.cases,
            self.ok,
            self.errors.values().sum::<u64>(),
            errors.join(", "),
            self.failures.len()
        )
    }
}

/// When to stop: after `cases`, or at `until`, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub cases: u64,
    pub until: Option<Instant>,
}

impl Budget {
    fn done(&self, o: &Outcome) -> bool {
        o.cases >= self.cases || self.until.is_some_and(|t| Instant::now() >= t)
    }
}

/// xorshift64*: the harness's own generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// The panic message of a caught panic.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// The kind of a library error: its variant path, e.g. `Input(Parquet`.
fn kind(e: &hardmine::Error) -> String {
    let d = format!("{e:?}");
    let end = d.find([' ', '{']).unwrap_or(d.len()).min(40);
    d[..end].trim_end_matches('(').to_string()
}

thread_local! {
    /// Set while this thread runs a fuzz case under [`guarded`]: its panics are not printed.
    static SILENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with panics caught; `Err(message)` for a panic. A panic on this thread is not
/// printed (the case reports it); the global panic hook is installed once and never swapped, so
/// tests running in parallel keep their panic messages (swapping it per call raced: two callers
/// could leave the silent hook installed for everyone).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !SILENT.with(|s| s.get()) {
                previous(info);
            }
        }));
    });
    SILENT.with(|s| s.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    SILENT.with(|s| s.set(false));
    r.map_err(panic_text)
}

/// Byte-level mutations of a Parquet file: bit flips, interesting bytes and integers, cuts,
/// repeats and deletions; half of them land in the last 15% (the footer and its length).
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let footer = b.len() - (b.len() * 15 / 100).max(1);
        let at = if rng.chance(0.5) { footer + rng.below(b.len() - footer) } else { rng.below(b.len()) };
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff, 0x15, 0x19, 0x1c]),
            2 => {
                let v: i64 = *rng.pick(&[
                    0,
                    1,
                    -1,
                    2,
                    255,
                    65_535,
                    i32::MAX as i64,
                    i32::MIN as i64,
                    i64::MAX,
                    1 << 40,
                ]);
                let width = *rng.pick(&[1usize, 2, 4, 8]);
                for (k, byte) in v.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = *byte;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let len = 1 + rng.below(64.min(b.len() - at));
                let chunk: Vec<u8> = b[at..at + len].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
            5 => {
                let len = 1 + rng.below(64.min(b.len() - at));
                b.drain(at..at + len);
            }
            _ => {
                // Keep the magic bytes but scramble the footer length.
                let n = b.len();
                if n >= 8 {
                    let v = (rng.next() as u32) >> rng.below(32);
                    b[n - 8..n - 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    b
}

/// The settings every Parquet case runs with: every strategy, the sweep and the breakdowns.
fn everything(on_invalid: OnInvalid) -> hardmine::config::AnalysisConfig {
    AnalysisParams {
        dump: DumpParams {
            on_invalid,
            allow_no_positives: true,
            keep_ignored_images: true,
            ..Default::default()
        },
        strategies: StrategyKind::ALL.to_vec(),
        sweep: Some(SweepParams::default()),
        threads: Some(2),
        ..Default::default()
    }
    .check()
    .expect("valid settings")
}

/// Opens and analyses `path`; `Ok(None)` for a report, `Ok(Some(kind))` for a typed error.
fn analyse(path: &Path, on_invalid: OnInvalid) -> Result<Option<String>, String> {
    guarded(|| {
        let config = everything(on_invalid);
        let inputs = [path.display().to_string()];
        let dump = match Dump::open(&inputs, config.dump()) {
            Ok(d) => d,
            Err(e) => return Some(kind(&e.into())),
        };
        match analysis::analyze(&dump, &config) {
            Ok(report) => {
                // The report must serialise (finite numbers only).
                serde_json::to_string(&report).err().map(|e| format!("serialise: {e}"))
            }
            Err(e) => Some(kind(&e)),
        }
    })
}

/// Records a failing input under `save` and describes it.
fn save_failure(save: &Path, name: &str, bytes: &[u8], what: &str) -> String {
    let _ = std::fs::create_dir_all(save);
    let path = save.join(name);
    let _ = std::fs::write(&path, bytes);
    format!("{what} (input saved to {})", path.display())
}

/// Fuzzes the Parquet reader with mutations of `seeds`.
pub fn parquet(seeds: &[Vec<u8>], budget: Budget, seed: u64, work: &Path, save: &Path) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let file = work.join("case.parquet");
    let keep_current = std::env::var_os("FUZZ_KEEP_CURRENT").map(PathBuf::from);
    while !budget.done(&out) {
        let seed_bytes = rng.pick(seeds).clone();
        let bytes = mutate(&mut rng, &seed_bytes);
        std::fs::write(&file, &bytes).expect("write case");
        if let Some(keep) = &keep_current {
            // Kept before running: a case that aborts the process is still there to inspect.
            std::fs::write(keep, &bytes).expect("keep case");
        }
        let policy = if rng.chance(0.3) { OnInvalid::Skip } else { OnInvalid::Error };
        let start = Instant::now();
        let r = analyse(&file, policy);
        out.cases += 1;
        let name = format!("parquet-{seed}-{}.parquet", out.cases);
        match r {
            Ok(None) => out.ok += 1,
            Ok(Some(k)) if k.starts_with("serialise") => {
                out.failures.push(save_failure(save, &name, &bytes, &k))
            }
            Ok(Some(k)) => *out.errors.entry(k).or_default() += 1,
            Err(msg) => out.failures.push(save_failure(save, &name, &bytes, &format!("panic: {msg}"))),
        }
        if start.elapsed() > SLOW {
            out.failures.push(save_failure(save, &name, &bytes, &format!("slow: {:?}", start.elapsed())));
        }
    }
    out
}

/// Edge values for numeric settings.
const FLOATS: [f64; 14] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -0.0,
    0.0,
    1e-300,
    0.25,
    0.5,
    0.9,
    1.0,
    1.0000001,
    2.0,
    -1.0,
    1e308,
];
const SIZES: [usize; 8] = [0, 1, 2, 3, 128, 100_000, 1_000_001, usize::MAX];

/// Fuzzes the settings checks; accepted settings run on the dump at `dump`.
pub fn config(budget: Budget, seed: u64, dump: &Path) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let inputs = [dump.display().to_string()];
    while !budget.done(&out) {
        let mut p = AnalysisParams::default();
        let mut sweep = SweepParams::default();
        let f = |rng: &mut Rng| *rng.pick(&FLOATS);
        let z = |rng: &mut Rng| *rng.pick(&SIZES);
        for _ in 0..1 + rng.below(4) {
            match rng.below(14) {
                0 => p.gamma = f(&mut rng),
                1 => p.alpha = f(&mut rng),
                2 => p.easy_threshold = f(&mut rng),
                3 => p.ohem.k = z(&mut rng),
                4 => p.ohem.nms = Some(f(&mut rng)),
                5 => p.ohem.pos_fraction = Some(f(&mut rng)),
                6 => p.ssd.neg_pos_ratio = z(&mut rng),
                7 => p.sampled.batch_size_per_image = z(&mut rng),
                8 => p.sampled.positive_fraction = f(&mut rng),
                9 => p.sampled.draws = z(&mut rng),
                10 => p.ghm.bins = z(&mut rng),
                11 => sweep.gammas = (0..rng.below(4)).map(|_| f(&mut rng)).collect(),
                12 => sweep.alphas = (0..rng.below(4)).map(|_| f(&mut rng)).collect(),
                _ => sweep.target_easy_share = f(&mut rng),
            }
        }
        p.sweep = Some(sweep);
        p.threads = Some(1 + rng.below(2));
        p.dump.keep_ignored_images = true;
        p.dump.allow_no_positives = true;
        let described = format!("{p:?}");
        let start = Instant::now();
        let r = guarded(|| match p.check() {
            Err(e) => Some(kind(&e.into())),
            Ok(config) => match Dump::open(&inputs, config.dump()).map_err(hardmine::Error::from) {
                Err(e) => Some(kind(&e)),
                Ok(dump) => match analysis::analyze(&dump, &config) {
                    Ok(report) => serde_json::to_string(&report).err().map(|e| format!("serialise: {e}")),
                    Err(e) => Some(kind(&e)),
                },
            },
        });
        out.cases += 1;
        match r {
            Ok(None) => out.ok += 1,
            Ok(Some(k)) if k.starts_with("serialise") => out.failures.push(format!("{k}: {described}")),
            Ok(Some(k)) => *out.errors.entry(k).or_default() += 1,
            Err(msg) => out.failures.push(format!("panic: {msg}: {described}")),
        }
        if start.elapsed() > SLOW {
            out.failures.push(format!("slow ({:?}): {described}", start.elapsed()));
        }
    }
    out
}

/// Flags with the values they take (`None` for switches).
const FLAGS: &[(&str, &[&str])] = &[
    ("--gamma", &["2", "-1", "nan", "inf", "1e400", "x", ""]),
    ("--alpha", &["0.25", "-1", "2", "nan", "-0"]),
    ("--easy-threshold", &["0.9", "0", "1", "1.5", "nan"]),
    ("--strategies", &["ce", "ce,focal", "all", "ohem,ohem", "", ",", "ce,,focal", "nope"]),
    ("--threads", &["1", "2", "0", "-1", "99999999999999999999"]),
    ("--ohem-k", &["1", "0", "18446744073709551615", "-3"]),
    ("--ohem-nms", &["0.5", "0", "1", "2", "nan"]),
    ("--ohem-pos-fraction", &["0.25", "-1", "1.1"]),
    ("--neg-pos-ratio", &["3", "0", "4294967296"]),
    ("--batch-size-per-image", &["256", "0", "18446744073709551615"]),
    ("--positive-fraction", &["0.5", "1.5", "-0.5", "nan"]),
    ("--draws", &["0", "10", "100001"]),
    ("--ghm-bins", &["10", "0", "10001"]),
    ("--on-invalid", &["skip", "error", "drop"]),
    ("--activation", &["sigmoid", "softmax", "relu"]),
    ("--layout", &["dense", "binary", "sparse"]),
    ("--scores", &["logits", "probs", "both"]),
    ("--background-class", &["0", "3", "-1", "65536"]),
    ("--col", &["label=label", "label=", "=x", "nope=x", "label"]),
    ("--format", &["json", "text", "markdown", "html", "xml"]),
    ("--gammas", &["0,1,2", "", "-1", "nan", "1,,2"]),
    ("--alphas", &["0.25,-1", "2", ""]),
    ("--easy-thresholds", &["0.9", "0", "1"]),
    ("--seed", &["0", "-1", "18446744073709551616"]),
    ("--top", &["1", "0", "-1"]),
    ("--output", &["out.json", "", "no/such/dir/x.json", "."]),
    ("--out", &["o.parquet", "o.html", "", "no/such/dir/o", "."]),
    ("--quiet", &[]),
    ("--allow-no-positives", &[]),
    ("--keep-ignored-images", &[]),
    ("--bogus", &[]),
];

/// Fuzzes command lines through the binary `bin`, run in `work` with the dump `dump`.
pub fn argv(bin: &Path, budget: Budget, seed: u64, work: &Path, dump: &Path, save: &Path) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let inputs =
        [dump.display().to_string(), "missing.parquet".into(), "corrupt.parquet".into(), "*.nothing".into()];
    std::fs::write(work.join("corrupt.parquet"), b"PAR1 not really PAR1").expect("write corrupt");
    // Each command's own flags, read off its --help (plus the odd foreign or unknown flag).
    let commands = ["analyze", "sweep", "report", "mine", "merge"];
    let own: Vec<Vec<(&str, &[&str])>> = commands
        .iter()
        .map(|c| {
            let help = Command::new(bin).args([c, "--help"]).output().map(|o| o.stdout).unwrap_or_default();
            let help = String::from_utf8_lossy(&help).into_owned();
            FLAGS
                .iter()
                .copied()
                .filter(|(f, _)| help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")))
                .collect()
        })
        .collect();
    while !budget.done(&out) {
        let i = if rng.chance(0.03) { commands.len() } else { rng.below(commands.len()) };
        let mut args: Vec<String> = vec![commands.get(i).copied().unwrap_or("nope").into()];
        if !rng.chance(0.05) {
            args.push(rng.pick(&inputs).clone());
        }
        // The required --out of report and mine (and mine's --strategy), mostly.
        match args[0].as_str() {
            "report" if !rng.chance(0.05) => args.extend(["--out".into(), "r.html".into()]),
            "mine" if !rng.chance(0.05) => {
                let strategy = *rng.pick(&["ohem", "ssd", "sampled", "focal"]);
                args.extend(["--out".into(), "m.parquet".into(), "--strategy".into(), strategy.into()]);
            }
            _ => {}
        }
        let flags = own.get(i).filter(|f| !f.is_empty()).map(Vec::as_slice).unwrap_or(FLAGS);
        for _ in 0..rng.below(6) {
            let (flag, values) = if rng.chance(0.05) { *rng.pick(FLAGS) } else { *rng.pick(flags) };
            // A repeated flag is refused by clap before anything else runs: mostly avoid it.
            if args.iter().any(|a| a == flag) && !rng.chance(0.05) {
                continue;
            }
            args.push(flag.into());
            // Mostly the first (valid) value, so that runs get past the first bad flag.
            if !values.is_empty() && !rng.chance(0.05) {
                let v = if rng.chance(0.6) { values[0] } else { *rng.pick(values) };
                args.push(v.into());
            }
        }
        let start = Instant::now();
        let child = Command::new(bin)
            .args(&args)
            .current_dir(work)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            out.failures.push(format!("cannot run {}", bin.display()));
            break;
        };
        // Poll with a deadline: a hung command is a failure.
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() > SLOW => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        out.cases += 1;
        let line = args.join(" ");
        let failure = match status {
            None => Some(format!("slow or lost: {line}")),
            Some(s) if stderr.contains("panicked") => Some(format!("panic ({s}): {line}\n{stderr}")),
            Some(s) => match s.code() {
                Some(0) => {
                    out.ok += 1;
                    None
                }
                Some(c @ (1 | 2)) if stderr.starts_with("error:") => {
                    let first = stderr.lines().next().unwrap_or("");
                    let k = first.split(':').nth(1).unwrap_or("").trim().split(' ').next().unwrap_or("");
                    *out.errors.entry(format!("exit {c}: {k}")).or_default() += 1;
                    None
                }
                other => Some(format!("exit {other:?} without one error: message: {line}\n{stderr}")),
            },
        };
        if let Some(f) = failure {
            let _ = std::fs::create_dir_all(save);
            let _ = std::fs::write(save.join(format!("argv-{seed}-{}.txt", out.cases)), &f);
            out.failures.push(f);
        }
    }
    out
}

/// The seed corpus: the committed pyarrow fixtures and a small dump written by hardmine itself
/// (polars writer, snappy, with anchor ids, levels, IoU and boxes), in `work`.
pub fn seeds(work: &Path) -> (Vec<Vec<u8>>, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seeds: Vec<Vec<u8>> =
        ["pyarrow_dense.parquet", "pyarrow_dense_list.parquet", "pyarrow_binary.parquet"]
            .iter()
            .map(|f| std::fs::read(fixtures.join(f)).expect("committed fixture"))
            .collect();
    let dir = work.join("seed-dump");
    let cfg = hardmine::synth::SynthConfig {
        images: 4,
        anchors_per_image: 60,
        classes: 3,
        seed: 1,
        images_per_file: 4,
        rows_per_group: 50,
        ..Default::default()
    };
    hardmine::synth::generate(&dir, &cfg).expect("generate the seed dump");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("seed dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let first = files.first().expect("a seed file").clone();
    seeds.extend(files.iter().map(|f| std::fs::read(f).expect("seed file")));
    (seeds, first)
}
