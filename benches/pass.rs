//! Criterion benchmarks on seeded synthetic data: the loss kernels per decision, and the whole
//! pass (read + all strategies) against reading alone, at several dump sizes.
//!
//! Run with `cargo bench --bench pass`; see docs/benchmarks.md for the figures and the
//! whole-CLI recipe.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

use hardmine::analysis;
use hardmine::config::{AnalysisParams, StrategyKind, SweepParams};
use hardmine::input::Dump;
use hardmine::loss::Decision;
use hardmine::synth::{self, Rng, SynthConfig};

fn kernels(c: &mut Criterion) {
    let mut rng = Rng::new(1, 1);
    let n = 1 << 16;
    let xs: Vec<f64> = (0..n).map(|_| rng.normal() * 4.0 - 4.0).collect();
    let ys: Vec<f64> = (0..n).map(|i| if i % 100 == 0 { 1.0 } else { 0.0 }).collect();
    let soft: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
    let mut g = c.benchmark_group("kernel");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("from_logit/hard", |b| {
        b.iter(|| xs.iter().zip(&ys).map(|(&x, &y)| Decision::from_logit(x, y).ce).sum::<f64>())
    });
    g.bench_function("from_logit/soft", |b| {
        b.iter(|| xs.iter().zip(&soft).map(|(&x, &y)| Decision::from_logit(x, y).ce).sum::<f64>())
    });
    for gamma in [2.0, 1.5] {
        let ds: Vec<Decision> = xs.iter().zip(&ys).map(|(&x, &y)| Decision::from_logit(x, y)).collect();
        g.bench_with_input(BenchmarkId::new("focal+grad", gamma), &gamma, |b, &gamma| {
            b.iter(|| {
                ds.iter()
                    .map(|d| d.focal(black_box(gamma), Some(0.25)) + d.focal_grad(gamma, Some(0.25)))
                    .sum::<f64>()
            })
        });
    }
    let k = 21;
    let rows: Vec<f64> = (0..n).map(|_| rng.normal() * 3.0).collect();
    g.throughput(Throughput::Elements((n / k) as u64));
    g.bench_function("softmax/K=21", |b| {
        b.iter(|| rows.chunks_exact(k).map(|r| Decision::from_softmax_logits(r, 0, 0.0).ce).sum::<f64>())
    });
    g.finish();
}

fn pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("pass");
    g.sample_size(10);
    let all = AnalysisParams::default().check().unwrap();
    let reweighting = AnalysisParams {
        strategies: vec![StrategyKind::Ce, StrategyKind::AlphaCe, StrategyKind::Focal],
        ..Default::default()
    }
    .check()
    .unwrap();
    for images in [4usize, 16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig { images, anchors_per_image: 20_000, classes: 20, ..Default::default() };
        synth::generate(dir.path(), &cfg).unwrap();
        let dump = Dump::open(&[dir.path().display().to_string()], all.dump()).unwrap();
        let decisions = (images * cfg.anchors_per_image * cfg.classes) as u64;
        g.throughput(Throughput::Elements(decisions));
        g.bench_with_input(BenchmarkId::new("read", decisions), &dump, |b, dump| {
            b.iter(|| {
                dump.units()
                    .par_iter()
                    .map(|&u| dump.read_batches(u).unwrap().iter().map(|b| b.rows).sum::<usize>())
                    .sum::<usize>()
            })
        });
        g.bench_with_input(BenchmarkId::new("analyze_reweighting", decisions), &dump, |b, dump| {
            b.iter(|| analysis::analyze(dump, &reweighting).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("analyze_all", decisions), &dump, |b, dump| {
            b.iter(|| analysis::analyze(dump, &all).unwrap())
        });
    }
    g.finish();
}

/// The compute part alone (decoded batches in memory, every strategy and the sweep) at 1 and
/// 2 threads: the pass's thread scaling without the reader.
fn compute(c: &mut Criterion) {
    let mut g = c.benchmark_group("compute");
    g.sample_size(10);
    let config =
        AnalysisParams { sweep: Some(SweepParams::default()), ..Default::default() }.check().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Row groups of 8192 rows: 40 units, so that two threads get balanced shares (real dumps
    // have hundreds of row groups).
    let cfg = SynthConfig {
        images: 16,
        anchors_per_image: 20_000,
        classes: 20,
        rows_per_group: 8192,
        ..Default::default()
    };
    synth::generate(dir.path(), &cfg).unwrap();
    let dump = Dump::open(&[dir.path().display().to_string()], config.dump()).unwrap();
    let batches: Vec<_> = dump.units().iter().flat_map(|&u| dump.read_batches(u).unwrap()).collect();
    let exp = hardmine::analysis::decisions::Expansion::of(&dump);
    let decisions = (cfg.images * cfg.anchors_per_image * cfg.classes) as u64;
    g.throughput(Throughput::Elements(decisions));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter(|| {
                pool.install(|| {
                    let parts: Vec<analysis::Pass> = batches
                        .par_iter()
                        .map(|batch| {
                            let mut p = analysis::Pass::new(&config, None);
                            p.observe_batch(&exp, batch, config.easy_threshold()).unwrap();
                            p
                        })
                        .collect();
                    let mut total = analysis::Pass::starting(&config, None);
                    for p in parts {
                        total.merge(p).unwrap();
                    }
                    total.finish_selection().unwrap();
                    black_box(total.strategy_reports())
                })
            })
        });
    }
    g.finish();
}

/// The alpha grid is free: 14 alphas must cost the same pass as 4.
fn sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { images: 8, anchors_per_image: 20_000, classes: 20, ..Default::default() };
    synth::generate(dir.path(), &cfg).unwrap();
    let decisions = (cfg.images * cfg.anchors_per_image * cfg.classes) as u64;
    g.throughput(Throughput::Elements(decisions));
    let four = vec![0.25, 0.5, 0.75, -1.0];
    let fourteen: Vec<f64> = four.iter().copied().chain((1..=10).map(|i| f64::from(i) / 11.0)).collect();
    for alphas in [four, fourteen] {
        let config = AnalysisParams {
            strategies: vec![StrategyKind::Focal],
            sweep: Some(SweepParams { alphas: alphas.clone(), ..Default::default() }),
            ..Default::default()
        }
        .check()
        .unwrap();
        let dump = Dump::open(&[dir.path().display().to_string()], config.dump()).unwrap();
        g.bench_with_input(BenchmarkId::new("alphas", alphas.len()), &dump, |b, dump| {
            b.iter(|| {
                let pass = analysis::run(dump, &config, &analysis::Quiet, None).unwrap();
                black_box(pass.finish(dump, &config, "sweep"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, kernels, pass, compute, sweep);
criterion_main!(benches);
