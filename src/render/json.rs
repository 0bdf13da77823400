//! JSON output: the report ([`Report`], trend or comparison) serialised with stable keys and a
//! trailing newline.

use std::io::Write;

use super::Renderer;

/// Pretty-printed JSON.
pub struct Json;

impl<R: serde::Serialize> Renderer<R> for Json {
    fn render(&self, report: &R, out: &mut dyn Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, report)?;
        out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::sample_report;
    use crate::report::Report;

    #[test]
    fn json_round_trips_and_carries_the_schema_version() {
        let r = sample_report();
        let mut buf = Vec::new();
        Json.render(&r, &mut buf).unwrap();
        let back: Report = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["strategies"][2]["params"]["gamma"], 2.0);
        assert!(v["strategies"][0]["buckets"]["easy_negative"]["loss_share"].is_f64());
    }
}
