//! The committed report is a function of its recorded results: rendering
//! `docs/results/results.json` with the table gives `RESULTS.md` again.

use std::path::Path;

use stampede_bench::ladder::Results;
use stampede_bench::ladder::report::render;
use stampede_bench::ladder::table::sections;

#[test]
fn the_committed_report_renders_from_its_results() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
    let results: Results = serde_json::from_str(&read("results.json")).expect("results.json");
    let rendered = render(&results, &sections(&results.options));
    let committed = read("RESULTS.md");
    if rendered != committed {
        let first = rendered
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b);
        let at = first.unwrap_or(rendered.lines().count().min(committed.lines().count()));
        let line = |s: &str| s.lines().nth(at).unwrap_or("<end>").to_string();
        panic!(
            "RESULTS.md differs from its results.json rendered at line {}:\n  committed: {}\n  rendered:  {}",
            at + 1,
            line(&committed),
            line(&rendered)
        );
    }
}
