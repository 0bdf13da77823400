//! The human-readable table printed by default. Its first line answers the headline question:
//! how much of the loss do easy negatives carry under each strategy?

use std::io::Write;

use super::format::{count, number, percent};
use super::table::{Align, Table};
use super::Renderer;
use crate::report::{Report, StrategyReport};

/// The terminal table renderer.
pub struct Terminal {
    /// Highlight the easy-negative column with ANSI bold.
    pub color: bool,
}

/// A strategy's display name in prose.
fn prose_name(name: &str) -> &str {
    match name {
        "ce" => "CE",
        "alpha_ce" => "alpha-CE",
        "focal" => "focal",
        other => other,
    }
}

/// The strategy's parameters in short form: `gamma=2 alpha=0.25`, `k=128 nms=0.7`,
/// `B=256 f=0.5`; null values are left out except a disabled alpha ("no alpha").
pub fn params_text(s: &StrategyReport, sep: &str, join: &str) -> String {
    // Display order and short names; draws and seed live in the sampler's spread line.
    const ORDER: [(&str, &str); 9] = [
        ("gamma", "gamma"),
        ("alpha", "alpha"),
        ("k", "k"),
        ("nms", "nms"),
        ("pos_fraction", "pos"),
        ("neg_pos_ratio", "ratio"),
        ("batch_size_per_image", "B"),
        ("positive_fraction", "f"),
        ("bins", "bins"),
    ];
    let mut parts = Vec::new();
    for (key, short) in ORDER {
        match s.params.get(key) {
            Some(v) if v.is_null() && key == "alpha" => parts.push("no alpha".to_string()),
            Some(v) if v.is_null() => {}
            Some(v) => {
                parts.push(format!("{short}{sep}{}", v.as_f64().map_or(v.to_string(), |x| x.to_string())))
            }
            None => {}
        }
    }
    if s.params.get("empty_images").and_then(|v| v.as_str()) == Some("all-negatives") {
        parts.push(format!("empty{sep}all"));
    }
    parts.join(join)
}

/// The headline, e.g. "easy negatives: 99.1% of decisions, 77.0% of CE loss, 2.6% of focal
/// loss (gamma 2, alpha 0.25)", and a second line with the other strategies' easy-negative
/// shares when there are any.
pub fn headline(report: &Report) -> String {
    let d = &report.dataset;
    if d.decisions == 0 {
        return "no decisions: every anchor in the dump is ignored (label -2)".into();
    }
    let Some(first) = report.strategies.first() else { return String::new() };
    let share = first.buckets.easy_negative.count as f64 / d.decisions as f64;
    let mut parts = vec![format!("{} of decisions", percent(share))];
    // The sentence shows the CE / focal contrast; other strategies go to a second line.
    let lead = |s: &&StrategyReport| s.name == "ce" || s.name == "focal";
    let has_lead = report.strategies.iter().any(|s| lead(&s));
    let (main, rest): (Vec<&StrategyReport>, Vec<&StrategyReport>) =
        report.strategies.iter().partition(|s| !has_lead || lead(s));
    for s in main {
        let mut p =
            format!("{} of {} loss", percent(s.buckets.easy_negative.loss_share), prose_name(&s.name));
        if s.name != "ce" && !s.params.is_empty() {
            p.push_str(&format!(" ({})", params_text(s, " ", ", ")));
        }
        parts.push(p);
    }
    let mut text = format!("easy negatives: {}", parts.join(", "));
    if !rest.is_empty() {
        let others: Vec<String> = rest
            .iter()
            .map(|s| format!("{} {}", prose_name(&s.name), percent(s.buckets.easy_negative.loss_share)))
            .collect();
        text.push_str(&format!("\n                of each strategy's loss: {}", others.join(", ")));
    }
    text
}

impl Renderer for Terminal {
    fn render(&self, r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
        let bold = |s: String| if self.color { format!("\x1b[1m{s}\x1b[0m") } else { s };
        let m = &r.metadata;
        let d = &r.dataset;
        writeln!(out, "{}", bold(headline(r)))?;
        writeln!(out)?;
        writeln!(
            out,
            "dump  {} file{}, {} images, {} {} {}, {} class{}",
            d.files,
            if d.files == 1 { "" } else { "s" },
            count(d.images),
            m.layout,
            m.activation,
            m.scores,
            m.classes,
            if m.classes == 1 { "" } else { "es" }
        )?;
        let anchors = match d.anchors {
            Some(a) => format!("{} anchors, {} ignored; ", count(a), count(d.ignored)),
            None => String::new(),
        };
        writeln!(
            out,
            "      {anchors}{} decisions: {} positive, {} negative",
            count(d.decisions),
            count(d.positives),
            count(d.negatives)
        )?;
        writeln!(out)?;

        let mut t = Table::new(
            &["strategy", "params", "selected", "total loss", "normalized"],
            &[Align::Left, Align::Left, Align::Right, Align::Right, Align::Right],
        );
        for s in &r.strategies {
            t.row(vec![
                s.name.clone(),
                params_text(s, "=", " "),
                count(s.selected.round() as u64),
                number(s.loss.total),
                number(s.loss.normalized),
            ]);
        }
        write!(out, "{}", t.render(""))?;
        writeln!(out)?;

        let shares =
            |title: &str, pick: &dyn Fn(&crate::report::BucketReport) -> f64, with_decisions: bool| {
                let mut t = Table::new(
                    &[title, "easy neg", "hard neg", "easy pos", "hard pos"],
                    &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Right],
                );
                for s in &r.strategies {
                    let mut cells = vec![s.name.clone()];
                    for (i, (_, b)) in s.buckets.iter().into_iter().enumerate() {
                        let cell = percent(pick(b));
                        cells.push(if i == 0 { bold(cell) } else { cell });
                    }
                    t.row(cells);
                }
                if with_decisions {
                    if let Some(s) = r.strategies.first() {
                        let mut cells = vec!["(decisions)".to_string()];
                        for (_, b) in s.buckets.iter() {
                            cells.push(percent(if d.decisions > 0 {
                                b.count as f64 / d.decisions as f64
                            } else {
                                0.0
                            }));
                        }
                        t.row(cells);
                    }
                }
                t.render("")
            };
        write!(out, "{}", shares("share of loss", &|b| b.loss_share, true))?;
        writeln!(out)?;
        write!(out, "{}", shares("share of |grad|", &|b| b.grad_share, false))?;
        writeln!(out)?;
        let mut notes = false;
        if let Some(o) = &r.overlaps {
            let pairs: Vec<String> =
                o.jaccard.iter().map(|j| format!("{}~{} {:.2}", j.a, j.b, j.jaccard)).collect();
            if !pairs.is_empty() {
                writeln!(out, "selection overlap (Jaccard, in decisions): {}", pairs.join(", "))?;
            }
            if let Some(f) = o.focal_share_in_ohem {
                writeln!(out, "the OHEM selection carries {} of the focal loss", percent(f))?;
            }
            notes = true;
        }
        if let Some(s) = r.strategy("sampled") {
            if let Some(d) = s.extra.get("draws") {
                let en = &d["loss_share"]["easy_negative"];
                let f = |v: &serde_json::Value| percent(v.as_f64().unwrap_or(0.0));
                writeln!(
                    out,
                    "sampled over {} seeded draws: easy-negative share {} +- {} (95%: {} to {})",
                    d["n"],
                    f(&en["mean"]),
                    f(&en["std"]),
                    f(&en["ci95"][0]),
                    f(&en["ci95"][1])
                )?;
                notes = true;
            }
        }
        if notes {
            writeln!(out)?;
        }
        writeln!(
            out,
            "easy: p_t >= {}; normalized = mean over images of loss / max(1, positives in the image)",
            m.parameters.easy_threshold
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::sample_report;

    #[test]
    fn headline_answers_the_question_first() {
        let r = sample_report();
        let mut buf = Vec::new();
        Terminal { color: false }.render(&r, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "easy negatives: 99.0% of decisions, 77.0% of CE loss, 2.6% of focal loss (gamma 2, alpha 0.25)"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    }
}
