//! The Markdown report: the same tables as the HTML page, with the charts as SVG files written
//! beside it (`<stem>_files/<chart>.svg`) and linked.

use std::fmt::Write as _;
use std::io::Write;

use super::charts::{self, Chart};
use super::content::{self, runs, TableData};
use super::table::Align;
use super::Renderer;
use crate::compare::CompareReport;
use crate::report::Report;
use crate::trend::TrendReport;

/// The Markdown renderer. `assets` is the directory (relative to the Markdown file) that holds
/// the chart files.
pub struct Markdown {
    /// Relative directory of the SVG files.
    pub assets: String,
}

/// Escapes text (which may come from the dump: image ids, paths, column names) for Markdown:
/// HTML-significant characters become entities, so that a Markdown-to-HTML renderer shows them
/// instead of running them (`<img onerror=...>`); brackets and backticks are escaped, so that no
/// link or code span starts inside; `|` is escaped and line breaks become spaces, so that a
/// table cell stays one cell.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '[' | ']' | '`' | '|' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Backticks for a fence around `s`: one more than its longest run of backticks, at least `min`.
fn fence(s: &str, min: usize) -> String {
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat((longest + 1).max(min))
}

/// A code span of `s` shown verbatim (nothing inside a code span is markup or HTML), fenced
/// with more backticks than `s` holds in a row; line breaks become spaces.
pub fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let fence = fence(&s, 1);
    // A space inside the fence when the content starts or ends with a backtick.
    let pad = if s.starts_with('`') || s.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A fenced code block of `s` (at least three backticks).
fn code_block(s: &str, info: &str) -> String {
    let fence = fence(s, 3);
    format!("{fence}{info}\n{s}\n{fence}\n")
}

/// A pipe table.
pub fn table(t: &TableData) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", t.header.iter().map(|h| text(h)).collect::<Vec<_>>().join(" | "));
    let rule: Vec<&str> = t.align.iter().map(|a| if *a == Align::Right { "---:" } else { "---" }).collect();
    let _ = writeln!(s, "| {} |", rule.join(" | "));
    for row in &t.rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if t.emphasis == Some(i) { format!("**{}**", text(c)) } else { text(c) })
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s.push('\n');
    s
}

impl Renderer for Markdown {
    fn render(&self, r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
        let charts = charts::charts(r).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut b = String::from("# hardmine report\n\n");
        let headline = content::headline(r);
        if let Some(first) = headline.first() {
            let _ = writeln!(b, "**{}**", text(first));
        }
        for line in headline.iter().skip(1) {
            let _ = writeln!(b, "\n{}", text(line));
        }
        let [d1, d2] = content::dump_summary(r);
        let _ = writeln!(b, "\n{}; {}\n", text(&d1), text(&d2));
        let figure = |b: &mut String, id: &str| {
            if let Some(c) = charts.iter().find(|c| c.id == id) {
                let _ = writeln!(
                    b,
                    "## {}\n\n![{}]({}/{}.svg)\n\n{}\n",
                    text(&c.title),
                    text(&c.title),
                    self.assets,
                    c.id,
                    text(&c.caption)
                );
            }
        };
        figure(&mut b, "bucket_shares");
        b.push_str("## Strategies side by side\n\n");
        b.push_str(&table(&content::strategies(r)));
        b.push_str(&table(&content::bucket_shares(r, false)));
        b.push_str(&table(&content::bucket_shares(r, true)));
        for n in content::selection_notes(r) {
            let _ = writeln!(b, "- {}", text(&n));
        }
        b.push('\n');
        for id in ["loss_vs_pt", "cdf_negatives", "cdf_positives", "gradient_density"] {
            figure(&mut b, id);
        }
        if let Some(sw) = &r.sweep {
            figure(&mut b, "heatmap");
            b.push_str("## Which gamma and alpha\n\n");
            b.push_str(&table(&content::sweep_grid(sw)));
            let (heading, rule, reasons, references) = content::recommendation(sw);
            let _ = writeln!(b, "**{}**\n\nRule: {}\n", text(&heading), text(&rule));
            for reason in reasons {
                let _ = writeln!(b, "- {}", text(&reason));
            }
            b.push('\n');
            for line in references {
                let _ = writeln!(b, "{}\n", text(&line));
            }
            b.push_str(&table(&content::cdf_summary(sw)));
        }
        if let Some(bd) = &r.breakdowns {
            for id in ["levels_neg_pos", "levels_easy", "classes_neg_pos", "classes_easy"] {
                figure(&mut b, id);
            }
            b.push_str("## Breakdowns\n\n");
            for t in content::breakdown_tables(bd) {
                b.push_str(&table(&t));
            }
            let limit = content::REPORT_CLASSES;
            let tables = [content::class_gradients(bd, limit), content::class_by_level(bd, limit)];
            if tables.iter().any(Option::is_some) {
                figure(&mut b, "class_level_easy");
                b.push_str("## Long-tailed classes\n\n");
                for t in tables.iter().flatten() {
                    b.push_str(&table(t));
                }
                for n in content::long_tail_notes(r, limit) {
                    let _ = writeln!(b, "- {}", text(&n));
                }
                b.push('\n');
            }
        }
        if !r.normalizers.is_empty() {
            b.push_str("## Normalisers\n\n");
            b.push_str(&table(&content::normalizers(r)));
        }
        if let Some(s) = &r.soft_targets {
            b.push_str("## Soft targets: irreducible and excess loss\n\n");
            b.push_str(&table(&content::soft_targets(s)));
        }
        b.push_str("## Health checks\n\n");
        if r.health.is_empty() {
            b.push_str("No findings.\n\n");
        }
        for h in &r.health {
            let _ = writeln!(b, "- **{}**: {}", h.level, text(&h.message));
            if let Some(fix) = &h.fix {
                let _ = writeln!(b, "  - fix: {}", text(fix));
            }
        }
        b.push_str("\n## How this report was made\n\n");
        let m = &r.metadata;
        if let Some(cmd) = &m.invocation {
            let _ = writeln!(b, "{}", code_block(cmd, "sh"));
        }
        let _ =
            writeln!(b, "hardmine {}; easy: p_t >= {}; inputs:\n", m.version, m.parameters.easy_threshold);
        for i in &m.inputs {
            let _ = writeln!(b, "- {}", code(i));
        }
        out.write_all(b.as_bytes())
    }
}

impl Markdown {
    /// A chart's section: heading, image link, caption.
    fn figure(&self, c: &Chart) -> String {
        format!(
            "## {}\n\n![{}]({}/{}.svg)\n\n{}\n\n",
            text(&c.title),
            text(&c.title),
            self.assets,
            c.id,
            text(&c.caption)
        )
    }
}

/// The provenance section: the command and each list of inputs.
fn provenance(invocation: Option<&str>, version: &str, inputs: &[(&str, &[String])]) -> String {
    let mut b = String::from("## How this report was made\n\n");
    if let Some(cmd) = invocation {
        let _ = writeln!(b, "{}", code_block(cmd, "sh"));
    }
    let _ = writeln!(b, "hardmine {}\n", text(version));
    for (title, list) in inputs {
        let _ = writeln!(b, "{}:\n", text(title));
        for i in *list {
            let _ = writeln!(b, "- {}", code(i));
        }
        b.push('\n');
    }
    b
}

/// Sentences as a list.
fn bullets(lines: &[String]) -> String {
    let mut b: String = lines.iter().map(|l| format!("- {}\n", text(l))).collect();
    b.push('\n');
    b
}

impl Renderer<TrendReport> for Markdown {
    fn render(&self, t: &TrendReport, out: &mut dyn Write) -> std::io::Result<()> {
        let charts = charts::runs::trend_charts(t).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut b = String::from("# hardmine trend\n\n");
        for (i, line) in runs::trend_headline(t).iter().enumerate() {
            let _ =
                if i == 0 { writeln!(b, "**{}**\n", text(line)) } else { writeln!(b, "{}\n", text(line)) };
        }
        for c in &charts {
            b.push_str(&self.figure(c));
        }
        b.push_str("## Group by group\n\n");
        b.push_str(&table(&runs::trend_overview(t)));
        if t.reported().next().is_some() {
            b.push_str(&table(&runs::trend_strategies(t, false)));
            b.push_str(&table(&runs::trend_strategies(t, true)));
            b.push_str(&table(&runs::trend_health(t)));
        }
        let _ = writeln!(
            b,
            "{}\n",
            text(&format!(
                "EN of dec: easy negatives' share of the decisions; EN of CE, EN of FL: their share of the CE and focal loss (easy: p_t >= {}); gamma, alpha: the sweep's recommendation; bal alpha: the balanced alpha at that gamma; neg logit: mean logit of the negatives (RetinaNet's prior {:.3}). Every figure of every group is in the JSON (--format json).",
                t.metadata.parameters.easy_threshold, t.metadata.prior_logit
            ))
        );
        let problems = runs::trend_problems(t);
        if !problems.is_empty() {
            b.push_str("## Groups without a result, rows left out\n\n");
            b.push_str(&bullets(&problems));
        }
        let m = &t.metadata;
        b.push_str(&provenance(m.invocation.as_deref(), &m.version, &[("Inputs", &m.inputs)]));
        out.write_all(b.as_bytes())
    }
}

impl Renderer<CompareReport> for Markdown {
    fn render(&self, c: &CompareReport, out: &mut dyn Write) -> std::io::Result<()> {
        let charts = charts::runs::compare_charts(c).map_err(|e| std::io::Error::other(e.to_string()))?;
        let chart = |id: &str| charts.iter().find(|c| c.id == id).map(|c| self.figure(c)).unwrap_or_default();
        let mut b = String::from("# hardmine compare\n\n");
        let lines = runs::compare_headline(c);
        if let Some(summary) = lines.last() {
            let _ = writeln!(b, "**{}**\n", text(summary));
        }
        b.push_str(&bullets(&lines[..lines.len().saturating_sub(1)]));
        b.push_str(&chart("compare_easy_shares"));
        b.push_str("## Side by side\n\n");
        b.push_str(&table(&runs::compare_summary(c)));
        b.push_str(&table(&runs::compare_strategies(c)));
        b.push_str(&chart("compare_moved"));
        if !c.moved_most.is_empty() {
            b.push_str("## The buckets that moved most\n\n");
            b.push_str(&table(&runs::compare_moved(c)));
        }
        b.push_str("## Health checks\n\n");
        b.push_str(&bullets(&runs::compare_health(c)));
        b.push_str("## Every figure\n\n");
        b.push_str(&table(&runs::compare_figures(c)));
        let m = &c.metadata;
        b.push_str(&provenance(
            m.invocation.as_deref(),
            &m.version,
            &[("A", &c.a.inputs), ("B", &c.b.inputs)],
        ));
        out.write_all(b.as_bytes())
    }
}
