//! Number formatting shared by the human-readable renderers.

/// A count with SI suffix above ten thousand: `9,999`, `12.3k`, `4.56M`, `1.20G`.
pub fn count(n: u64) -> String {
    let x = n as f64;
    if n < 10_000 {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x < 1e6 {
        format!("{:.1}k", x / 1e3)
    } else if x < 1e9 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.2}G", x / 1e9)
    }
}

/// A share in [0, 1] as a percentage with enough digits to tell small shares apart:
/// `77.0%`, `2.6%`, `0.04%`, `<0.01%`, `0%`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p >= 0.1 {
        format!("{p:.1}%")
    } else if p >= 0.01 {
        format!("{p:.2}%")
    } else {
        "<0.01%".into()
    }
}

/// A loss value with four significant digits, in scientific notation outside [1e-3, 1e6).
pub fn number(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{x:.3e}")
    } else {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.digits$}")
    }
}

/// Word-wraps `text` to `width` columns: the first line starts with `first`, the others with
/// `rest` (for hanging indents).
pub fn wrap(text: &str, width: usize, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_percentages_and_numbers_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(9_999), "9,999");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(20_000_000), "20.00M");
        assert_eq!(count(3_960_000_000), "3.96G");
        assert_eq!(percent(0.77), "77.0%");
        assert_eq!(percent(0.026), "2.6%");
        assert_eq!(percent(0.0004), "0.04%");
        assert_eq!(percent(0.00000001), "<0.01%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(number(1234.5678), "1235");
        assert_eq!(number(0.012345), "0.01235");
        assert_eq!(number(12.3456), "12.35");
        assert_eq!(number(2.5e7), "2.500e7");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn long_text_wraps_with_a_hanging_indent() {
        let w = wrap("aaa bbb ccc ddd", 9, "- ", "  ");
        assert_eq!(w, "- aaa bbb\n  ccc ddd\n");
        assert!(wrap(&"word ".repeat(50), 100, "", "  ").lines().all(|l| l.len() <= 100));
    }
}
