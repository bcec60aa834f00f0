//! A/B of this crate's own runs: two builds, or two settings, timed on one device.
//!
//! [`compare_runs`] pairs the rows of two sides, each one or more runs of the bench (its CSVs):
//! a row's time on a side is the fastest of that side's medians for it, so runs alternated
//! between the sides (base, new, base, new, ...) meet the same machine, and a stall in one run
//! does not decide a row. This is how the README's lavapipe ratios are made
//! (`NTM_BENCH_BASE`, `NTM_BENCH_FROM`); the PyTorch comparison is [`super::peer`].
//!
//! The copy rows time the same kernel on both sides whatever the builds or settings: their
//! ratio is the machine's own drift between the sides, and the summary gives it apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Row, Shape4, KEY_COLUMNS};

/// The CSV header of [`AbComparison::csv`]: each paired row's time on both sides and the
/// base's over the new (above 1: the new side is faster), with the runs behind each.
pub const AB_CSV_HEADER: &str =
    "op,access,pass,dtype,batch,heads,slots,width,base_us,new_us,base_over_new,base_runs,new_runs";

/// Rows slower than this on the new side are listed one by one in the summary.
pub const SLOWER: f64 = 0.95;
/// Rows faster than this on the new side are counted in the summary.
pub const FASTER: f64 = 1.05;

/// A row's identity across runs: op, access, pass, dtype and shape.
type Key = (String, &'static str, &'static str, &'static str, Shape4);

fn key(r: &Row) -> Key {
    (
        r.op.clone(),
        r.access,
        r.pass,
        r.dtype,
        (r.batch, r.heads, r.slots, r.width),
    )
}

/// One side's rows: each row (op, access, pass, dtype, shape) once, the run's row with the
/// fastest median, and how many of the runs timed it; in the order the runs first give them.
pub fn fastest(runs: &[Vec<Row>]) -> Vec<(Row, usize)> {
    let mut order: Vec<Key> = Vec::new();
    let mut best: BTreeMap<Key, (Row, usize)> = BTreeMap::new();
    for r in runs.iter().flatten() {
        let k = key(r);
        match best.get_mut(&k) {
            Some((b, n)) => {
                *n += 1;
                if r.median_us < b.median_us {
                    *b = r.clone();
                }
            }
            None => {
                order.push(k.clone());
                best.insert(k, (r.clone(), 1));
            }
        }
    }
    order.into_iter().filter_map(|k| best.remove(&k)).collect()
}

/// One row timed on both sides.
#[derive(Clone, Debug)]
pub struct AbLine {
    /// The row (the new side's fastest run of it).
    pub row: Row,
    /// The base side's time: the fastest of its runs' medians, microseconds.
    pub base_us: f64,
    /// The new side's time, the same way.
    pub new_us: f64,
    /// The base runs that timed this row.
    pub base_runs: usize,
    /// The new runs that timed it.
    pub new_runs: usize,
}

impl AbLine {
    /// The base's time over the new's: above 1 the new side is faster.
    pub fn ratio(&self) -> f64 {
        self.base_us / self.new_us
    }
}

/// The result of [`compare_runs`].
#[derive(Clone, Debug)]
pub struct AbComparison {
    /// The rows both sides timed, in the new side's order.
    pub lines: Vec<AbLine>,
    /// Rows only the base side timed.
    pub only_base: usize,
    /// Rows only the new side timed.
    pub only_new: usize,
    /// The table and its summary as printed.
    pub text: String,
    /// The paired rows as CSV ([`AB_CSV_HEADER`]).
    pub csv: String,
}

fn row_name(r: &Row) -> String {
    let dtype = if r.dtype == "f32" { "" } else { " f16" };
    let access = if r.access == "-" {
        String::new()
    } else {
        format!("{} ", r.access)
    };
    format!(
        "{access}{} {}{dtype} at B={} H={} N={} W={}",
        r.op, r.pass, r.batch, r.heads, r.slots, r.width
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One summary line over `lines` (none: nothing).
fn summary(text: &mut String, what: &str, lines: &[&AbLine]) {
    if lines.is_empty() {
        return;
    }
    let ratios: Vec<f64> = lines.iter().map(|l| l.ratio()).collect();
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    let _ = write!(
        text,
        "  {what}: median {:.2}x over {} rows ({lo:.2}-{hi:.2}x); {} faster than {FASTER:.2}x",
        median(ratios.clone()),
        lines.len(),
        ratios.iter().filter(|&&x| x > FASTER).count(),
    );
    let mut slower: Vec<&&AbLine> = lines.iter().filter(|l| l.ratio() < SLOWER).collect();
    slower.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    if slower.is_empty() {
        let _ = writeln!(text, ", none slower than {SLOWER:.2}x");
    } else {
        let _ = writeln!(text, "; slower than {SLOWER:.2}x, slowest first:");
        for l in slower {
            let _ = writeln!(
                text,
                "    {:.2}x  {} ({:.1} -> {:.1} us)",
                l.ratio(),
                row_name(&l.row),
                l.base_us,
                l.new_us
            );
        }
    }
}

/// Pairs the rows of the `base` runs with those of the `new` runs (each side's time the
/// fastest of its medians) and summarises the ratios per kind of row: the copy (the control:
/// the same kernel on both sides), soft, discrete and the other rows.
pub fn compare_runs(base: &[Vec<Row>], new: &[Vec<Row>]) -> AbComparison {
    let base_rows = fastest(base);
    let new_rows = fastest(new);
    let mut base_by: BTreeMap<Key, (f64, usize)> = base_rows
        .iter()
        .map(|(r, n)| (key(r), (r.median_us, *n)))
        .collect();
    let mut lines = Vec::new();
    let mut only_new = 0;
    for (r, n) in new_rows {
        match base_by.remove(&key(&r)) {
            Some((base_us, base_runs)) => lines.push(AbLine {
                base_us,
                new_us: r.median_us,
                base_runs,
                new_runs: n,
                row: r,
            }),
            None => only_new += 1,
        }
    }
    let only_base = base_by.len();
    let mut text = format!(
        "A/B against the base runs ({} base, {} new; each row's time the fastest of its side's medians; x = base / new: above 1 the new side is faster)\n",
        base.len(),
        new.len()
    );
    let _ = writeln!(
        text,
        "{KEY_COLUMNS} {:>12} {:>12} {:>7}",
        "base_us", "new_us", "x"
    );
    let mut csv = String::from(AB_CSV_HEADER);
    csv.push('\n');
    for l in &lines {
        let _ = writeln!(
            text,
            "{} {:>12.1} {:>12.1} {:>6.2}x",
            l.row.key_columns(),
            l.base_us,
            l.new_us,
            l.ratio()
        );
        let _ = writeln!(
            csv,
            "{},{:.3},{:.3},{:.4},{},{}",
            l.row.key_csv(),
            l.base_us,
            l.new_us,
            l.ratio(),
            l.base_runs,
            l.new_runs
        );
    }
    text.push_str("summary:\n");
    if lines.is_empty() {
        text.push_str("  no row timed on both sides\n");
    }
    let of =
        |f: &dyn Fn(&Row) -> bool| -> Vec<&AbLine> { lines.iter().filter(|l| f(&l.row)).collect() };
    summary(
        &mut text,
        "copy (the control: the same kernel on both sides)",
        &of(&|r| r.op == "copy"),
    );
    summary(&mut text, "soft", &of(&|r| r.access == "soft"));
    summary(&mut text, "discrete", &of(&|r| r.access == "discrete"));
    summary(
        &mut text,
        "other",
        &of(&|r| r.access == "-" && r.op != "copy"),
    );
    if only_base + only_new > 0 {
        let _ = writeln!(
            text,
            "  not paired: {only_base} rows only in the base runs, {only_new} only in the new"
        );
    }
    AbComparison {
        lines,
        only_base,
        only_new,
        text,
        csv,
    }
}
