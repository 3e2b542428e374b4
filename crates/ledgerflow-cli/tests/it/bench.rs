//! `ledgerflow bench`: the measuring command itself, at a tiny scale.

/// A month into SQLite at 1% of mainnet: each phase measured by its own
/// child process, the per-day figures and their trend printed, the month
/// judged against issue 25's 10% by the change it printed, and the
/// Markdown table last.
#[test]
fn bench_measures_a_month_and_judges_its_per_day_cost() {
    let work = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--scale",
        "0.01",
        "--days",
        "30",
        "--postgres",
        "none",
    ];
    let text = crate::bench_stdout(&args, work.path());
    let phases: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" -> SQLite: "))
        .collect();
    assert_eq!(phases.len(), 3, "{text}");
    assert!(phases[1].starts_with("30 days (") && phases[2].contains("one at a time"));
    assert_eq!(text.matches("  per day: first 5 ").count(), 2, "{text}");
    assert_eq!(text.matches("  per day: trend ").count(), 2, "{text}");

    // The verdict follows from the two means it names.
    let verdicts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("the last 5 days within 10% of the first 5: "))
        .collect();
    assert_eq!(verdicts.len(), 2, "{text}");
    for line in verdicts {
        let (_, figures) = line.split_once(": ").unwrap();
        let (_, figures) = figures.split_once(": ").unwrap();
        let (verdict, figures) = figures.split_once(" (").unwrap();
        let change: f64 = figures
            .split('%')
            .next()
            .and_then(|c| c.trim_start_matches('+').parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        let want = if change.abs() <= 10.0 {
            "met"
        } else {
            "MISSED"
        };
        assert_eq!(verdict, want, "{line}");
    }
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("| 30 days"),
        "{text}"
    );
}
