//! `hardmine report`: the HTML page in a real browser, the Markdown report, snapshots of the
//! human-readable renderers, and terminal manners (closed pipes, no progress bar off a TTY).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::Env;

/// The charts a full report draws for a dense dump with levels.
const CHARTS: [&str; 11] = [
    "bucket_shares",
    "loss_vs_pt",
    "cdf_negatives",
    "cdf_positives",
    "heatmap",
    "gradient_density",
    "levels_neg_pos",
    "levels_easy",
    "classes_neg_pos",
    "classes_easy",
    "class_level_easy",
];

fn small_dump(env: &Env) {
    env.run(&[
        "generate",
        "--out",
        "dump",
        "--images",
        "4",
        "--anchors-per-image",
        "6000",
        "--classes",
        "5",
        "--seed",
        "3",
    ])
    .ok();
}

pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HARDMINE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Headless Chromium with the flags this machine's closed network needs.
pub fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Reported as ignored by a plain `cargo test` (a machine without Chromium would otherwise pass
/// it without running it, invisibly); `cargo test -- --ignored` runs it, and .ci/run does, after
/// installing Chromium. Asked for explicitly, a missing browser is a failure.
#[test]
#[ignore = "needs Chromium: run with `cargo test --test main -- --ignored` (.ci/run does)"]
fn the_html_report_renders_in_a_real_browser() {
    let browser = chromium().unwrap_or_else(|| {
        panic!(
            "no chromium, chromium-browser or google-chrome on PATH: install one (Debian: apt-get install chromium) or set HARDMINE_CHROMIUM to its path"
        )
    });
    let env = Env::new();
    small_dump(&env);
    let out = env.run(&["report", "dump", "--out", "report.html", "--quiet"]);
    out.ok();
    let page = env.path("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.len() < 3_000_000, "report is {} bytes", html.len());
    let url = format!("file://{}", page.display());

    // The DOM after loading: every chart is there, as inline SVG.
    let dom = headless(&browser, &env.path("profile-dom")).arg("--dump-dom").arg(&url).output().unwrap();
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    for id in CHARTS {
        let at = dom_text
            .find(&format!("<section id=\"{id}\""))
            .unwrap_or_else(|| panic!("chart {id} missing from the DOM"));
        // Its own svg, inside its section (not merely some chart further down the page).
        let section = &dom_text[at..];
        let section =
            &section[..section.find("</section>").unwrap_or_else(|| panic!("chart {id}: unclosed section"))];
        assert!(
            section.contains("<svg") && section.contains("</svg>") && section.contains("<figcaption>"),
            "chart {id} has no complete svg in its section"
        );
    }
    // The class x level heatmap: labelled for screen readers, one cell (with its tooltip) per
    // class and level: 5 classes x 5 levels in the small dump.
    let at = dom_text.find("<section id=\"class_level_easy\"").unwrap();
    let heatmap = &dom_text[at..at + dom_text[at..].find("</section>").unwrap()];
    assert!(
        heatmap.contains("role=\"img\"")
            && heatmap.contains("aria-labelledby=\"class_level_easy-title class_level_easy-desc\"")
            && heatmap.contains("<desc id=\"class_level_easy-desc\">"),
        "the heatmap has no accessible name and description"
    );
    assert_eq!(heatmap.matches("<title>class ").count(), 25, "one tooltip per cell");
    let logs = String::from_utf8_lossy(&dom.stderr);
    for line in logs.lines() {
        assert!(
            !line.contains(":CONSOLE") && !line.contains("Failed to load resource"),
            "browser console: {line}"
        );
    }

    // A screenshot that is not blank.
    let shot = env.path("shot.png");
    let run = headless(&browser, &env.path("profile-shot"))
        .arg("--window-size=1100,3000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&run.stderr));
    assert_inked(&shot, (1100, 3000));
    // Keep it where a person can look at it.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::copy(&shot, &keep);
}

/// Asserts that the screenshot `shot` has the size `(width, height)` and is not blank (at
/// least 2% of its pixels inked).
pub fn assert_inked(shot: &Path, size: (u32, u32)) {
    let decoder = png::Decoder::new(std::fs::File::open(shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    let pixels = bytes.len() / channels;
    let inked = bytes.chunks(channels).filter(|p| p[..3].iter().any(|&c| c < 200)).count();
    assert!((info.width, info.height) == size, "{}x{}", info.width, info.height);
    assert!(inked * 50 > pixels, "{} looks blank: {inked} of {pixels} pixels inked", shot.display());
}

#[test]
fn markdown_reports_link_their_charts_written_beside_them() {
    let env = Env::new();
    small_dump(&env);
    env.run(&["report", "dump", "--out", "r.md", "--quiet"]).ok();
    let md = std::fs::read_to_string(env.path("r.md")).unwrap();
    for id in CHARTS {
        assert!(md.contains(&format!("](r_files/{id}.svg)")), "{id} not linked");
        let svg = std::fs::read_to_string(env.path(&format!("r_files/{id}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{id}");
    }
    assert!(md.contains("| strategy | params | selected | total loss | normalized |"));
    assert!(md.contains("hardmine report dump --out r.md --quiet"), "the command is recorded");
}

/// Replaces what changes between runs and machines.
fn redact(text: &str, env: &Env) -> String {
    text.replace(&env.root().display().to_string(), "[TMP]").replace(env!("CARGO_PKG_VERSION"), "[VERSION]")
}

#[test]
fn terminal_and_markdown_renderings_are_stable() {
    let env = Env::new();
    small_dump(&env);
    let table = env.run(&["analyze", "dump", "--threads", "1"]).ok();
    insta::assert_snapshot!("terminal_analyze", redact(&table, &env));
    let sweep = env.run(&["sweep", "dump", "--gammas", "0,1,2", "--alphas", "0.25,-1"]).ok();
    insta::assert_snapshot!("terminal_sweep", redact(&sweep, &env));
    env.run(&["report", "dump", "--out", "r.md", "--quiet", "--threads", "1"]).ok();
    let md = std::fs::read_to_string(env.path("r.md")).unwrap();
    let md = redact(&md, &env);
    // The recorded command line holds the test binary's absolute path.
    let md: String = md
        .lines()
        .map(|l| if l.contains(" report dump --out r.md") { "[COMMAND]" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("markdown_report", md);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let env = Env::new();
    // Many classes make the JSON far larger than a pipe buffer.
    env.run(&[
        "generate",
        "--out",
        "wide",
        "--images",
        "2",
        "--anchors-per-image",
        "500",
        "--classes",
        "400",
    ])
    .ok();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hardmine"))
        .args(["analyze", "wide", "--format", "json", "--strategies", "ce"])
        .current_dir(env.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then hang up, like `| head -c 100`.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}, stderr: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn no_progress_bar_or_colour_off_a_terminal() {
    let env = Env::new();
    small_dump(&env);
    let out = env.run(&["report", "dump", "--out", "r.html"]);
    out.ok();
    let err = out.stderr();
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    assert!(err.starts_with("wrote r.html ("), "{err}");
    let quiet = env.run(&["report", "dump", "--out", "r2.html", "--quiet"]);
    assert_eq!(quiet.stderr(), "");
    let text = env.run(&["analyze", "dump"]).ok();
    assert!(!text.contains('\x1b'));
}

/// Image ids that try to break out of every output format.
fn hostile_ids() -> Vec<String> {
    vec![
        "<img src=x onerror=alert(1)>".into(),
        "<script>alert(1)</script>".into(),
        "a|b|c".into(),
        "line\nbreak".into(),
        "[click](javascript:alert(1))".into(),
        "``code`` & \"quotes\" 'single'".into(),
        format!("long-{}", "x".repeat(5000)),
        "back\\slash".into(),
    ]
}

/// A dense dump whose images carry `hostile_ids`, with positives in each, so that the per-image
/// tables (top images by loss and by easy-negative share) list them.
fn hostile_dump(env: &Env) {
    let ids = hostile_ids();
    let (per_image, classes) = (40usize, 3usize);
    let mut g = crate::util::Lcg(5);
    let mut image = Vec::new();
    let mut label = Vec::new();
    let mut logits = Vec::new();
    for id in &ids {
        for a in 0..per_image {
            image.push(id.clone());
            label.push(if a % 10 == 0 { (a / 10 % classes) as i32 } else { -1 });
            logits.extend((0..classes).map(|_| g.range(-6.0, 2.0) as f32));
        }
    }
    crate::util::fixture::write(
        &env.path("hostile.parquet"),
        vec![
            ("image_id", crate::util::fixture::Col::Str(image)),
            ("label", crate::util::fixture::Col::I32(label)),
            ("logits", crate::util::fixture::Col::Fixed(classes, logits)),
        ],
        64,
    );
}

#[test]
fn dump_provided_strings_are_escaped_in_every_renderer() {
    let env = Env::new();
    hostile_dump(&env);
    // JSON: the ids come back exactly (a JSON parser sees the original strings).
    let json = env.run(&["analyze", "hostile.parquet", "--format", "json"]).json();
    let listed: Vec<String> = json["breakdowns"]["top_images_by_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), hostile_ids().len().min(10));
    for id in &listed {
        assert!(hostile_ids().contains(id), "{id:?} is not one of the dump's ids");
    }

    // Markdown: no raw HTML from the dump, no link or code span opened by it, and every table
    // row has as many cells as its header.
    env.run(&["report", "hostile.parquet", "--out", "r.md", "--quiet"]).ok();
    let md = std::fs::read_to_string(env.path("r.md")).unwrap();
    for raw in ["<img", "<script", "[click](javascript:", "line\nbreak"] {
        assert!(!md.contains(raw), "raw {raw:?} in the Markdown report");
    }
    assert!(md.contains("\\[click\\](javascript:alert(1))"), "the link text is shown, escaped");
    assert!(md.contains("&lt;img src=x onerror=alert(1)&gt;"), "the id is shown, escaped");
    let cells = |line: &str| {
        // Unescaped pipes delimit cells.
        let b = line.as_bytes();
        (0..b.len()).filter(|&i| b[i] == b'|' && (i == 0 || b[i - 1] != b'\\')).count()
    };
    let mut header: Option<usize> = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        match header {
            None => header = Some(cells(line)),
            Some(n) => assert_eq!(
                cells(line),
                n,
                "a row with a different cell count: {}",
                &line[..line.len().min(200)]
            ),
        }
    }

    // HTML: escaped text, no element from the dump.
    env.run(&["report", "hostile.parquet", "--out", "r.html", "--quiet"]).ok();
    let html = std::fs::read_to_string(env.path("r.html")).unwrap();
    for raw in ["<img src=x", "<script>alert", "javascript:alert(1)\""] {
        assert!(!html.contains(raw), "raw {raw:?} in the HTML report");
    }
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // The terminal table: one line per row (a newline in an id does not start a new row).
    let text = env.run(&["analyze", "hostile.parquet"]).ok();
    assert!(!text.contains("line\nbreak"), "a raw newline from an id in the terminal output");
}
