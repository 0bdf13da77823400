//! Library use, end to end: write a small synthetic dump, read it, analyse it, render it.
//!
//! `cargo run --example analyze`

use hardmine::config::{AnalysisParams, StrategyKind};
use hardmine::input::Dump;
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
        strategies: vec![StrategyKind::Ce, StrategyKind::Focal],
        gamma: 2.0,
        alpha: 0.25,
        ..Default::default()
    }
    .check()?;
    let dump = Dump::open(&[dir.path().display().to_string()], config.dump())?;
    let report = analysis::analyze(&dump, &config)?;

    let focal = report.strategy("focal").expect("requested above");
    println!(
        "focal loss: {:.4} per image and positive; easy negatives carry {:.2}% of it\n",
        focal.loss.normalized,
        100.0 * focal.buckets.easy_negative.loss_share
    );
    print!("{}", render::render_to_string(&report, Format::Table)?);
    Ok(())
}
