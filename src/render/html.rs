//! The HTML report: one self-contained page (inline CSS and SVG, no scripts, nothing fetched),
//! from the template and stylesheet in `assets/`, included at compile time.

use std::fmt::Write as _;
use std::io::Write;

use super::charts::{self, Chart};
use super::content::{self, runs, TableData};
use super::table::Align;
use super::Renderer;
use crate::compare::CompareReport;
use crate::report::Report;
use crate::trend::TrendReport;

const TEMPLATE: &str = include_str!("assets/report.html");
const CSS: &str = include_str!("assets/report.css");

/// The HTML renderer.
pub struct Html;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table(t: &TableData) -> String {
    let mut s = String::from("<table>\n<thead><tr>");
    for (h, a) in t.header.iter().zip(&t.align) {
        let class = if *a == Align::Right { " class=\"num\"" } else { "" };
        let _ = write!(s, "<th{class}>{}</th>", escape(h));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        s.push_str("<tr>");
        for (i, (c, a)) in row.iter().zip(&t.align).enumerate() {
            let mut classes = Vec::new();
            if *a == Align::Right {
                classes.push("num");
            }
            if t.emphasis == Some(i) {
                classes.push("emph");
            }
            let class =
                if classes.is_empty() { String::new() } else { format!(" class=\"{}\"", classes.join(" ")) };
            let _ = write!(s, "<td{class}>{}</td>", escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

fn figure(c: &Chart) -> String {
    format!(
        "<section id=\"{}\" class=\"chart\">\n<h2>{}</h2>\n<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>\n</section>\n",
        c.id,
        escape(&c.title),
        c.svg,
        escape(&c.caption)
    )
}

/// The page body.
fn body(r: &Report, charts: &[Chart]) -> String {
    let mut b = String::new();
    let chart = |id: &str| charts.iter().find(|c| c.id == id).map(figure).unwrap_or_default();
    let m = &r.metadata;
    let _ = writeln!(b, "<header>\n<h1>hardmine report</h1>");
    let headline = content::headline(r);
    if let Some(first) = headline.first() {
        let _ = writeln!(b, "<p class=\"headline\">{}</p>", escape(first));
    }
    for line in headline.iter().skip(1) {
        let _ = writeln!(b, "<p class=\"sub\">{}</p>", escape(line));
    }
    let [d1, d2] = content::dump_summary(r);
    let _ = writeln!(b, "<p class=\"meta\">{} &middot; {}</p>\n</header>", escape(&d1), escape(&d2));

    // 1. The headline chart, then the comparison table.
    b.push_str(&chart("bucket_shares"));
    b.push_str("<section id=\"strategies\">\n<h2>Strategies side by side</h2>\n");
    b.push_str(&table(&content::strategies(r)));
    b.push_str(&table(&content::bucket_shares(r, false)));
    b.push_str(&table(&content::bucket_shares(r, true)));
    for n in content::selection_notes(r) {
        let _ = writeln!(b, "<p class=\"note\">{}</p>", escape(&n));
    }
    b.push_str("</section>\n");
    // 2-4. Loss curves, CDFs, gradient density.
    for id in ["loss_vs_pt", "cdf_negatives", "cdf_positives", "gradient_density"] {
        b.push_str(&chart(id));
    }
    // 5. The sweep.
    if let Some(sw) = &r.sweep {
        b.push_str(&chart("heatmap"));
        b.push_str("<section id=\"recommendation\">\n<h2>Which gamma and alpha</h2>\n");
        b.push_str(&table(&content::sweep_grid(sw)));
        let (heading, rule, reasons, references) = content::recommendation(sw);
        let _ = writeln!(
            b,
            "<h3>{}</h3>\n<p><strong>Rule:</strong> {}</p>\n<ul class=\"reasons\">",
            escape(&heading),
            escape(&rule)
        );
        for reason in reasons {
            let _ = writeln!(b, "<li>{}</li>", escape(&reason));
        }
        b.push_str("</ul>\n");
        for line in references {
            let _ = writeln!(b, "<p class=\"note\">{}</p>", escape(&line));
        }
        b.push_str(&table(&content::cdf_summary(sw)));
        b.push_str("</section>\n");
    }
    // 6. Imbalance by level and class.
    if let Some(bd) = &r.breakdowns {
        for id in ["levels_neg_pos", "levels_easy", "classes_neg_pos", "classes_easy"] {
            b.push_str(&chart(id));
        }
        b.push_str("<section id=\"breakdowns\">\n<h2>Breakdowns</h2>\n");
        for t in content::breakdown_tables(bd) {
            b.push_str(&table(&t));
        }
        b.push_str("</section>\n");
        // 6b. Long-tailed classes: the gradient balance, the class x level heatmap and table.
        let limit = content::REPORT_CLASSES;
        let tables = [content::class_gradients(bd, limit), content::class_by_level(bd, limit)];
        if tables.iter().any(Option::is_some) {
            b.push_str(&chart("class_level_easy"));
            b.push_str("<section id=\"long_tail\">\n<h2>Long-tailed classes</h2>\n");
            for t in tables.iter().flatten() {
                b.push_str(&table(t));
            }
            for n in content::long_tail_notes(r, limit) {
                let _ = writeln!(b, "<p class=\"note\">{}</p>", escape(&n));
            }
            b.push_str("</section>\n");
        }
    }
    // 7. Normalisers, health, provenance.
    if !r.normalizers.is_empty() {
        b.push_str("<section id=\"normalizers\">\n<h2>Normalisers</h2>\n");
        b.push_str(&table(&content::normalizers(r)));
        b.push_str("</section>\n");
    }
    if let Some(s) = &r.soft_targets {
        b.push_str("<section id=\"soft-targets\">\n<h2>Soft targets: irreducible and excess loss</h2>\n");
        b.push_str(&table(&content::soft_targets(s)));
        b.push_str("</section>\n");
    }
    b.push_str("<section id=\"health\">\n<h2>Health checks</h2>\n");
    if r.health.is_empty() {
        b.push_str("<p class=\"note\">No findings.</p>\n");
    }
    for h in &r.health {
        let _ = writeln!(
            b,
            "<div class=\"health {}\"><strong>{}:</strong> {}{}</div>",
            escape(&h.level),
            escape(&h.level),
            escape(&h.message),
            h.fix
                .as_ref()
                .map_or(String::new(), |f| format!("<br><span class=\"fix\">fix: {}</span>", escape(f)))
        );
    }
    b.push_str("</section>\n");
    b.push_str("<section id=\"provenance\">\n<h2>How this report was made</h2>\n");
    if let Some(cmd) = &m.invocation {
        let _ = writeln!(b, "<pre>{}</pre>", escape(cmd));
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">hardmine {} &middot; easy: p_t &ge; {} &middot; normalized = mean over images of loss / max(1, positives in the image)</p>",
        escape(&m.version),
        m.parameters.easy_threshold
    );
    b.push_str("<h3>Inputs</h3>\n<ul>\n");
    for i in &m.inputs {
        let _ = writeln!(b, "<li><code>{}</code></li>", escape(i));
    }
    b.push_str("</ul>\n</section>\n");
    b
}

/// The page around `body`.
fn page(version: &str, title: &str, body: &str) -> String {
    TEMPLATE
        .replace("{{version}}", &escape(version))
        .replace("{{title}}", title)
        .replace("{{css}}", CSS)
        .replace("{{body}}", body)
}

impl Renderer for Html {
    fn render(&self, r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
        let charts = charts::charts(r).map_err(|e| std::io::Error::other(e.to_string()))?;
        out.write_all(page(&r.metadata.version, "hardmine report", &body(r, &charts)).as_bytes())
    }
}

/// The header: a title, the first line as the headline, the others below it.
fn header(title: &str, lines: &[String]) -> String {
    let mut b = format!("<header>\n<h1>{title}</h1>\n");
    for (i, line) in lines.iter().enumerate() {
        let class = if i == 0 { "headline" } else { "sub" };
        let _ = writeln!(b, "<p class=\"{class}\">{}</p>", escape(line));
    }
    b.push_str("</header>\n");
    b
}

/// The provenance section: the command and each list of inputs.
fn provenance(invocation: Option<&str>, version: &str, inputs: &[(&str, &[String])]) -> String {
    let mut b = String::from("<section id=\"provenance\">\n<h2>How this report was made</h2>\n");
    if let Some(cmd) = invocation {
        let _ = writeln!(b, "<pre>{}</pre>", escape(cmd));
    }
    let _ = writeln!(b, "<p class=\"note\">hardmine {}</p>", escape(version));
    for (title, list) in inputs {
        let _ = writeln!(b, "<h3>{}</h3>\n<ul>", escape(title));
        for i in *list {
            let _ = writeln!(b, "<li><code>{}</code></li>", escape(i));
        }
        b.push_str("</ul>\n");
    }
    b.push_str("</section>\n");
    b
}

/// Sentences as notes.
fn notes(lines: &[String]) -> String {
    lines.iter().map(|n| format!("<p class=\"note\">{}</p>\n", escape(n))).collect()
}

impl Renderer<TrendReport> for Html {
    fn render(&self, t: &TrendReport, out: &mut dyn Write) -> std::io::Result<()> {
        let charts = charts::runs::trend_charts(t).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut b = header("hardmine trend", &runs::trend_headline(t));
        for c in &charts {
            b.push_str(&figure(c));
        }
        b.push_str("<section id=\"groups\">\n<h2>Group by group</h2>\n");
        b.push_str(&table(&runs::trend_overview(t)));
        if t.reported().next().is_some() {
            b.push_str(&table(&runs::trend_strategies(t, false)));
            b.push_str(&table(&runs::trend_strategies(t, true)));
            b.push_str(&table(&runs::trend_health(t)));
        }
        b.push_str(&notes(&[format!(
            "EN of dec: easy negatives' share of the decisions; EN of CE, EN of FL: their share of the CE and focal loss (easy: p_t \u{2265} {}); gamma, alpha: the sweep's recommendation; bal alpha: the balanced alpha at that gamma; neg logit: mean logit of the negatives (RetinaNet's prior {:.3}). Every figure of every group is in the JSON (--format json).",
            t.metadata.parameters.easy_threshold, t.metadata.prior_logit
        )]));
        b.push_str("</section>\n");
        let problems = runs::trend_problems(t);
        if !problems.is_empty() {
            b.push_str("<section id=\"problems\">\n<h2>Groups without a result, rows left out</h2>\n");
            b.push_str(&notes(&problems));
            b.push_str("</section>\n");
        }
        let m = &t.metadata;
        b.push_str(&provenance(m.invocation.as_deref(), &m.version, &[("Inputs", &m.inputs)]));
        out.write_all(page(&m.version, "hardmine trend", &b).as_bytes())
    }
}

impl Renderer<CompareReport> for Html {
    fn render(&self, c: &CompareReport, out: &mut dyn Write) -> std::io::Result<()> {
        let charts = charts::runs::compare_charts(c).map_err(|e| std::io::Error::other(e.to_string()))?;
        let chart = |id: &str| charts.iter().find(|c| c.id == id).map(figure).unwrap_or_default();
        let mut lines = runs::compare_headline(c);
        // The summary sentence first, then the two sides.
        lines.rotate_right(1);
        let mut b = header("hardmine compare", &lines);
        b.push_str(&chart("compare_easy_shares"));
        b.push_str("<section id=\"side_by_side\">\n<h2>Side by side</h2>\n");
        b.push_str(&table(&runs::compare_summary(c)));
        b.push_str(&table(&runs::compare_strategies(c)));
        b.push_str("</section>\n");
        b.push_str(&chart("compare_moved"));
        if !c.moved_most.is_empty() {
            b.push_str("<section id=\"moved\">\n<h2>The buckets that moved most</h2>\n");
            b.push_str(&table(&runs::compare_moved(c)));
            b.push_str("</section>\n");
        }
        b.push_str("<section id=\"health\">\n<h2>Health checks</h2>\n");
        b.push_str(&notes(&runs::compare_health(c)));
        b.push_str("</section>\n");
        b.push_str("<section id=\"figures\">\n<h2>Every figure</h2>\n");
        b.push_str(&table(&runs::compare_figures(c)));
        b.push_str("</section>\n");
        let m = &c.metadata;
        b.push_str(&provenance(
            m.invocation.as_deref(),
            &m.version,
            &[("A", &c.a.inputs), ("B", &c.b.inputs)],
        ));
        out.write_all(page(&m.version, "hardmine compare", &b).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::sample_report;

    #[test]
    fn text_from_the_dump_is_escaped() {
        assert_eq!(escape("<img src=x onerror=\"a\">&"), "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;");
    }

    #[test]
    fn the_page_is_self_contained() {
        let mut buf = Vec::new();
        Html.render(&sample_report(), &mut buf).unwrap();
        let page = String::from_utf8(buf).unwrap();
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<section id=\"bucket_shares\""));
        for forbidden in ["<script", "http://", "https://", "<link", "@import", "url("] {
            let hits: Vec<_> = page.match_indices(forbidden).collect();
            // The SVG namespace is an identifier, not a fetch.
            let real =
                hits.iter().filter(|(i, _)| !page[*i..].starts_with("http://www.w3.org/2000/svg")).count();
            assert_eq!(real, 0, "{forbidden} in the page");
        }
    }
}
