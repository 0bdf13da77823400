//! Library use, end to end: write a small synthetic dump, read it, analyse it (strategies, sweep,
//! breakdowns), print the terminal table and write the HTML report.
//!
//! `cargo run --example analyze`

use hardmine::config::{AnalysisParams, StrategyKind, SweepParams};
use hardmine::input::Dump;
use hardmine::output::write_atomic;
use hardmine::render::{self, Format};
use hardmine::synth::{self, SynthConfig};
use hardmine::{analysis, Error};

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    synth::generate(
        dir.path(),
        &SynthConfig { images: 4, anchors_per_image: 10_000, classes: 5, ..Default::default() },
    )?;

    // Raw parameters are validated once into a config the library trusts.
    let config = AnalysisParams {
        strategies: vec![StrategyKind::Ce, StrategyKind::Focal, StrategyKind::Ohem],
        gamma: 2.0,
        alpha: 0.25,
        sweep: Some(SweepParams { gammas: vec![0.0, 1.0, 2.0], ..Default::default() }),
        ..Default::default()
    }
    .check()?;
    let dump = Dump::open(&[dir.path().display().to_string()], config.dump())?;
    let pass = analysis::run(&dump, &config, &analysis::Quiet, None)?;
    let report = pass.finish(&dump, &config, "example");

    let focal = report.strategy("focal").expect("requested above");
    println!(
        "focal loss: {:.4} per image and positive; easy negatives carry {:.2}% of it",
        focal.loss.normalized,
        100.0 * focal.buckets.easy_negative.loss_share
    );
    if let Some(sweep) = &report.sweep {
        println!(
            "recommended: gamma {}, alpha {:.3}\n",
            sweep.recommendation.gamma, sweep.recommendation.alpha
        );
    }
    print!("{}", render::render_to_string(&report, Format::Table)?);

    let html = render::render_to_string(&report, Format::Html)?;
    let path = std::env::temp_dir().join("hardmine-example-report.html");
    write_atomic(&path, html.as_bytes())?;
    println!("\nwrote {}", path.display());
    Ok(())
}
