//! The report's charts, drawn with plotters' SVG backend into strings. Every chart is a function
//! of the [`Report`] alone (histograms and curves, never raw points), so its size does not grow
//! with the dump.

pub mod runs;

use plotters::coord::ranged1d::{SegmentedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordusize;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::content::{self, key_text};
use super::html::escape;
use crate::report::{AlphaSource, Breakdowns, GroupRow, Report};

/// One chart: a stable id (used for file names and HTML anchors), a title and the SVG markup.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Stable identifier, e.g. `bucket_shares`.
    pub id: &'static str,
    /// Title shown above the chart.
    pub title: String,
    /// What the chart shows, in a sentence.
    pub caption: String,
    /// The SVG document.
    pub svg: String,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const W: u32 = 760;
const H: u32 = 380;
const FONT: &str = "sans-serif";

/// Colours of the four buckets: easy/hard negatives in blues, easy/hard positives in greens.
const BUCKET_COLORS: [RGBColor; 4] =
    [RGBColor(158, 202, 225), RGBColor(33, 113, 181), RGBColor(161, 217, 155), RGBColor(35, 139, 69)];
const BUCKET_LABELS: [&str; 4] = ["easy negatives", "hard negatives", "easy positives", "hard positives"];

/// A palette for series (gammas, sides), distinguishable and print-friendly.
const SERIES: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

fn svg(w: u32, h: u32, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(s)
}

use super::format::percent as pct;

/// Every chart the report has data for, in report order.
pub fn charts(report: &Report) -> Result<Vec<Chart>> {
    let mut out = Vec::new();
    if !report.strategies.is_empty() {
        out.push(Chart {
            id: "bucket_shares",
            title: "Where each strategy's loss goes".into(),
            caption: "Share of each strategy's loss carried by easy and hard negatives and positives (easy: p_t >= the easy threshold).".into(),
            svg: bucket_shares(report)?,
        });
    }
    let gammas: Vec<f64> = match &report.sweep {
        Some(s) => s.cdf.iter().map(|c| c.gamma).collect(),
        None => vec![0.0, 0.5, 1.0, 2.0, 5.0],
    };
    out.push(Chart {
        id: "loss_vs_pt",
        title: "Focal loss against p_t".into(),
        caption: "FL(p_t) = -(1 - p_t)^gamma log(p_t) for the swept gammas (the focal-loss paper's Fig. 1); gamma 0 is cross-entropy.".into(),
        svg: loss_vs_pt(&gammas)?,
    });
    if let Some(sw) = &report.sweep {
        for (id, side, title) in [("cdf_negatives", true, "negatives"), ("cdf_positives", false, "positives")]
        {
            out.push(Chart {
                id,
                title: format!("Cumulative loss of the {title}"),
                caption: format!(
                    "Share of the {title}' loss carried by the easiest fraction of them, per gamma (the focal-loss paper's Fig. 4); a curve hugging the bottom means a few hard {title} carry the loss."
                ),
                svg: cdf(report, side)?,
            });
        }
        out.push(Chart {
            id: "heatmap",
            title: "Easy-negative share of the focal loss".into(),
            caption: if sw.recommendation.alpha_source == AlphaSource::None {
                "Per gamma (rows) and alpha (columns); no gamma is recommended: the dump has no positive decisions.".into()
            } else {
                format!(
                    "Per gamma (rows) and alpha (columns); the outlined row is the recommendation: gamma {}, alpha {:.3}.",
                    sw.recommendation.gamma, sw.recommendation.alpha
                )
            },
            svg: heatmap(report)?,
        });
    }
    if let Some(d) = &report.gradient_density {
        if d.positives.iter().chain(&d.negatives).any(|&c| c > 0) {
            out.push(Chart {
                id: "gradient_density",
                title: "Gradient-norm density".into(),
                caption: "Decisions per bin of g = |p - y| (log scale), positives and negatives (GHM's Fig. 1): the easy negatives pile up at g near 0.".into(),
                svg: density(report)?,
            });
        }
    }
    if let Some(b) = &report.breakdowns {
        for (rows, what, id_ratio, id_easy) in [
            (&b.by_level, "FPN level", "levels_neg_pos", "levels_easy"),
            (&b.by_class, "class", "classes_neg_pos", "classes_easy"),
        ] {
            if rows.is_empty() {
                continue;
            }
            out.push(Chart {
                id: id_ratio,
                title: format!("Negatives per positive, by {what}"),
                caption: format!("neg:pos ratio of the decisions of each {what} (log scale; groups without positives are left out)."),
                svg: neg_pos(rows, what)?,
            });
            out.push(Chart {
                id: id_easy,
                title: format!("Easy negatives, by {what}"),
                caption: format!("Share of each {what}'s CE and focal loss carried by its easy negatives."),
                svg: easy_shares(rows, what)?,
            });
        }
        if !b.class_by_level.is_empty() {
            let p = &report.metadata.parameters;
            let alpha = p.alpha.map_or("no alpha".to_string(), |a| format!("alpha {a}"));
            let shown = b.by_class.len().min(content::REPORT_CLASSES);
            let order = if b.by_class.iter().any(|r| r.ce_gradient.is_some()) {
                "most suppressed first (smallest positive-to-negative gradient ratio)"
            } else {
                "in class order"
            };
            let rows = if shown < b.by_class.len() {
                format!("the {shown} classes (rows) of {}", b.by_class.len())
            } else {
                "classes (rows)".to_string()
            };
            out.push(Chart {
                id: "class_level_easy",
                title: "Easy negatives' share of the focal loss, by class and FPN level".into(),
                caption: format!(
                    "Per cell, the share of the class's focal loss at that level (gamma {}, {alpha}) carried by its easy negatives; {rows} {order}, FPN levels as columns; grey: no decisions. Hover a cell for its decisions.",
                    p.gamma
                ),
                svg: class_level_heatmap(b, &format!("gamma {}, {alpha}", p.gamma), order)?,
            });
        }
    }
    Ok(out)
}

fn bucket_shares(report: &Report) -> Result<String> {
    // The first strategy on top: segment i from the bottom holds strategy n - 1 - i.
    let names: Vec<&str> = report.strategies.iter().rev().map(|s| s.name.as_str()).collect();
    let n = names.len();
    let h = (110 + 38 * n as u32).max(220);
    svg(W, h, |root| {
        let (plot, legend) = root.split_horizontally(W - 150);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..1f64, (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .disable_y_mesh()
            .x_labels(6)
            .x_label_formatter(&|x| format!("{:.0}%", 100.0 * x))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).map_or(String::new(), |s| s.to_string()),
                _ => String::new(),
            })
            .x_desc("share of the strategy's loss")
            .label_style((FONT, 13))
            .draw()?;
        for (b, &color) in BUCKET_COLORS.iter().enumerate() {
            let bars = report.strategies.iter().rev().enumerate().map(|(i, s)| {
                let shares: Vec<f64> = s.buckets.iter().iter().map(|(_, x)| x.loss_share).collect();
                let start: f64 = shares[..b].iter().sum();
                let mut bar = Rectangle::new(
                    [(start, SegmentValue::Exact(i)), (start + shares[b], SegmentValue::Exact(i + 1))],
                    color.filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            });
            chart.draw_series(bars)?;
        }
        let items: Vec<(RGBColor, &str)> = BUCKET_COLORS.iter().copied().zip(BUCKET_LABELS).collect();
        side_legend(&legend, &items)
    })
}

/// A legend in its own column beside the plot, so that it never hides data.
fn side_legend(area: &Area<'_>, items: &[(RGBColor, &str)]) -> Result<()> {
    for (k, (color, label)) in items.iter().enumerate() {
        let y = 24 + 22 * k as i32;
        area.draw(&Rectangle::new([(4, y - 6), (18, y + 6)], color.filled()))?;
        area.draw(&Text::new(*label, (24, y - 7), (FONT, 13)))?;
    }
    Ok(())
}

fn loss_vs_pt(gammas: &[f64]) -> Result<String> {
    svg(W, H, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..5f64)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("probability of the ground-truth class, p_t")
            .y_desc("loss")
            .label_style((FONT, 13))
            .draw()?;
        for (i, &g) in gammas.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            // From p_t = e^-5, where CE = 5, to 1.
            let points = (0..=400).map(|k| {
                let p = (-5.0f64).exp() + (1.0 - (-5.0f64).exp()) * f64::from(k) / 400.0;
                (p, (1.0 - p).powf(g) * -p.ln())
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(format!("gamma = {g}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    })
}

fn cdf(report: &Report, negatives: bool) -> Result<String> {
    let sw = report.sweep.as_ref().ok_or("no sweep")?;
    svg(W, H, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc(if negatives {
                "fraction of negatives, easiest first"
            } else {
                "fraction of positives, easiest first"
            })
            .y_desc("cumulative share of the loss")
            .label_style((FONT, 13))
            .draw()?;
        for (i, c) in sw.cdf.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            let side = if negatives { &c.negatives } else { &c.positives };
            let points = sw.cdf_x.iter().copied().zip(side.y.iter().copied());
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(format!("gamma = {}", c.gamma))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    })
}

/// White to orange to dark red over [0, 1].
fn heat(x: f64) -> RGBColor {
    let x = x.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64, t: f64| (a + (b - a) * t).round() as u8;
    if x < 0.5 {
        let t = x / 0.5;
        RGBColor(lerp(255.0, 253.0, t), lerp(255.0, 141.0, t), lerp(255.0, 60.0, t))
    } else {
        let t = (x - 0.5) / 0.5;
        RGBColor(lerp(253.0, 165.0, t), lerp(141.0, 15.0, t), lerp(60.0, 21.0, t))
    }
}

fn heatmap(report: &Report) -> Result<String> {
    let sw = report.sweep.as_ref().ok_or("no sweep")?;
    let mut gammas: Vec<f64> = Vec::new();
    let mut alphas: Vec<Option<f64>> = Vec::new();
    for c in &sw.grid {
        if !gammas.contains(&c.gamma) {
            gammas.push(c.gamma);
        }
        if !alphas.contains(&c.alpha) {
            alphas.push(c.alpha);
        }
    }
    let (ng, na) = (gammas.len(), alphas.len());
    let h = (120 + 44 * ng as u32).max(240);
    let alpha_name = |a: &Option<f64>| a.map_or("no alpha".to_string(), |a| format!("alpha {a}"));
    svg(W, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d((0..na - 1).into_segmented(), (0..ng - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => alphas.get(*i).map_or(String::new(), alpha_name),
                _ => String::new(),
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => gammas.get(*i).map_or(String::new(), |g| format!("gamma {g}")),
                _ => String::new(),
            })
            .label_style((FONT, 13))
            .draw()?;
        let text = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        for c in &sw.grid {
            let (Some(i), Some(j)) =
                (alphas.iter().position(|a| *a == c.alpha), gammas.iter().position(|g| *g == c.gamma))
            else {
                continue;
            };
            let share = c.buckets.easy_negative.loss_share;
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(i), SegmentValue::Exact(j)),
                    (SegmentValue::Exact(i + 1), SegmentValue::Exact(j + 1)),
                ],
                heat(share).filled(),
            )))?;
            let color = if share > 0.6 { WHITE } else { BLACK };
            chart.draw_series(std::iter::once(Text::new(
                pct(share),
                (SegmentValue::CenterOf(i), SegmentValue::CenterOf(j)),
                text.color(&color),
            )))?;
        }
        let recommended = sw.recommendation.alpha_source != AlphaSource::None;
        if let Some(j) = gammas.iter().position(|g| recommended && *g == sw.recommendation.gamma) {
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(0), SegmentValue::Exact(j)),
                    (SegmentValue::Exact(na), SegmentValue::Exact(j + 1)),
                ],
                BLACK.stroke_width(3),
            )))?;
        }
        Ok(())
    })
}

fn density(report: &Report) -> Result<String> {
    let d = report.gradient_density.as_ref().ok_or("no density")?;
    let max = d.positives.iter().chain(&d.negatives).copied().max().unwrap_or(1).max(1) as f64;
    svg(W, H, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, (0.5f64..max * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("gradient norm g = |p - y|")
            .y_desc("decisions per bin (log)")
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .label_style((FONT, 13))
            .draw()?;
        let width = 1.0 / d.bins as f64;
        for (i, (label, counts)) in
            [("negatives", &d.negatives), ("positives", &d.positives)].into_iter().enumerate()
        {
            let color = SERIES[i];
            // A step line through the bins with decisions.
            let points: Vec<(f64, f64)> = counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .flat_map(|(b, &c)| [(b as f64 * width, c as f64), ((b + 1) as f64 * width, c as f64)])
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    })
}

fn neg_pos(rows: &[GroupRow], what: &str) -> Result<String> {
    let rows: Vec<&GroupRow> = rows.iter().filter(|r| r.neg_pos_ratio.is_some_and(|x| x > 0.0)).collect();
    let names: Vec<String> = rows.iter().map(|r| key_text(&r.key)).collect();
    let values: Vec<f64> = rows.iter().filter_map(|r| r.neg_pos_ratio).collect();
    let max = values.iter().copied().fold(1.0, f64::max);
    let n = names.len().max(1);
    svg(W, H, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0.5f64..max * 2.0).log_scale())?;
        group_mesh(&mut chart, &names, what, "negatives per positive (log)", &|y| format!("{y:.0}"))?;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(i), 0.5), (SegmentValue::Exact(i + 1), v)],
                SERIES[0].filled(),
            );
            bar.set_margin(0, 0, 3, 3);
            bar
        }))?;
        Ok(())
    })
}

/// The mesh of a bar chart with one segment per group, labelled by `names`.
fn group_mesh<Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<SegmentedCoord<RangedCoordusize>, Y>>,
    names: &[String],
    what: &str,
    y_desc: &str,
    y_label: &dyn Fn(&f64) -> String,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .disable_x_mesh()
        .x_labels(names.len().clamp(1, 40))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(what)
        .y_desc(y_desc)
        .y_label_formatter(y_label)
        .label_style((FONT, 13))
        .draw()?;
    Ok(())
}

fn easy_shares(rows: &[GroupRow], what: &str) -> Result<String> {
    let names: Vec<String> = rows.iter().map(|r| key_text(&r.key)).collect();
    let n = names.len().max(1);
    svg(W, H, |root| {
        let (plot, legend) = root.split_horizontally(W - 120);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..1f64)?;
        group_mesh(&mut chart, &names, what, "easy negatives' share of the loss", &|y| {
            format!("{:.0}%", 100.0 * y)
        })?;
        // Two bars per group, CE on the left and focal loss on the right of the segment.
        let segment = (W - 120 - 24 - 48) as f64 / n as f64;
        let (outer, inner) = ((0.12 * segment) as u32, (0.5 * segment) as u32);
        type Series = (RGBColor, fn(&GroupRow) -> f64, (u32, u32));
        let series: [Series; 2] = [
            (SERIES[1], |r| r.easy_negative_ce_share, (outer, inner)),
            (SERIES[0], |r| r.easy_negative_focal_share, (inner, outer)),
        ];
        for (color, value, (left, right)) in series {
            chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), value(r))],
                    color.filled(),
                );
                bar.set_margin(0, 0, left, right);
                bar
            }))?;
        }
        side_legend(&legend, &[(SERIES[1], "CE"), (SERIES[0], "focal loss")])
    })
}

/// The class x level heatmap, written directly as SVG so that every cell carries its own
/// `<title>` (a tooltip with the numbers) and the chart a title and description for screen
/// readers. Rows follow [`content::classes_by_suppression`] (`order` says how), at most
/// [`content::REPORT_CLASSES`] of them; colour and text are the easy negatives' share of the
/// cell's focal loss, on the sweep heatmap's scale.
fn class_level_heatmap(b: &Breakdowns, focus: &str, order: &str) -> Result<String> {
    use std::fmt::Write as _;
    const ID: &str = "class_level_easy";
    let levels = content::cell_levels(b);
    let classes: Vec<&GroupRow> =
        content::classes_by_suppression(b).into_iter().take(content::REPORT_CLASSES).collect();
    let (left, top, legend) = (84.0, 44.0, 120.0);
    let col = ((f64::from(W) - left - legend - 12.0) / levels.len().max(1) as f64).min(120.0);
    // Rows of 18 px, down to 14 px (80 classes, COCO) with every label, then thinner.
    let row = if classes.len() <= 60 { 18.0 } else { (1120.0 / classes.len() as f64).clamp(8.0, 14.0) };
    let labels = row >= 14.0;
    let h = (top + row * classes.len() as f64 + 16.0).max(260.0).ceil();
    let mut s = String::new();
    write!(
        s,
        r#"<svg width="{W}" height="{h}" viewBox="0 0 {W} {h}" xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{ID}-title {ID}-desc" font-family="{FONT}">"#
    )?;
    let mut hottest: Option<(&str, i64, f64)> = None;
    let names: Vec<String> = classes.iter().map(|r| key_text(&r.key)).collect();
    for (r, name) in classes.iter().zip(&names) {
        for c in b.class_by_level.iter().filter(|c| Some(c.class) == r.key.as_u64()) {
            if hottest.is_none_or(|(_, _, v)| c.easy_negative_focal_share > v) {
                hottest = Some((name, c.level, c.easy_negative_focal_share));
            }
        }
    }
    write!(
        s,
        "<title id=\"{ID}-title\">Easy negatives' share of the focal loss, by class and FPN level</title><desc id=\"{ID}-desc\">{}</desc>",
        escape(&format!(
            "{} classes (rows), {order}, by {} FPN levels (columns{}); colour from white (0%) through orange to dark red (100%) is the share of the cell's focal loss ({focus}) carried by easy negatives.{}",
            classes.len(),
            levels.len(),
            levels.first().zip(levels.last()).map_or(String::new(), |(a, z)| format!(" {a} to {z}")),
            hottest.map_or(String::new(), |(c, l, v)| format!(
                " Highest: class {c} at level {l}, {}.",
                pct(v)
            ))
        ))
    )?;
    s.push_str(r#"<rect x="0" y="0" width="100%" height="100%" fill="white"/>"#);
    // Column labels, then the row labels and cells.
    for (j, l) in levels.iter().enumerate() {
        let x = left + col * (j as f64 + 0.5);
        write!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" font-size="13" text-anchor="middle">level {l}</text>"#,
            top - 12.0
        )?;
    }
    for (i, (r, name)) in classes.iter().zip(&names).enumerate() {
        let y = top + row * i as f64;
        if labels || i % (14.0 / row).ceil() as usize == 0 {
            write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" dominant-baseline="central">class {}</text>"#,
                left - 6.0,
                y + row / 2.0,
                escape(name)
            )?;
        }
        for (j, &l) in levels.iter().enumerate() {
            let x = left + col * j as f64;
            let cell = b.class_by_level.iter().find(|c| Some(c.class) == r.key.as_u64() && c.level == l);
            let (fill, tip) = match cell {
                Some(c) => {
                    let RGBColor(red, green, blue) = heat(c.easy_negative_focal_share);
                    (
                        format!("#{red:02x}{green:02x}{blue:02x}"),
                        format!(
                            "class {} at level {l}: easy negatives carry {} of its focal loss, {} of its CE; they are {} of its {} decisions ({} positive)",
                            name,
                            pct(c.easy_negative_focal_share),
                            pct(c.easy_negative_ce_share),
                            pct(c.easy_negative_share),
                            super::count(c.decisions),
                            super::count(c.positives)
                        ),
                    )
                }
                None => ("#eeeeee".to_string(), format!("class {name} at level {l}: no decisions")),
            };
            write!(
                s,
                r#"<g><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="white" stroke-width="1"/>"#,
                escape(&tip),
                col,
                row
            )?;
            if labels {
                let (text, color) = match cell {
                    Some(c) => (
                        pct(c.easy_negative_focal_share),
                        if c.easy_negative_focal_share > 0.6 { "white" } else { "black" },
                    ),
                    None => ("-".to_string(), "black"),
                };
                write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" dominant-baseline="central" fill="{color}">{text}</text>"#,
                    x + col / 2.0,
                    y + row / 2.0
                )?;
            }
            s.push_str("</g>");
        }
    }
    // The legend: the colour scale from 0% (bottom) to 100% (top).
    let (lx, ly, lh) = (f64::from(W) - legend + 16.0, top, 160.0);
    s.push_str(r#"<g aria-hidden="true">"#);
    for k in 0..32 {
        let v = 1.0 - (f64::from(k) + 0.5) / 32.0;
        let RGBColor(red, green, blue) = heat(v);
        write!(
            s,
            r##"<rect x="{lx:.1}" y="{:.2}" width="16" height="{:.2}" fill="#{red:02x}{green:02x}{blue:02x}"/>"##,
            ly + lh * f64::from(k) / 32.0,
            lh / 32.0 + 0.3
        )?;
    }
    write!(
        s,
        r##"<rect x="{lx:.1}" y="{ly:.1}" width="16" height="{lh:.1}" fill="none" stroke="#999999"/>"##
    )?;
    for (v, label) in [(1.0, "100%"), (0.5, "50%"), (0.0, "0%")] {
        write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" dominant-baseline="central">{label}</text>"#,
            lx + 22.0,
            ly + lh * (1.0 - v)
        )?;
    }
    write!(
        s,
        r#"<text x="{lx:.1}" y="{:.1}" font-size="12">EN share</text><text x="{lx:.1}" y="{:.1}" font-size="12">of focal loss</text></g></svg>"#,
        ly + lh + 20.0,
        ly + lh + 35.0
    )?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{breakdowns, cell, class, sample_report};

    #[test]
    fn the_class_level_heatmap_has_a_labelled_cell_per_class_and_level() {
        let mut r = sample_report();
        r.breakdowns = Some(breakdowns(
            vec![class(0, 5, Some(0.5)), class(1, 1, Some(0.1))],
            vec![cell(0, 3, 0.25), cell(0, 4, 1.0), cell(1, 4, 0.75)],
        ));
        let all = charts(&r).unwrap();
        let c = all.iter().find(|c| c.id == "class_level_easy").expect("a heatmap with levels");
        let svg = &c.svg;
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains(r#"role="img" aria-labelledby="class_level_easy-title class_level_easy-desc""#));
        assert!(svg.contains("Highest: class 0 at level 4, 100.0%."), "{svg}");
        // One tooltip per class and level, the empty cell grey; the most suppressed class on top.
        assert_eq!(svg.matches("<title>class ").count(), 4);
        assert!(svg.contains("<title>class 1 at level 3: no decisions</title>"));
        assert!(svg.find(">class 1</text>").unwrap() < svg.find(">class 0</text>").unwrap());
        assert_eq!(svg.matches("<g>").count() + svg.matches("<g ").count(), svg.matches("</g>").count());
        // Without a level column there is no heatmap.
        r.breakdowns = Some(breakdowns(vec![class(0, 5, Some(0.5))], Vec::new()));
        assert!(charts(&r).unwrap().iter().all(|c| c.id != "class_level_easy"));
    }
}
