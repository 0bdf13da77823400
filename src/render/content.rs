//! What the human-readable formats say, independent of how they say it: the headline, the dump
//! summary, and every table as rows of strings. The terminal, Markdown and HTML renderers format
//! these same pieces, so the three never disagree.

pub mod runs;

use super::format::{count, number, percent};
use super::table::Align;
use crate::report::{AlphaSource, Breakdowns, BucketReport, GroupRow, Report, StrategyReport, SweepReport};

/// Classes listed by the terminal's long-tail tables.
pub const TERMINAL_CLASSES: usize = 5;
/// Classes listed by the long-tail tables and heatmap of the Markdown and HTML reports.
pub const REPORT_CLASSES: usize = 100;

/// A table as data: header, column alignment and rows of cells.
#[derive(Clone, Debug, PartialEq)]
pub struct TableData {
    /// Column titles.
    pub header: Vec<String>,
    /// Alignment of each column.
    pub align: Vec<Align>,
    /// The rows.
    pub rows: Vec<Vec<String>>,
    /// A column to emphasise (the easy-negative share, the gradient ratio), if any.
    pub emphasis: Option<usize>,
}

impl TableData {
    fn new(header: &[&str]) -> TableData {
        let mut align = vec![Align::Left];
        align.extend(std::iter::repeat_n(Align::Right, header.len().saturating_sub(1)));
        TableData {
            header: header.iter().map(|s| s.to_string()).collect(),
            align,
            rows: Vec::new(),
            emphasis: None,
        }
    }
}

/// A strategy's display name in prose.
pub fn prose_name(name: &str) -> &str {
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
pub fn headline(report: &Report) -> Vec<String> {
    let d = &report.dataset;
    if d.decisions == 0 {
        return vec!["no decisions: every anchor in the dump is ignored (label -2)".into()];
    }
    let Some(first) = report.strategies.first() else { return Vec::new() };
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
    let mut lines = vec![format!("easy negatives: {}", parts.join(", "))];
    if !rest.is_empty() {
        let others: Vec<String> = rest
            .iter()
            .map(|s| format!("{} {}", prose_name(&s.name), percent(s.buckets.easy_negative.loss_share)))
            .collect();
        lines.push(format!("and of their loss under {}", others.join(", ")));
    }
    lines
}

/// Two lines describing the dump.
pub fn dump_summary(r: &Report) -> [String; 2] {
    let (m, d) = (&r.metadata, &r.dataset);
    let first = format!(
        "{} file{}, {} image{}, {} {} {}, {} class{}",
        d.files,
        if d.files == 1 { "" } else { "s" },
        count(d.images),
        if d.images == 1 { "" } else { "s" },
        m.layout,
        m.activation,
        m.scores,
        m.classes,
        if m.classes == 1 { "" } else { "es" }
    );
    let anchors = match d.anchors {
        Some(a) => format!("{} anchors, {} ignored; ", count(a), count(d.ignored)),
        None => String::new(),
    };
    let mut second = format!(
        "{anchors}{} decisions: {} positive, {} negative",
        count(d.decisions),
        count(d.positives),
        count(d.negatives)
    );
    if !d.skipped.is_empty() {
        let total: u64 = d.skipped.values().sum();
        let reasons: Vec<String> = d.skipped.iter().map(|(k, n)| format!("{} {k}", count(*n))).collect();
        second.push_str(&format!(
            "; skipped {} invalid row{} ({})",
            count(total),
            if total == 1 { "" } else { "s" },
            reasons.join(", ")
        ));
    }
    [first, second]
}

/// Strategies: parameters, selected decisions, total and normalised loss.
pub fn strategies(r: &Report) -> TableData {
    let mut t = TableData::new(&["strategy", "params", "selected", "total loss", "normalized"]);
    t.align[1] = Align::Left;
    for s in &r.strategies {
        t.rows.push(vec![
            s.name.clone(),
            params_text(s, "=", " "),
            count(s.selected.round() as u64),
            number(s.loss.total),
            number(s.loss.normalized),
        ]);
    }
    t
}

/// Bucket shares of each strategy's loss (or gradient), optionally with the decision shares.
pub fn bucket_shares(r: &Report, grad: bool) -> TableData {
    let title = if grad { "share of |grad|" } else { "share of loss" };
    let mut t = TableData::new(&[title, "easy neg", "hard neg", "easy pos", "hard pos"]);
    t.emphasis = Some(1);
    let pick = |b: &BucketReport| if grad { b.grad_share } else { b.loss_share };
    for s in &r.strategies {
        let mut cells = vec![s.name.clone()];
        cells.extend(s.buckets.iter().iter().map(|(_, b)| percent(pick(b))));
        t.rows.push(cells);
    }
    let d = r.dataset.decisions;
    if let (false, Some(s)) = (grad, r.strategies.first()) {
        let mut cells = vec!["(decisions)".to_string()];
        cells.extend(
            s.buckets
                .iter()
                .iter()
                .map(|(_, b)| percent(if d > 0 { b.count as f64 / d as f64 } else { 0.0 })),
        );
        t.rows.push(cells);
    }
    t
}

/// A breakdown table (neg:pos, easy-negative shares, loss shares).
pub fn groups(title: &str, rows: &[GroupRow]) -> TableData {
    let mut t = TableData::new(&[
        title,
        "decisions",
        "neg:pos",
        "easy neg",
        "EN of CE",
        "EN of FL",
        "CE share",
        "FL share",
    ]);
    for g in rows {
        t.rows.push(vec![
            key_text(&g.key),
            count(g.decisions),
            g.neg_pos_ratio.map_or("-".into(), |x| format!("{x:.0}")),
            percent(g.easy_negative_share),
            percent(g.easy_negative_ce_share),
            percent(g.easy_negative_focal_share),
            percent(g.ce_share),
            percent(g.focal_share),
        ]);
    }
    t
}

/// The breakdown tables (level, IoU band, class, top images), those with rows.
pub fn breakdown_tables(b: &crate::report::Breakdowns) -> Vec<TableData> {
    [
        ("FPN level", &b.by_level),
        ("IoU band", &b.by_iou),
        ("class", &b.by_class),
        ("image (top by focal loss)", &b.top_images_by_loss),
        ("image (top by easy-negative share)", &b.top_images_by_easy_negative_share),
    ]
    .into_iter()
    .filter(|(_, rows)| !rows.is_empty())
    .map(|(title, rows)| groups(title, rows))
    .collect()
}

/// A group key as text (strings without their quotes).
pub fn key_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The class rows, most suppressed first: by the smallest positive-to-negative gradient ratio
/// (EQLv2's sign of a class whose positives are drowned by its negatives), classes without a
/// ratio (no negative gradient) last, ties in class order; in class order when the report has
/// no gradient balance (softmax dumps).
pub fn classes_by_suppression(b: &Breakdowns) -> Vec<&GroupRow> {
    let mut rows: Vec<&GroupRow> = b.by_class.iter().collect();
    let ratio = |r: &GroupRow| r.ce_gradient.and_then(|g| g.pos_neg_ratio).unwrap_or(f64::INFINITY);
    rows.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    rows
}

/// The gradient balance of the `limit` most suppressed classes (None without one).
pub fn class_gradients(b: &Breakdowns, limit: usize) -> Option<TableData> {
    let rows = classes_by_suppression(b);
    if rows.iter().all(|r| r.ce_gradient.is_none()) {
        return None;
    }
    let mut t = TableData::new(&["class", "positives", "neg:pos", "grad pos", "grad neg", "grad pos:neg"]);
    t.emphasis = Some(5);
    for r in rows.into_iter().take(limit) {
        let Some(g) = r.ce_gradient else { continue };
        t.rows.push(vec![
            key_text(&r.key),
            count(r.positives),
            r.neg_pos_ratio.map_or("-".into(), |x| format!("{x:.0}")),
            number(g.positive),
            number(g.negative),
            g.pos_neg_ratio.map_or("-".into(), number),
        ]);
    }
    Some(t)
}

/// The FPN levels of the class x level cells, in order.
pub fn cell_levels(b: &Breakdowns) -> Vec<i64> {
    let mut levels: Vec<i64> = b.class_by_level.iter().map(|c| c.level).collect();
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// The easy negatives' share of each cell's focal loss, for the `limit` most suppressed
/// classes (rows) and every level (columns); a dash where the class has no decision at that
/// level (None without a level column).
pub fn class_by_level(b: &Breakdowns, limit: usize) -> Option<TableData> {
    if b.class_by_level.is_empty() {
        return None;
    }
    let levels = cell_levels(b);
    let mut header = vec!["class (EN of FL)".to_string()];
    header.extend(levels.iter().map(|l| format!("level {l}")));
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = TableData::new(&refs);
    for r in classes_by_suppression(b).into_iter().take(limit) {
        let class = r.key.as_u64();
        let mut row = vec![key_text(&r.key)];
        for &l in &levels {
            let cell = b.class_by_level.iter().find(|c| Some(c.class) == class && c.level == l);
            row.push(cell.map_or("-".into(), |c| percent(c.easy_negative_focal_share)));
        }
        t.rows.push(row);
    }
    Some(t)
}

/// What the long-tail tables show, and which classes they leave out, as sentences (empty
/// without class rows).
pub fn long_tail_notes(r: &Report, limit: usize) -> Vec<String> {
    let Some(b) = &r.breakdowns else { return Vec::new() };
    let n = b.by_class.len();
    let gradients = b.by_class.iter().any(|r| r.ce_gradient.is_some());
    if n == 0 || (!gradients && b.class_by_level.is_empty()) {
        return Vec::new();
    }
    let mut notes = Vec::new();
    if gradients {
        notes.push(
            "grad pos, grad neg: |p - y| (the BCE gradient with respect to the logit) summed over the class's positives and over its negatives; a small pos:neg marks a class whose positives are drowned by its negatives (EQLv2's suppressed classes), listed first."
                .to_string(),
        );
    }
    if !b.class_by_level.is_empty() {
        let p = &r.metadata.parameters;
        let alpha = p.alpha.map_or("no alpha".to_string(), |a| format!("alpha {a}"));
        notes.push(format!(
            "EN of FL: the easy negatives' share of the class's focal loss (gamma {}, {alpha}) per FPN level; -: no decisions.",
            p.gamma
        ));
    }
    if n > limit {
        let which = if gradients { "most suppressed" } else { "first" };
        notes.push(format!(
            "showing the {limit} {which} of {n} classes; every class is in the JSON (breakdowns.by_class, breakdowns.class_by_level)."
        ));
    }
    notes
}

/// Selection overlaps and the sampler's spread, as sentences.
pub fn selection_notes(r: &Report) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(o) = &r.overlaps {
        let pairs: Vec<String> =
            o.jaccard.iter().map(|j| format!("{}~{} {:.2}", j.a, j.b, j.jaccard)).collect();
        if !pairs.is_empty() {
            notes.push(format!("selection overlap (Jaccard, in decisions): {}", pairs.join(", ")));
        }
        if let Some(f) = o.focal_share_in_ohem {
            notes.push(format!("the OHEM selection carries {} of the focal loss", percent(f)));
        }
    }
    if let Some(d) = r.strategy("sampled").and_then(|s| s.extra.get("draws")) {
        let en = &d["loss_share"]["easy_negative"];
        let f = |v: &serde_json::Value| percent(v.as_f64().unwrap_or(0.0));
        notes.push(format!(
            "sampled over {} seeded draws: easy-negative share {} +- {} (95%: {} to {})",
            d["n"],
            f(&en["mean"]),
            f(&en["std"]),
            f(&en["ci95"][0]),
            f(&en["ci95"][1])
        ));
    }
    notes
}

/// The sweep grid: easy-negative share per (gamma, alpha), then per gamma the rule's E / N (the
/// easy negatives' share of the negatives' loss), the balanced alpha and the paper's alpha.
pub fn sweep_grid(sw: &SweepReport) -> TableData {
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
    let mut header: Vec<String> = vec!["easy-neg share".into()];
    header.extend(alphas.iter().map(|a| a.map_or("no alpha".to_string(), |a| format!("a={a}"))));
    header.extend(["EN of neg".into(), "balanced a".into(), "paper a".into()]);
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = TableData::new(&refs);
    for (gi, &g) in gammas.iter().enumerate() {
        let mut row = vec![format!("gamma {g}")];
        for a in &alphas {
            let cell = sw.grid.iter().find(|c| c.gamma == g && c.alpha == *a);
            row.push(cell.map_or("-".into(), |c| percent(c.buckets.easy_negative.loss_share)));
        }
        let rule = sw.by_gamma.get(gi);
        row.push(rule.map_or("-".into(), |r| percent(r.easy_negative_share_of_negatives)));
        row.push(format!("{:.3}", sw.balanced_alpha.get(gi).map_or(0.0, |b| b.alpha)));
        row.push(rule.map_or("-".into(), |r| format!("{:.3}", r.paper_alpha)));
        t.rows.push(row);
    }
    t
}

/// The recommendation, its rule and reasons, and the paper's reference numbers, as lines:
/// `(heading, rule, reasons, references)`.
pub fn recommendation(sw: &SweepReport) -> (String, String, Vec<String>, Vec<String>) {
    let rec = &sw.recommendation;
    let table: Vec<String> =
        sw.table_1b.iter().map(|r| format!("{} ({}) {:.1}", r.gamma, r.alpha, r.ap)).collect();
    (
        if rec.target_met {
            format!("recommendation: gamma {}, alpha {:.3}", rec.gamma, rec.alpha)
        } else if rec.alpha_source == AlphaSource::None {
            // A dump without positives: the reasons say why.
            "no recommendation: the dump has no positive decisions".to_string()
        } else {
            // The reasons say how close the grid came.
            format!("recommendation (target not met): gamma {}, alpha {:.3}", rec.gamma, rec.alpha)
        },
        rec.rule.clone(),
        rec.reasons.clone(),
        vec![
            format!(
                "the paper's default: gamma {}, alpha {}",
                sw.paper_default.gamma, sw.paper_default.alpha
            ),
            format!("its Table 1b, AP by gamma (alpha), RetinaNet-50 on COCO minival: {}", table.join(", ")),
        ],
    )
}

/// How concentrated the loss is: the hardest fraction of samples carrying 50% / 90% of it.
pub fn cdf_summary(sw: &SweepReport) -> TableData {
    let mut t = TableData::new(&[
        "hardest share of negatives carrying",
        "50% of their loss",
        "90%",
        "positives: 50%",
        "90%",
    ]);
    for c in &sw.cdf {
        t.rows.push(vec![
            format!("gamma {}", c.gamma),
            percent(c.negatives.hardest_fraction_for_50),
            percent(c.negatives.hardest_fraction_for_90),
            percent(c.positives.hardest_fraction_for_50),
            percent(c.positives.hardest_fraction_for_90),
        ]);
    }
    t
}

/// The focal loss under each framework's normaliser.
pub fn normalizers(r: &Report) -> TableData {
    let mut t = TableData::new(&["focal loss normalised by", "value", "used by"]);
    t.align[2] = Align::Left;
    for n in &r.normalizers {
        // "who: formula; batches": the who, and the batches the value assumed.
        let name = n.used_by.split(':').next().unwrap_or("");
        let who = match n.used_by.rsplit_once("; ") {
            Some((_, batches)) => format!("{name} ({batches})"),
            None => name.to_string(),
        };
        t.rows.push(vec![n.name.replace('_', " "), number(n.value), who]);
    }
    t
}

/// CE split into the soft targets' entropy (irreducible) and KL (excess), per bucket.
pub fn soft_targets(s: &crate::report::SoftTargets) -> TableData {
    let mut t = TableData::new(&[
        "bucket (soft targets)",
        "soft decisions",
        "CE",
        "H(y): irreducible",
        "KL(y||p): excess",
        "irreducible share",
    ]);
    let rows = crate::report::BUCKET_NAMES
        .iter()
        .filter_map(|name| s.buckets.get(*name).map(|b| (name.replace('_', " "), b)))
        .chain([("all".to_string(), &s.total)]);
    for (name, b) in rows {
        t.rows.push(vec![
            name,
            b.soft_decisions.to_string(),
            number(b.ce),
            number(b.entropy),
            number(b.kl),
            percent(b.entropy_share),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{breakdowns, cell, class};

    #[test]
    fn classes_are_listed_most_suppressed_first_and_those_without_a_ratio_last() {
        let b = breakdowns(
            vec![
                class(0, 50, Some(0.4)),
                class(1, 1000, None),
                class(2, 2, Some(0.01)),
                class(3, 9, Some(0.4)),
                class(4, 0, Some(0.0)),
            ],
            Vec::new(),
        );
        let order: Vec<String> = classes_by_suppression(&b).iter().map(|r| key_text(&r.key)).collect();
        // Ties keep class order.
        assert_eq!(order, ["4", "2", "0", "3", "1"]);
        let t = class_gradients(&b, 3).unwrap();
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0], ["4", "0", "-", "0", "10.00", "0"]);
        assert_eq!(t.rows[1][5], "0.01000");
        // Softmax reports have no gradient balance: class order, no gradient table.
        let mut plain = b.clone();
        plain.by_class.iter_mut().for_each(|r| r.ce_gradient = None);
        let order: Vec<String> = classes_by_suppression(&plain).iter().map(|r| key_text(&r.key)).collect();
        assert_eq!(order, ["0", "1", "2", "3", "4"]);
        assert!(class_gradients(&plain, 3).is_none());
    }

    #[test]
    fn the_class_by_level_table_follows_the_suppression_order_with_dashes_for_empty_cells() {
        let b = breakdowns(
            vec![class(0, 5, Some(0.5)), class(1, 1, Some(0.1))],
            vec![cell(0, 3, 0.25), cell(0, 4, 1.0), cell(1, 4, 0.5)],
        );
        let t = class_by_level(&b, 10).unwrap();
        assert_eq!(t.header, ["class (EN of FL)", "level 3", "level 4"]);
        assert_eq!(t.rows, [["1", "-", "50.0%"], ["0", "25.0%", "100.0%"]]);
        assert!(class_by_level(&breakdowns(b.by_class.clone(), Vec::new()), 10).is_none());
    }
}
