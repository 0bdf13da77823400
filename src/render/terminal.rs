//! The human-readable table printed by default. Its first line answers the headline question:
//! how much of the loss do easy negatives carry under each strategy? Everything fits 100 columns.

use std::io::Write;

use super::content::{self, runs, TableData};
use super::format::wrap;
use super::table::Table;
use super::Renderer;
use crate::compare::CompareReport;
use crate::report::Report;
use crate::trend::TrendReport;

/// Width the text output keeps within.
pub const WIDTH: usize = 100;

/// The terminal table renderer.
pub struct Terminal {
    /// Highlight the headline and the easy-negative column with ANSI bold.
    pub color: bool,
}

impl Terminal {
    fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn table(&self, t: &TableData) -> String {
        let mut table = Table::new(&t.header.iter().map(String::as_str).collect::<Vec<_>>(), &t.align);
        for row in &t.rows {
            let cells = row
                .iter()
                .enumerate()
                .map(|(i, c)| if t.emphasis == Some(i) { self.bold(c) } else { c.clone() })
                .collect();
            table.row(cells);
        }
        table.render("")
    }

    /// A table whose cells may hold text from the dump (group values): control characters
    /// are shown escaped, so that a newline or an ANSI sequence in a value cannot start a row or
    /// recolour the terminal.
    fn plain_table(&self, t: &TableData) -> String {
        let mut t = t.clone();
        for row in &mut t.rows {
            for c in row.iter_mut() {
                *c = plain(c);
            }
        }
        self.table(&t)
    }
}

/// `s` with control characters escaped (`\n`, `\u{1b}`).
fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

impl Renderer<TrendReport> for Terminal {
    fn render(&self, t: &TrendReport, out: &mut dyn Write) -> std::io::Result<()> {
        for (i, line) in runs::trend_headline(t).iter().enumerate() {
            let line = plain(line);
            if i == 0 {
                writeln!(out, "{}", self.bold(&line))?;
            } else {
                write!(out, "{}", wrap(&line, WIDTH, "  ", "    "))?;
            }
        }
        writeln!(out)?;
        writeln!(out, "{}", self.plain_table(&runs::trend_overview(t)))?;
        if t.reported().next().is_some() {
            writeln!(out, "{}", self.plain_table(&runs::trend_strategies(t, false)))?;
            writeln!(out, "{}", self.plain_table(&runs::trend_strategies(t, true)))?;
            writeln!(out, "{}", self.plain_table(&runs::trend_health(t)))?;
        }
        let problems = runs::trend_problems(t);
        for p in &problems {
            // Error messages end with an indented "fix:" line.
            for (i, line) in p.lines().enumerate() {
                let first = if i == 0 { format!("{} ", self.bold("note:")) } else { "  ".to_string() };
                write!(out, "{}", wrap(&plain(line.trim_start()), WIDTH, &first, "    "))?;
            }
        }
        if !problems.is_empty() {
            writeln!(out)?;
        }
        let legend = format!(
            "EN of dec: easy negatives' share of the decisions; EN of CE, EN of FL: their share of the CE and focal loss (easy: p_t >= {}); gamma, alpha: the sweep's recommendation, bal alpha: the balanced alpha at that gamma; neg logit: mean logit of the negatives (RetinaNet's prior: {:.3}); every figure per group: --format json",
            t.metadata.parameters.easy_threshold, t.metadata.prior_logit
        );
        write!(out, "{}", wrap(&legend, WIDTH, "", "  "))
    }
}

impl Renderer<CompareReport> for Terminal {
    fn render(&self, c: &CompareReport, out: &mut dyn Write) -> std::io::Result<()> {
        for (i, line) in runs::compare_headline(c).iter().enumerate() {
            let line = plain(line);
            if i == 2 {
                // Bold after wrapping: escapes would count towards the width.
                for l in wrap(&line, WIDTH, "", "  ").lines() {
                    writeln!(out, "{}", self.bold(l))?;
                }
            } else {
                writeln!(out, "{line}")?;
            }
        }
        writeln!(out)?;
        writeln!(out, "{}", self.plain_table(&runs::compare_summary(c)))?;
        writeln!(out, "{}", self.plain_table(&runs::compare_strategies(c)))?;
        if !c.moved_most.is_empty() {
            writeln!(out, "{}", self.plain_table(&runs::compare_moved(c)))?;
        }
        for line in runs::compare_health(c) {
            write!(out, "{}", wrap(&line, WIDTH, "", "  "))?;
        }
        writeln!(out)?;
        write!(
            out,
            "{}",
            wrap(
                "EN share: the easy negatives' share of the strategy's loss; B - A in percentage points for shares; every figure (counts, losses, bucket shares, normalisers, the sweep): --format json or an HTML/Markdown report",
                WIDTH,
                "",
                "  "
            )
        )
    }
}

impl Renderer for Terminal {
    fn render(&self, r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
        let headline = content::headline(r);
        for (i, line) in headline.iter().enumerate() {
            let line = if i == 0 { self.bold(line) } else { format!("  {line}") };
            writeln!(out, "{line}")?;
        }
        writeln!(out)?;
        let [dump1, dump2] = content::dump_summary(r);
        writeln!(out, "dump  {dump1}\n      {dump2}\n")?;
        writeln!(out, "{}", self.table(&content::strategies(r)))?;
        writeln!(out, "{}", self.table(&content::bucket_shares(r, false)))?;
        writeln!(out, "{}", self.table(&content::bucket_shares(r, true)))?;
        let notes = content::selection_notes(r);
        for n in &notes {
            write!(out, "{}", wrap(n, WIDTH, "", "  "))?;
        }
        if !notes.is_empty() {
            writeln!(out)?;
        }
        if let Some(b) = &r.breakdowns {
            if !b.by_level.is_empty() {
                writeln!(out, "{}", self.table(&content::groups("FPN level", &b.by_level)))?;
            }
            let limit = content::TERMINAL_CLASSES;
            let tables = [content::class_gradients(b, limit), content::class_by_level(b, limit)];
            for t in tables.iter().flatten() {
                writeln!(out, "{}", self.table(t))?;
            }
            let notes = content::long_tail_notes(r, limit);
            for n in &notes {
                write!(out, "{}", wrap(n, WIDTH, "", "  "))?;
            }
            if !notes.is_empty() {
                writeln!(out)?;
            }
        }
        if let Some(sw) = &r.sweep {
            writeln!(out, "{}", self.table(&content::sweep_grid(sw)))?;
            let (heading, rule, reasons, references) = content::recommendation(sw);
            writeln!(out, "{heading}")?;
            write!(out, "{}", wrap(&rule, WIDTH, "  rule: ", "        "))?;
            for reason in &reasons {
                write!(out, "{}", wrap(reason, WIDTH, "  - ", "    "))?;
            }
            for line in &references {
                write!(out, "{}", wrap(line, WIDTH, "  ", "    "))?;
            }
            writeln!(out)?;
            writeln!(out, "{}", self.table(&content::cdf_summary(sw)))?;
        }
        if !r.normalizers.is_empty() {
            writeln!(out, "{}", self.table(&content::normalizers(r)))?;
        }
        if let Some(s) = &r.soft_targets {
            writeln!(out, "{}", self.table(&content::soft_targets(s)))?;
        }
        for h in &r.health {
            let tag = if h.level == "warning" { self.bold("warning:") } else { "note:".to_string() };
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
            r.metadata.parameters.easy_threshold
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
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }
}
