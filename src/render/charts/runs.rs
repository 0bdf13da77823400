//! Charts of several runs: line charts over a trend's groups and paired bars of a comparison.
//! Like every chart, a function of the report alone.

use plotters::prelude::*;

use super::{side_legend, svg, Chart, Result, FONT, H, SERIES, W};
use crate::compare::CompareReport;
use crate::render::content::runs::{easy_negative_share, recommended_gamma};
use crate::trend::{Summary, TrendReport};

/// One line: its label and a value per group (None: no value there).
type Line = (String, Vec<Option<f64>>);

/// The x positions of the groups: their values when every one is an integer (so that uneven
/// steps stay uneven), else their index, labelled by name.
fn axis(t: &TrendReport) -> (Vec<f64>, Vec<String>, bool) {
    let labels: Vec<String> = t.groups.iter().map(|g| g.label()).collect();
    let ints: Option<Vec<f64>> = t.groups.iter().map(|g| g.value.as_i64().map(|i| i as f64)).collect();
    match ints {
        Some(x) if t.metadata.by != "path" => (x, labels, true),
        _ => ((0..labels.len()).map(|i| i as f64).collect(), labels, false),
    }
}

/// A line chart over the groups; `reference` draws a dashed horizontal line.
fn lines(
    t: &TrendReport,
    series: &[Line],
    y_desc: &str,
    y_fmt: &dyn Fn(&f64) -> String,
    reference: Option<(&str, f64)>,
    zero: bool,
) -> Result<String> {
    let (x, labels, numeric) = axis(t);
    let values = series.iter().flat_map(|(_, v)| v.iter().flatten().copied()).chain(reference.map(|r| r.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (mut lo, mut hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    if zero {
        lo = lo.min(0.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-9 + 0.05 * hi.abs().max(lo.abs()).max(1e-3));
    (lo, hi) = (if zero && lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad);
    let (x0, x1) = match (x.first(), x.last()) {
        (Some(&a), Some(&b)) if b > a => (a - (b - a) * 0.04, b + (b - a) * 0.04),
        (Some(&a), _) => (a - 1.0, a + 1.0),
        _ => (0.0, 1.0),
    };
    let by = t.metadata.by.clone();
    svg(W, H, |root| {
        // The legend in its own column, so that it never hides a line.
        let (plot, legend) = root.split_horizontally(W - 170);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, lo..hi)?;
        let label_x = |v: &f64| -> String {
            if numeric {
                format!("{v:.0}")
            } else {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        };
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(if numeric { 8 } else { labels.len().clamp(1, 12) })
            .x_label_formatter(&label_x)
            .y_label_formatter(y_fmt)
            .x_desc(by.as_str())
            .y_desc(y_desc)
            .label_style((FONT, 13))
            .draw()?;
        let grey = RGBColor(120, 120, 120);
        if let Some((_, y)) = reference {
            // Dashes: short segments along the line.
            let step = (x1 - x0) / 60.0;
            chart.draw_series((0..30).map(|k| {
                let a = x0 + 2.0 * k as f64 * step;
                PathElement::new(vec![(a, y), (a + step, y)], grey.stroke_width(2))
            }))?;
        }
        let mut items: Vec<(RGBColor, &str)> = Vec::new();
        for (i, (label, v)) in series.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            let points: Vec<(f64, f64)> = x.iter().zip(v).filter_map(|(&x, v)| v.map(|v| (x, v))).collect();
            chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
            items.push((color, label.as_str()));
        }
        if let Some((label, _)) = reference {
            items.push((grey, label));
        }
        side_legend(&legend, &items)?;
        Ok(())
    })
}

fn per_group(t: &TrendReport, f: impl Fn(&Summary) -> Option<f64>) -> Vec<Option<f64>> {
    t.groups.iter().map(|g| g.report.as_ref().and_then(&f)).collect()
}

/// The trend's line charts, in report order (those without data are left out).
pub fn trend_charts(t: &TrendReport) -> Result<Vec<Chart>> {
    let mut out = Vec::new();
    let by = &t.metadata.by;
    let shares: Vec<Line> = ["ce", "focal"]
        .iter()
        .map(|n| {
            (
                format!("of {} loss", if *n == "ce" { "CE" } else { "focal" }),
                per_group(t, |s| easy_negative_share(s, n)),
            )
        })
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .collect();
    let share_fmt = |y: &f64| format!("{:.0}%", 100.0 * y);
    if !shares.is_empty() {
        out.push(Chart {
            id: "trend_easy_shares",
            title: format!("Easy negatives' share of the loss, by {by}"),
            caption: "Share of the CE and focal loss carried by the easy negatives (p_t >= the easy threshold) in each group.".into(),
            svg: lines(t, &shares, "share of the loss", &share_fmt, None, true)?,
        });
    }
    let names: Vec<String> = t
        .reported()
        .next()
        .map(|(_, s)| s.strategies.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    if names.len() > 2 {
        let every: Vec<Line> =
            names.iter().map(|n| (n.clone(), per_group(t, |s| easy_negative_share(s, n)))).collect();
        out.push(Chart {
            id: "trend_strategies",
            title: format!("Easy negatives' share of each strategy's loss, by {by}"),
            caption: "The same share for every strategy analysed.".into(),
            svg: lines(t, &every, "share of the loss", &share_fmt, None, true)?,
        });
    }
    out.push(Chart {
        id: "trend_positives",
        title: format!("Positives per image, by {by}"),
        caption: "Positive decisions per image: the matching's output, which changes only when the data or the matcher does.".into(),
        svg: lines(t, &[("positives per image".into(), per_group(t, |s| Some(s.positives_per_image)))], "positives per image", &|y| format!("{y:.1}"), None, true)?,
    });
    let gamma = per_group(t, recommended_gamma);
    if gamma.iter().any(Option::is_some) {
        let balanced = per_group(t, |s| s.sweep.as_ref().and_then(|w| w.balanced_alpha));
        out.push(Chart {
            id: "trend_gamma",
            title: format!("Recommended gamma, by {by}"),
            caption: "The sweep's recommended gamma in each group (the smallest swept gamma whose easy negatives carry less than twice the target of the negatives' focal loss), and the balanced alpha at it.".into(),
            svg: lines(t, &[("recommended gamma".into(), gamma), ("balanced alpha".into(), balanced)], "gamma (alpha)", &|y| format!("{y:.1}"), None, true)?,
        });
    }
    let logit = per_group(t, |s| s.mean_negative_logit);
    if logit.iter().any(Option::is_some) {
        out.push(Chart {
            id: "trend_negative_logit",
            title: format!("Mean negative logit against the prior, by {by}"),
            caption: format!(
                "Mean logit of the negative decisions in each group; dashed: RetinaNet's prior-bias initialisation {:.3} (pi = 0.01). Negatives fall below it as the detector learns.",
                t.metadata.prior_logit
            ),
            svg: lines(t, &[("mean negative logit".into(), logit)], "logit", &|y| format!("{y:.1}"), Some(("prior (pi = 0.01)", t.metadata.prior_logit)), false)?,
        });
    }
    Ok(out)
}

/// Paired horizontal bars: per row, A's value above B's.
fn paired(rows: &[(String, f64, f64)], x_desc: &str) -> Result<String> {
    let n = rows.len().max(1);
    let h = (90 + 44 * n as u32).max(200);
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    svg(W, h, |root| {
        let (plot, legend) = root.split_horizontally(W - 110);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(170)
            .build_cartesian_2d(0f64..max, (0..n - 1).into_segmented())?;
        let names: Vec<String> = rows.iter().rev().map(|r| r.0.clone()).collect();
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .disable_y_mesh()
            .x_labels(6)
            .x_label_formatter(&|x| format!("{:.0}%", 100.0 * x))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc(x_desc)
            .label_style((FONT, 13))
            .draw()?;
        for (side, color) in [(0usize, SERIES[0]), (1, SERIES[1])] {
            chart.draw_series(rows.iter().rev().enumerate().map(|(i, r)| {
                let v = if side == 0 { r.1 } else { r.2 };
                // A in the upper half of the row, B in the lower.
                let (top, bottom) = if side == 0 { (2, 18) } else { (18, 2) };
                let mut bar = Rectangle::new(
                    [(0.0, SegmentValue::Exact(i)), (v, SegmentValue::Exact(i + 1))],
                    color.filled(),
                );
                bar.set_margin(top, bottom, 0, 0);
                bar
            }))?;
        }
        for (k, (color, label)) in [(SERIES[0], "A"), (SERIES[1], "B")].into_iter().enumerate() {
            let y = 24 + 22 * k as i32;
            legend.draw(&Rectangle::new([(4, y - 6), (18, y + 6)], color.filled()))?;
            legend.draw(&Text::new(label, (24, y - 7), (FONT, 13)))?;
        }
        Ok(())
    })
}

/// The comparison's paired bars.
pub fn compare_charts(c: &CompareReport) -> Result<Vec<Chart>> {
    let mut out = Vec::new();
    let rows: Vec<(String, f64, f64)> = c
        .a
        .report
        .strategies
        .iter()
        .filter_map(|sa| {
            let sb = c.b.report.strategy(&sa.name)?;
            Some((sa.name.clone(), sa.buckets.easy_negative.loss_share, sb.buckets.easy_negative.loss_share))
        })
        .collect();
    if !rows.is_empty() {
        out.push(Chart {
            id: "compare_easy_shares",
            title: "Easy negatives' share of each strategy's loss, A and B".into(),
            caption: "Per strategy, the share of its loss carried by easy negatives: A (upper bar) and B (lower bar).".into(),
            svg: paired(&rows, "share of the strategy's loss")?,
        });
    }
    if !c.moved_most.is_empty() {
        let rows: Vec<(String, f64, f64)> = c
            .moved_most
            .iter()
            .map(|m| (format!("{} {}", m.strategy, m.bucket.replace('_', " ")), m.a, m.b))
            .collect();
        out.push(Chart {
            id: "compare_moved",
            title: "The buckets that moved most".into(),
            caption: "The strategy buckets whose share of the strategy's loss changed most between A (upper bar) and B (lower bar).".into(),
            svg: paired(&rows, "share of the strategy's loss")?,
        });
    }
    Ok(out)
}
