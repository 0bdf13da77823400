//! What the human-readable formats say about several runs: a trend over groups and a
//! comparison of two runs, as headlines and tables of strings shared by the terminal, Markdown
//! and HTML renderers.

use super::super::format::{count, number, percent};
use super::TableData;
use crate::compare::{CompareReport, Figure};
use crate::report::AlphaSource;
use crate::trend::{Summary, TrendGroup, TrendReport};

/// The first strategy's easy negatives as a share of the decisions.
pub fn easy_negative_decisions(s: &Summary) -> Option<f64> {
    let first = s.strategies.first()?;
    (s.dataset.decisions > 0).then(|| first.buckets.easy_negative.count as f64 / s.dataset.decisions as f64)
}

/// The easy negatives' share of strategy `name`'s loss.
pub fn easy_negative_share(s: &Summary, name: &str) -> Option<f64> {
    s.strategy(name).map(|x| x.buckets.easy_negative.loss_share)
}

/// The recommended gamma (none without a sweep or positives).
pub fn recommended_gamma(s: &Summary) -> Option<f64> {
    s.sweep.as_ref().filter(|w| w.alpha_source != AlphaSource::None).map(|w| w.gamma)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// "step 3" or the path, as a row label.
pub fn group_label(t: &TrendReport, g: &TrendGroup) -> String {
    if t.metadata.by == "path" {
        g.label()
    } else {
        format!("{} {}", t.metadata.by, g.label())
    }
}

/// A figure's first and last value over the reported groups, as "a -> b".
fn drift(
    t: &TrendReport,
    f: impl Fn(&Summary) -> Option<f64>,
    show: impl Fn(f64) -> String,
) -> Option<String> {
    let values: Vec<f64> = t.reported().filter_map(|(_, s)| f(s)).collect();
    match values.as_slice() {
        [] => None,
        [one] => Some(show(*one)),
        [first, .., last] => Some(format!("{} -> {}", show(*first), show(*last))),
    }
}

/// The trend's headline lines: what drifted from the first group to the last.
pub fn trend_headline(t: &TrendReport) -> Vec<String> {
    let n = t.groups.len();
    let reported = t.reported().count();
    let by = &t.metadata.by;
    let span = match (t.groups.first(), t.groups.last()) {
        (Some(a), Some(b)) if n > 1 && by != "path" => format!(" ({} to {})", a.label(), b.label()),
        _ => String::new(),
    };
    let mut lines = vec![format!(
        "{n} group{} by {by}{span}{}",
        if n == 1 { "" } else { "s" },
        if reported < n {
            format!(", {reported} analysed ({} failed: see below)", n - reported)
        } else {
            String::new()
        }
    )];
    let mut parts = Vec::new();
    if let Some(d) = drift(t, |s| easy_negative_share(s, "ce"), percent) {
        parts.push(format!("{d} of CE loss"));
    }
    if let Some(d) = drift(t, |s| easy_negative_share(s, "focal"), percent) {
        parts.push(format!("{d} of focal loss"));
    }
    if !parts.is_empty() {
        lines.push(format!("easy negatives carry {}", parts.join(", ")));
    }
    let mut more = Vec::new();
    if let Some(d) = drift(t, recommended_gamma, |g| g.to_string()) {
        more.push(format!("recommended gamma {d}"));
    }
    if let Some(d) = drift(t, |s| Some(s.positives_per_image), number) {
        more.push(format!("positives per image {d}"));
    }
    if let Some(d) = drift(t, |s| s.mean_negative_logit, |x| format!("{x:.3}")) {
        more.push(format!("mean negative logit {d} (prior {:.3})", t.metadata.prior_logit));
    }
    if !more.is_empty() {
        lines.push(more.join("; "));
    }
    lines
}

/// One row per group: counts, the easy negatives' shares, the recommendation, the mean
/// negative logit and the number of health findings.
pub fn trend_overview(t: &TrendReport) -> TableData {
    let mut t2 = TableData::new(&[
        &t.metadata.by,
        "images",
        "pos/image",
        "EN of dec",
        "EN of CE",
        "EN of FL",
        "gamma",
        "alpha",
        "bal alpha",
        "neg logit",
    ]);
    t2.emphasis = Some(5);
    for g in &t.groups {
        let mut row = vec![g.label()];
        match &g.report {
            Some(s) => {
                let sw = s.sweep.as_ref().filter(|w| w.alpha_source != AlphaSource::None);
                row.extend([
                    count(s.dataset.images),
                    number(s.positives_per_image),
                    opt(easy_negative_decisions(s), percent),
                    opt(easy_negative_share(s, "ce"), percent),
                    opt(easy_negative_share(s, "focal"), percent),
                    opt(sw.map(|w| w.gamma), |g| g.to_string()),
                    opt(sw.map(|w| w.alpha), |a| format!("{a:.3}")),
                    opt(sw.and_then(|w| w.balanced_alpha), |a| format!("{a:.3}")),
                    opt(s.mean_negative_logit, |x| format!("{x:.3}")),
                ]);
            }
            None => row.extend(std::iter::repeat_n("-".to_string(), 9)),
        }
        t2.rows.push(row);
    }
    t2
}

/// One row per group, one column per strategy: the easy negatives' share of its loss
/// (`normalized`: false) or its normalised loss (true).
pub fn trend_strategies(t: &TrendReport, normalized: bool) -> TableData {
    let names: Vec<String> = t
        .reported()
        .flat_map(|(_, s)| s.strategies.iter().map(|x| x.name.clone()))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let title = if normalized { "normalized loss" } else { "EN share of loss" };
    let mut header = vec![format!("{title} ({})", t.metadata.by)];
    header.extend(names.iter().cloned());
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = TableData::new(&refs);
    for g in &t.groups {
        let Some(s) = &g.report else { continue };
        let mut row = vec![g.label()];
        for n in &names {
            row.push(opt(
                s.strategy(n).map(|x| {
                    if normalized {
                        x.loss.normalized
                    } else {
                        x.buckets.easy_negative.loss_share
                    }
                }),
                |v| {
                    if normalized {
                        number(v)
                    } else {
                        percent(v)
                    }
                },
            ));
        }
        table.rows.push(row);
    }
    table
}

/// Each group's health codes (`!` marks a warning).
pub fn trend_health(t: &TrendReport) -> TableData {
    let mut table = TableData::new(&[&t.metadata.by, "health findings (! = warning)"]);
    table.align[1] = super::Align::Left;
    for (g, s) in t.reported() {
        let codes: Vec<String> = s
            .health
            .iter()
            .map(|h| if h.level == "warning" { format!("{}!", h.code) } else { h.code.clone() })
            .collect();
        table.rows.push(vec![g.label(), if codes.is_empty() { "-".into() } else { codes.join(" ") }]);
    }
    table
}

/// Sentences about groups without a summary and rows left out of every group.
pub fn trend_problems(t: &TrendReport) -> Vec<String> {
    let mut out: Vec<String> = t
        .groups
        .iter()
        .filter_map(|g| g.error.as_ref().map(|e| format!("{}: {e}", group_label(t, g))))
        .collect();
    out.extend(t.left_out.iter().cloned());
    out
}

/// A signed difference: shares in percentage points, other figures as numbers.
pub fn difference(name: &str, d: f64) -> String {
    let sign = if d > 0.0 {
        "+"
    } else if d < 0.0 {
        "-"
    } else {
        ""
    };
    if is_share(name) {
        if d == 0.0 {
            "0".into()
        } else {
            format!("{sign}{} pts", percent(d.abs()).trim_end_matches('%'))
        }
    } else if d == 0.0 {
        "0".into()
    } else {
        format!("{sign}{}", number(d.abs()))
    }
}

fn is_share(name: &str) -> bool {
    name.ends_with("_share") || name.ends_with("share_of_negatives")
}

/// A figure's value for display.
pub fn value(name: &str, v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if is_share(name) => percent(v),
        Some(v) if name.starts_with("dataset.") && !name.contains("per_") => count(v.round() as u64),
        Some(v) => number(v),
    }
}

/// The comparison's headline lines.
pub fn compare_headline(c: &CompareReport) -> Vec<String> {
    let mut lines = vec![
        format!("A: {} ({})", c.a.label, kind(c.a.kind)),
        format!("B: {} ({})", c.b.label, kind(c.b.kind)),
    ];
    let changed = c.figures.iter().filter(|f| f.difference.is_some_and(|d| d != 0.0)).count();
    let one_sided = c.figures.iter().filter(|f| f.difference.is_none()).count();
    let mut summary = format!("{changed} of {} figures differ", c.figures.len());
    if one_sided > 0 {
        summary.push_str(&format!(", {one_sided} only on one side"));
    }
    if let Some(m) = c.moved_most.first() {
        summary.push_str(&format!(
            "; most moved: {} {} share {} -> {} ({})",
            m.strategy,
            m.bucket.replace('_', " "),
            percent(m.a),
            percent(m.b),
            difference("loss_share", m.difference)
        ));
    }
    lines.push(summary);
    lines
}

fn kind(k: crate::compare::SideKind) -> &'static str {
    match k {
        crate::compare::SideKind::Dump => "dump",
        crate::compare::SideKind::State => "saved state",
    }
}

fn figure_row(label: &str, f: &Figure) -> Vec<String> {
    vec![
        label.to_string(),
        value(&f.name, f.a),
        value(&f.name, f.b),
        f.difference.map_or("-".into(), |d| difference(&f.name, d)),
    ]
}

/// The headline figures: dataset, recommendation and mean negative logit.
pub fn compare_summary(c: &CompareReport) -> TableData {
    let mut t = TableData::new(&["figure", "A", "B", "B - A"]);
    let pick = [
        ("dataset.images", "images"),
        ("dataset.decisions", "decisions"),
        ("dataset.positives", "positives"),
        ("positives_per_image", "positives per image"),
        ("sweep.recommendation.gamma", "recommended gamma"),
        ("sweep.recommendation.alpha", "recommended alpha"),
        ("sweep.recommendation.balanced_alpha", "balanced alpha"),
        ("mean_negative_logit", "mean negative logit"),
    ];
    for (name, label) in pick {
        if let Some(f) = c.figures.iter().find(|f| f.name == name) {
            t.rows.push(figure_row(label, f));
        }
    }
    t
}

/// Per strategy: easy-negative share and normalised loss on both sides, with the differences.
pub fn compare_strategies(c: &CompareReport) -> TableData {
    let mut t = TableData::new(&["strategy", "EN share A", "B", "B - A", "normalized A", "B", "B - A"]);
    t.emphasis = Some(3);
    let mut names: Vec<&str> = c.a.report.strategies.iter().map(|s| s.name.as_str()).collect();
    for s in &c.b.report.strategies {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    for n in names {
        let f = |suffix: &str| c.figures.iter().find(|f| f.name == format!("strategies.{n}.{suffix}"));
        let mut row = vec![n.to_string()];
        for suffix in ["buckets.easy_negative.loss_share", "loss.normalized"] {
            match f(suffix) {
                Some(fig) => row.extend(figure_row("", fig).into_iter().skip(1)),
                None => row.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
            }
        }
        t.rows.push(row);
    }
    t
}

/// The buckets whose loss share moved most.
pub fn compare_moved(c: &CompareReport) -> TableData {
    let mut t = TableData::new(&["moved most", "bucket", "A", "B", "B - A"]);
    t.align[1] = super::Align::Left;
    t.emphasis = Some(4);
    for m in &c.moved_most {
        t.rows.push(vec![
            m.strategy.clone(),
            m.bucket.replace('_', " "),
            percent(m.a),
            percent(m.b),
            difference("loss_share", m.difference),
        ]);
    }
    t
}

/// Every figure, by its JSON name.
pub fn compare_figures(c: &CompareReport) -> TableData {
    let mut t = TableData::new(&["figure", "A", "B", "B - A"]);
    for f in &c.figures {
        t.rows.push(figure_row(&f.name, f));
    }
    t
}

/// The health codes each side reports, as sentences.
pub fn compare_health(c: &CompareReport) -> Vec<String> {
    let h = &c.health;
    let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    vec![
        format!("health on both: {}", list(&h.both)),
        format!("only on A: {}; only on B: {}", list(&h.only_a), list(&h.only_b)),
    ]
}
