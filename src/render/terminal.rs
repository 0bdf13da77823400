//! The human-readable table printed by default. Its first line answers the headline question:
//! how much of the loss do easy negatives carry under each strategy?

use std::io::Write;

use super::format::{count, number, percent, wrap};
use super::table::{Align, Table};
use super::Renderer;
use crate::report::{Report, StrategyReport};

/// Width the text output keeps within.
const WIDTH: usize = 100;

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
        text.push_str(&format!("\n  and of their loss under {}", others.join(", ")));
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
        if let Some(b) = &r.breakdowns {
            if !b.by_level.is_empty() {
                write!(out, "{}", groups("FPN level", &b.by_level))?;
                writeln!(out)?;
            }
        }
        if let Some(sw) = &r.sweep {
            sweep(out, sw)?;
        }
        if !r.normalizers.is_empty() {
            let mut t = Table::new(
                &["focal loss normalised by", "value", ""],
                &[Align::Left, Align::Right, Align::Left],
            );
            for n in &r.normalizers {
                let who = n.used_by.split(':').next().unwrap_or("").to_string();
                t.row(vec![n.name.replace('_', " "), number(n.value), who]);
            }
            write!(out, "{}", t.render(""))?;
            writeln!(out)?;
        }
        for h in &r.health {
            let tag = if h.level == "warning" { bold("warning:".to_string()) } else { "note:".to_string() };
            write!(out, "{}", wrap(&h.message, WIDTH, &format!("{tag} "), "  "))?;
            if let Some(fix) = &h.fix {
                write!(out, "{}", wrap(fix, WIDTH, "  fix: ", "       "))?;
            }
        }
        if !r.health.is_empty() {
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

/// A breakdown table (neg:pos, easy-negative shares, loss shares).
fn groups(title: &str, rows: &[crate::report::GroupRow]) -> String {
    let mut t = Table::new(
        &[title, "decisions", "neg:pos", "easy neg", "EN of CE", "EN of FL", "CE share", "FL share"],
        &[
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
    );
    for g in rows {
        let key = match &g.key {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        t.row(vec![
            key,
            count(g.decisions),
            g.neg_pos_ratio.map_or("-".into(), |x| format!("{x:.0}")),
            percent(g.easy_negative_share),
            percent(g.easy_negative_ce_share),
            percent(g.easy_negative_focal_share),
            percent(g.ce_share),
            percent(g.focal_share),
        ]);
    }
    t.render("")
}

/// The sweep: easy-negative share per (gamma, alpha), the recommendation and the CDF summary.
fn sweep(out: &mut dyn Write, sw: &crate::report::SweepReport) -> std::io::Result<()> {
    let mut alphas: Vec<Option<f64>> = Vec::new();
    let mut gammas: Vec<f64> = Vec::new();
    for c in &sw.grid {
        if !alphas.contains(&c.alpha) {
            alphas.push(c.alpha);
        }
        if !gammas.contains(&c.gamma) {
            gammas.push(c.gamma);
        }
    }
    let alpha_name = |a: &Option<f64>| a.map_or("no alpha".to_string(), |a| format!("a={a}"));
    let mut header: Vec<String> = vec!["easy-neg share".into()];
    header.extend(alphas.iter().map(alpha_name));
    header.push("balanced a".into());
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut align = vec![Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 1));
    let mut t = Table::new(&header_refs, &align);
    for (gi, &g) in gammas.iter().enumerate() {
        let mut row = vec![format!("gamma {g}")];
        for a in &alphas {
            let cell = sw.grid.iter().find(|c| c.gamma == g && c.alpha == *a);
            row.push(cell.map_or("-".into(), |c| percent(c.buckets.easy_negative.loss_share)));
        }
        let bal = sw.balanced_alpha.get(gi).map_or(0.0, |b| b.alpha);
        row.push(format!("{bal:.3}"));
        t.row(row);
    }
    write!(out, "{}", t.render(""))?;
    let rec = &sw.recommendation;
    writeln!(out)?;
    writeln!(out, "recommendation: gamma {}, alpha {:.3}", rec.gamma, rec.alpha)?;
    write!(out, "{}", wrap(&rec.rule, WIDTH, "  rule: ", "        "))?;
    for reason in &rec.reasons {
        write!(out, "{}", wrap(reason, WIDTH, "  - ", "    "))?;
    }
    writeln!(
        out,
        "  the paper's default: gamma {}, alpha {}",
        sw.paper_default.gamma, sw.paper_default.alpha
    )?;
    let table: Vec<String> =
        sw.table_1b.iter().map(|r| format!("{} ({}) {:.1}", r.gamma, r.alpha, r.ap)).collect();
    write!(
        out,
        "{}",
        wrap(
            &format!("its Table 1b, AP by gamma (alpha), RetinaNet-50 on COCO minival: {}", table.join(", ")),
            WIDTH,
            "  ",
            "    "
        )
    )?;
    writeln!(out)?;
    let mut t = Table::new(
        &["hardest share of negatives carrying", "50% of their loss", "90%", "positives: 50%", "90%"],
        &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Right],
    );
    for c in &sw.cdf {
        t.row(vec![
            format!("gamma {}", c.gamma),
            percent(c.negatives.hardest_fraction_for_50),
            percent(c.negatives.hardest_fraction_for_90),
            percent(c.positives.hardest_fraction_for_50),
            percent(c.positives.hardest_fraction_for_90),
        ]);
    }
    write!(out, "{}", t.render(""))?;
    writeln!(out)
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
