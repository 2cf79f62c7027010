//! Benchmark figures for `p2plab bench`: what a run measured, its summaries, the comparison with
//! a baseline of the same run and with a previous run, and the files it is kept in. Pure: the
//! only I/O is [`Machine::detect`] (a few files under `/proc`).
//!
//! # Model
//! - A [`Report`] is one benchmark run: when ([`Report::date`], RFC 3339 UTC), how it was
//!   started ([`Report::command`]), on what ([`Machine`]), and what it measured.
//! - A [`Group`] is a set of figures measured the same way (its `method` is a markdown paragraph
//!   saying how); a [`Figure`] is one measured quantity with all its `samples`, a unit, and
//!   whether lower or higher is [`Better`]. A figure may name a `baseline`: another figure of
//!   the same run it is compared with (e.g. libp2p request-response against raw TCP), shown as
//!   the ratio of the medians ([`Report::ratio`]).
//! - A [`Summary`] (n, median, min, max, p95; NaN samples ignored) is computed from the samples,
//!   never stored as the truth.
//! - [`compare`] sets a run against a previous one, figure by figure (same `id`), by median; a
//!   figure more than [`REGRESSION_THRESHOLD`] (20%) worse is a regression.
//!
//! # Files
//! - [`Report::to_json`]: pretty JSON of the report (`"format": 1`) in which each figure also
//!   carries its computed `summary` and `ratio`, for readers of the file; [`Report::from_json`]
//!   ignores them (and accepts files without them). NaN samples are written as `null` and read
//!   back as NaN. Reading is exact: every number comes back as the same `f64`.
//! - The data is a file of its own, `docs/benchmarks.json` ([`Report::to_json`]): the baseline a
//!   later run [`compare`]s with. [`Report::markdown`] renders `docs/benchmarks.md` from it: how
//!   to re-run, the machine, one section per group (method and table), and a `## Data` section
//!   naming the JSON file. [`Report::from_markdown`] still reads the documents written before the
//!   data had its own file (the JSON was fenced after [`JSON_MARKER`] in the markdown).
//! - [`Report::table`]: the same figures as a plain-text table for the terminal, with the
//!   comparison against a previous run and its regressions, if given one.

pub mod lab;

use std::fmt::Write as _;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The version of the JSON format written by [`Report::to_json`] (and the only one read).
pub const FORMAT: u32 = 1;

/// A figure this much worse (relative change of the median) than in the previous run is a
/// regression.
pub const REGRESSION_THRESHOLD: f64 = 0.20;

/// The line of a `docs/benchmarks.md` written before the data had its own file, after which the
/// fenced JSON block of the report follows.
pub const JSON_MARKER: &str = "<!-- p2plab-bench-json -->";

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better (times, memory).
    Lower,
    /// Larger is better (throughput, success rates).
    Higher,
}

/// Figures measured the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable key, referred to by [`Figure::group`].
    pub id: String,
    /// Heading of the group's section.
    pub title: String,
    /// How it was measured (markdown paragraph).
    pub method: String,
}

/// One measured quantity with all its samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key, e.g. `rtt.direct.64B`; a later run compares figures of the same id.
    pub id: String,
    /// The [`Group::id`] this figure belongs to.
    pub group: String,
    /// What it is, for people: `libp2p request-response, direct, 64 B`.
    pub label: String,
    /// `ms`, `s`, `Mbit/s`, `MiB`, `KiB`, `%`, ...
    pub unit: String,
    /// Which way it improves.
    pub better: Better,
    /// Every sample, in the order measured (NaN for a sample that could not be taken; written
    /// as `null`).
    #[serde(deserialize_with = "samples_or_null")]
    pub samples: Vec<f64>,
    /// Id of the figure of the same run it is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// A remark shown under the group's table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    /// A figure without baseline or note.
    pub fn new(
        id: impl Into<String>,
        group: impl Into<String>,
        label: impl Into<String>,
        unit: impl Into<String>,
        better: Better,
        samples: Vec<f64>,
    ) -> Self {
        Figure {
            id: id.into(),
            group: group.into(),
            label: label.into(),
            unit: unit.into(),
            better,
            samples,
            baseline: None,
            note: None,
        }
    }

    /// Compared with the figure `baseline_id` of the same run.
    pub fn vs(mut self, baseline_id: impl Into<String>) -> Self {
        self.baseline = Some(baseline_id.into());
        self
    }

    /// With a remark shown under the table.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }

    /// The summary of the samples; `None` without any (non-NaN) sample.
    pub fn summary(&self) -> Option<Summary> {
        summarize(&self.samples)
    }
}

/// `null` samples (how JSON writes NaN) read back as NaN.
fn samples_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v = Vec::<Option<f64>>::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// Median and range of a figure's samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples counted (NaN ones are not).
    pub n: usize,
    /// The middle sample; of an even count, the mean of the middle two.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// 95th percentile, nearest rank: the ⌈0.95·n⌉-th smallest sample.
    pub p95: f64,
}

/// Summary of `samples`, NaN ignored; `None` when nothing is left.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    // Nearest rank ⌈0.95·n⌉ in integers (0.95 is not exact in binary).
    let rank = (95 * n).div_ceil(100).max(1);
    Some(Summary {
        n,
        median,
        min: v[0],
        max: v[n - 1],
        p95: v[rank - 1],
    })
}

/// The machine a run was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    /// Logical CPUs available to the run (0 if unknown).
    pub cpus: usize,
    pub cpu_model: String,
    /// Total memory, to 0.1 GiB (0 if unknown).
    pub memory_gib: f64,
    pub kernel: String,
    /// The Docker engine's version, as given to [`Machine::detect`].
    pub docker: String,
}

const UNKNOWN: &str = "unknown";

impl Machine {
    /// This machine, from `/proc` (hostname, CPU model, memory, kernel) and
    /// [`std::thread::available_parallelism`]; what cannot be read is `unknown` (0 for numbers).
    pub fn detect(docker_version: String) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let text = |p: &str| known(read(p).map(|s| s.trim().to_string()));
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or_else(|_| {
                cpuinfo
                    .lines()
                    .filter(|l| cpuinfo_key(l) == Some("processor"))
                    .count()
            });
        Machine {
            hostname: text("/proc/sys/kernel/hostname"),
            cpus,
            cpu_model: known(cpu_model(&cpuinfo)),
            memory_gib: read("/proc/meminfo")
                .as_deref()
                .and_then(memory_gib)
                .unwrap_or(0.0),
            kernel: text("/proc/sys/kernel/osrelease"),
            docker: known(Some(docker_version.trim().to_string())),
        }
    }
}

fn known(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty())
        .unwrap_or_else(|| UNKNOWN.to_string())
}

/// The key of a `key : value` line of `/proc/cpuinfo`.
fn cpuinfo_key(line: &str) -> Option<&str> {
    line.split_once(':').map(|(k, _)| k.trim())
}

/// The CPU model named in `/proc/cpuinfo` (`model name` on x86, `Hardware`/`Processor` or the
/// `CPU part` on some ARM kernels).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "Processor", "cpu model", "cpu"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                let v = v.trim();
                (k.trim() == *key && !v.is_empty()).then(|| v.to_string())
            })
        })
}

/// `MemTotal` of `/proc/meminfo` in GiB, to 0.1.
fn memory_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line
        .trim_start_matches("MemTotal:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((kib / (1024.0 * 1024.0) * 10.0).round() / 10.0)
}

/// One benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: u32,
    /// When it ran, RFC 3339 UTC.
    pub date: String,
    /// The command line that ran it.
    pub command: String,
    pub machine: Machine,
    pub groups: Vec<Group>,
    pub figures: Vec<Figure>,
}

/// What [`Report::to_json`] writes of a figure: the figure and, for readers, what is computed
/// from it.
#[derive(Serialize)]
struct FigureView<'a> {
    #[serde(flatten)]
    figure: &'a Figure,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

#[derive(Serialize)]
struct ReportView<'a> {
    format: u32,
    date: &'a str,
    command: &'a str,
    machine: &'a Machine,
    groups: &'a [Group],
    figures: Vec<FigureView<'a>>,
}

/// Why a benchmark file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no p2plab-bench JSON block in the file (a line `{JSON_MARKER}` followed by a fenced ```json block)")]
    NoJsonBlock,
    #[error("the p2plab-bench JSON block is not closed (no closing ``` fence)")]
    UnclosedJsonBlock,
    #[error("invalid benchmark JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("benchmark JSON of format {0}, this p2plab reads format {FORMAT}")]
    Format(u32),
}

/// A titled part of the output: a group, or the figures of no known group (`None`).
type Section<'a> = (Option<&'a Group>, Vec<&'a Figure>);

impl Report {
    /// A report of [`FORMAT`] dated now.
    pub fn new(
        command: impl Into<String>,
        machine: Machine,
        groups: Vec<Group>,
        figures: Vec<Figure>,
    ) -> Report {
        Report {
            format: FORMAT,
            date: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            command: command.into(),
            machine,
            groups,
            figures,
        }
    }

    /// The (first) figure of this id.
    pub fn figure(&self, id: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.id == id)
    }

    /// Median of `f` over the median of its baseline figure (for both directions of
    /// [`Better`]); `None` without baseline, without samples on either side, or with a zero
    /// baseline median.
    pub fn ratio(&self, f: &Figure) -> Option<f64> {
        let base = self.figure(f.baseline.as_deref()?)?.summary()?.median;
        let r = f.summary()?.median / base;
        r.is_finite().then_some(r)
    }

    /// Pretty JSON; each figure also carries its `summary` and `ratio` (ignored when read).
    pub fn to_json(&self) -> String {
        let view = ReportView {
            format: self.format,
            date: &self.date,
            command: &self.command,
            machine: &self.machine,
            groups: &self.groups,
            figures: self
                .figures
                .iter()
                .map(|f| FigureView {
                    figure: f,
                    summary: f.summary(),
                    ratio: self.ratio(f),
                })
                .collect(),
        };
        // Serializing plain structs of strings and numbers into a String cannot fail.
        serde_json::to_string_pretty(&view).unwrap_or_default()
    }

    /// Reads [`Report::to_json`] (with or without the computed fields) back, exactly.
    pub fn from_json(text: &str) -> Result<Report, BenchError> {
        // (serde_json's `float_roundtrip`: every sample reads back exactly as written)
        let report: Report = serde_json::from_str(text)?;
        if report.format != FORMAT {
            return Err(BenchError::Format(report.format));
        }
        Ok(report)
    }

    /// The report embedded in a `docs/benchmarks.md` of the earlier format: the fenced block
    /// after the (last) [`JSON_MARKER`] line.
    pub fn from_markdown(text: &str) -> Result<Report, BenchError> {
        let lines: Vec<&str> = text.lines().collect();
        let marker = lines
            .iter()
            .rposition(|l| l.trim() == JSON_MARKER)
            .ok_or(BenchError::NoJsonBlock)?;
        let mut rest = lines[marker + 1..]
            .iter()
            .enumerate()
            .skip_while(|(_, l)| l.trim().is_empty());
        let (open_at, open) = rest.next().ok_or(BenchError::NoJsonBlock)?;
        let open = open.trim();
        let ticks = open.len() - open.trim_start_matches('`').len();
        if ticks < 3 {
            return Err(BenchError::NoJsonBlock);
        }
        let body_start = marker + 1 + open_at + 1;
        let close = lines[body_start..]
            .iter()
            .position(|l| {
                let l = l.trim();
                l.len() >= ticks && l.chars().all(|c| c == '`')
            })
            .ok_or(BenchError::UnclosedJsonBlock)?;
        Report::from_json(&lines[body_start..body_start + close].join("\n"))
    }

    /// The groups in order, each with its figures, then the figures of no known group.
    fn sections(&self) -> Vec<Section<'_>> {
        let mut out: Vec<Section<'_>> = self
            .groups
            .iter()
            .map(|g| {
                (
                    Some(g),
                    self.figures.iter().filter(|f| f.group == g.id).collect(),
                )
            })
            .collect();
        let stray: Vec<&Figure> = self
            .figures
            .iter()
            .filter(|f| !self.groups.iter().any(|g| g.id == f.group))
            .collect();
        if !stray.is_empty() {
            out.push((None, stray));
        }
        out
    }

    /// "2.31× raw TCP, 64 B", or empty.
    fn vs_baseline(&self, f: &Figure) -> String {
        match (
            self.ratio(f),
            f.baseline.as_deref().and_then(|b| self.figure(b)),
        ) {
            (Some(r), Some(b)) => format!("{}× {}", fmt_value(r), b.label),
            _ => String::new(),
        }
    }

    /// The plain-text table for the terminal: per group a `== title ==` line and aligned
    /// columns (figure, n, median, range, unit, vs baseline and, given a previous run, vs
    /// previous), then the regressions against `previous`, if given.
    pub fn table(&self, previous: Option<&Report>) -> String {
        let changes = previous
            .map(|p| compare(self, p, REGRESSION_THRESHOLD))
            .unwrap_or_default();
        let mut header = vec!["figure", "n", "median", "range", "unit", "vs baseline"];
        if previous.is_some() {
            header.push("vs previous");
        }
        let header: Vec<String> = header.into_iter().map(String::from).collect();
        let sections: Vec<(String, Vec<Vec<String>>)> = self
            .sections()
            .into_iter()
            .map(|(g, figures)| {
                let rows = figures
                    .into_iter()
                    .map(|f| {
                        let mut row = self.cells(f);
                        if let Some(p) = previous {
                            row.push(vs_previous(f, p, &changes, false));
                        }
                        row
                    })
                    .collect();
                (section_title(g).to_string(), rows)
            })
            .collect();
        let mut widths = vec![0; header.len()];
        for row in std::iter::once(&header).chain(sections.iter().flat_map(|(_, rows)| rows)) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - cell.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                // n and median right-aligned, the rest left.
                if i == 1 || i == 2 {
                    s.push_str(&pad);
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.push_str(&pad);
                }
            }
            s.trim_end().to_string()
        };
        let mut out = String::new();
        for (i, (title, rows)) in sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "== {title} ==");
            if rows.is_empty() {
                out.push_str("(no figures)\n");
                continue;
            }
            let _ = writeln!(out, "{}", line(&header));
            for row in rows {
                let _ = writeln!(out, "{}", line(row));
            }
        }
        if let Some(p) = previous {
            out.push('\n');
            let regressions: Vec<&Change> = changes.iter().filter(|c| c.regression).collect();
            if regressions.is_empty() {
                let _ = writeln!(out, "No regression against {}.", p.date);
            } else {
                let _ = writeln!(
                    out,
                    "Regressions (> {}% worse than {}):",
                    threshold_pct(),
                    p.date
                );
                for c in regressions {
                    let _ = writeln!(
                        out,
                        "  {}: {} → {} {} ({})",
                        c.label,
                        fmt_value(c.previous),
                        fmt_value(c.current),
                        c.unit,
                        fmt_pct(c.change_pct)
                    );
                }
            }
        }
        out
    }

    /// Figure, n, median, range, unit, vs baseline.
    fn cells(&self, f: &Figure) -> Vec<String> {
        let s = f.summary();
        vec![
            f.label.clone(),
            s.map_or(0, |s| s.n).to_string(),
            s.map_or_else(|| "-".to_string(), |s| fmt_value(s.median)),
            s.map_or_else(
                || "-".to_string(),
                |s| format!("{}–{}", fmt_value(s.min), fmt_value(s.max)),
            ),
            f.unit.clone(),
            self.vs_baseline(f),
        ]
    }

    /// The whole `docs/benchmarks.md`: how to re-run, the machine, a section per group (method,
    /// table, notes), and where the data is (`data`: the JSON file's path relative to the
    /// document, e.g. `benchmarks.json`). With `previous`, each table also has a `vs previous`
    /// column and the regressions are called out.
    pub fn markdown(&self, previous: Option<&Report>, data: &str) -> String {
        let changes = previous
            .map(|p| compare(self, p, REGRESSION_THRESHOLD))
            .unwrap_or_default();
        let mut s = String::new();
        s.push_str("# p2plab benchmarks\n\n");
        let _ = writeln!(
            s,
            "These are measured figures, not estimates: each one is the median (and range) of the \
             samples taken by one run of `p2plab bench` on the machine below. To measure again, \
             run `cargo run --release -p p2plab -- bench`; the run compares its figures with the \
             ones recorded in this file and calls out every figure more than {}% worse \
             (a regression). What the figures say, and what they found wrong, is in \
             [`benchmark-findings.md`](benchmark-findings.md).\n",
            threshold_pct()
        );
        s.push_str("## Machine and run\n\n");
        let _ = writeln!(
            s,
            "Measured on {} with `{}`.\n",
            self.date,
            self.command.replace('`', "'")
        );
        let m = &self.machine;
        let _ = writeln!(s, "- Host: {}", m.hostname);
        let cpus = if m.cpus == 0 {
            UNKNOWN.to_string()
        } else {
            m.cpus.to_string()
        };
        let _ = writeln!(s, "- CPUs: {} ({})", cpus, m.cpu_model);
        let mem = if m.memory_gib > 0.0 {
            format!("{} GiB", fmt_value(m.memory_gib))
        } else {
            UNKNOWN.to_string()
        };
        let _ = writeln!(s, "- Memory: {mem}");
        let _ = writeln!(s, "- Kernel: {}", m.kernel);
        let _ = writeln!(s, "- Docker: {}", m.docker);
        if let Some(p) = previous {
            s.push('\n');
            let regressions: Vec<&Change> = changes.iter().filter(|c| c.regression).collect();
            if regressions.is_empty() {
                let _ = writeln!(
                    s,
                    "Compared with the previous run ({}): no figure is more than {}% worse.",
                    p.date,
                    threshold_pct()
                );
            } else {
                let _ = writeln!(
                    s,
                    "Compared with the previous run ({}), **{} regression{}** (more than {}% worse):\n",
                    p.date,
                    regressions.len(),
                    if regressions.len() == 1 { "" } else { "s" },
                    threshold_pct()
                );
                for c in regressions {
                    let _ = writeln!(
                        s,
                        "- {}: {} → {} {} ({})",
                        c.label,
                        fmt_value(c.previous),
                        fmt_value(c.current),
                        c.unit,
                        fmt_pct(c.change_pct)
                    );
                }
            }
        }
        for (g, figures) in self.sections() {
            let _ = writeln!(s, "\n## {}\n", section_title(g));
            if let Some(g) = g {
                if !g.method.trim().is_empty() {
                    let _ = writeln!(s, "{}\n", g.method.trim());
                }
            }
            if figures.is_empty() {
                s.push_str("_No figures in this run._\n");
                continue;
            }
            s.push_str("| Figure | n | median | range | unit | vs baseline |");
            if previous.is_some() {
                s.push_str(" vs previous |");
            }
            s.push_str("\n|---|--:|--:|---|---|---|");
            if previous.is_some() {
                s.push_str("---|");
            }
            s.push('\n');
            for f in &figures {
                let mut row = self.cells(f);
                if let Some(p) = previous {
                    row.push(vs_previous(f, p, &changes, true));
                }
                s.push('|');
                for cell in row {
                    let _ = write!(s, " {} |", md_cell(&cell));
                }
                s.push('\n');
            }
            let notes: Vec<&&Figure> = figures.iter().filter(|f| f.note.is_some()).collect();
            if !notes.is_empty() {
                s.push('\n');
                for f in notes {
                    let note = f.note.as_deref().unwrap_or_default();
                    let _ = writeln!(s, "- {}: {}", f.label, one_line(note));
                }
            }
        }
        s.push_str("\n## Data\n\n");
        let _ = writeln!(
            s,
            "Every sample of this run is in [`{data}`]({data}) (each figure with its computed summary and ratio): \
             this document is rendered from it, and `p2plab bench` compares its next run with it (`--baseline`)."
        );
        s
    }
}

fn section_title(g: Option<&Group>) -> &str {
    g.map_or("Other figures", |g| g.title.as_str())
}

/// `+12.0%`, `REGRESSION +31.0%` (bold in markdown), `new` when the previous run lacks it.
fn vs_previous(f: &Figure, previous: &Report, changes: &[Change], markdown: bool) -> String {
    match changes.iter().find(|c| c.id == f.id) {
        Some(c) if c.regression && markdown => format!("**REGRESSION {}**", fmt_pct(c.change_pct)),
        Some(c) if c.regression => format!("REGRESSION {}", fmt_pct(c.change_pct)),
        Some(c) => fmt_pct(c.change_pct),
        None if previous.figure(&f.id).is_none() => "new".to_string(),
        None => String::new(),
    }
}

/// A figure's median in a run compared with a previous run.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: String,
    pub label: String,
    pub unit: String,
    /// Median in the previous run.
    pub previous: f64,
    /// Median in this run.
    pub current: f64,
    /// Signed relative change of the median, in percent (+ = larger).
    pub change_pct: f64,
    /// Worse than the previous run by more than the threshold, according to [`Figure::better`].
    pub regression: bool,
}

/// Every figure of `current` with samples also in `previous` (same id, with samples; not when
/// the previous median is 0), in the order of `current`. A regression is a median worse by more
/// than `threshold` (0.20 = 20%) relative to the previous one: larger for [`Better::Lower`],
/// smaller for [`Better::Higher`]. Exactly at the threshold is not a regression (a margin of
/// 1e-9 absorbs decimal fractions not exact in binary).
pub fn compare(current: &Report, previous: &Report, threshold: f64) -> Vec<Change> {
    current
        .figures
        .iter()
        .filter_map(|f| {
            let cur = f.summary()?.median;
            let prev = previous.figure(&f.id)?.summary()?.median;
            if prev == 0.0 {
                return None;
            }
            let rel = (cur - prev) / prev.abs();
            let regression = match f.better {
                Better::Lower => rel > threshold + 1e-9,
                Better::Higher => rel < -threshold - 1e-9,
            };
            Some(Change {
                id: f.id.clone(),
                label: f.label.clone(),
                unit: f.unit.clone(),
                previous: prev,
                current: cur,
                change_pct: rel * 100.0,
                regression,
            })
        })
        .collect()
}

/// [`REGRESSION_THRESHOLD`] in percent, for text.
fn threshold_pct() -> String {
    fmt_pct_plain(REGRESSION_THRESHOLD * 100.0)
}

fn fmt_pct_plain(p: f64) -> String {
    let r = (p * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// `+12.0%`, `-3.1%` (`+0.0%` for what rounds to zero).
fn fmt_pct(p: f64) -> String {
    let r = (p * 10.0).round() / 10.0;
    let r = if r == 0.0 { 0.0 } else { r };
    format!("{r:+.1}%")
}

/// A number for people, about 3 significant digits and never in scientific notation: `0.123`,
/// `1.23`, `12.3`, `123`, `1234`, `12345`, `0.0123`.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let decimals = |a: f64| -> usize {
        if a >= 100.0 {
            0
        } else {
            (2 - a.log10().floor() as i64).clamp(0, 12) as usize
        }
    };
    let d = decimals(v.abs());
    let s = format!("{v:.d$}");
    // Rounding may carry into one more digit (9.996 → 10.00): then one decimal less.
    match s.parse::<f64>() {
        Ok(r) if r != 0.0 && decimals(r.abs()) < d => {
            let d = decimals(r.abs());
            format!("{v:.d$}")
        }
        _ => s,
    }
}

/// Text for a markdown table cell: `|` escaped, on one line.
fn md_cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

fn one_line(s: &str) -> String {
    s.replace("\r\n", " ").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn machine() -> Machine {
        Machine {
            hostname: "lab1".into(),
            cpus: 8,
            cpu_model: "Test CPU @ 3.00GHz".into(),
            memory_gib: 15.6,
            kernel: "6.1.0-test".into(),
            docker: "27.3.1".into(),
        }
    }

    fn report(rtt: Vec<f64>, tput: Vec<f64>) -> Report {
        Report {
            format: FORMAT,
            date: "2025-01-02T03:04:05Z".into(),
            command: "p2plab bench --samples 5".into(),
            machine: machine(),
            groups: vec![
                Group {
                    id: "rtt".into(),
                    title: "Round-trip time".into(),
                    method: "Ping-pong of 64 B messages, 5 samples.".into(),
                },
                Group {
                    id: "tput".into(),
                    title: "Throughput".into(),
                    method: "One stream, 64 MiB.".into(),
                },
            ],
            figures: vec![
                Figure::new(
                    "rtt.tcp.64B",
                    "rtt",
                    "raw TCP, 64 B",
                    "ms",
                    Better::Lower,
                    vec![0.5, 0.4, 0.6],
                ),
                Figure::new(
                    "rtt.direct.64B",
                    "rtt",
                    "libp2p request-response, direct, 64 B",
                    "ms",
                    Better::Lower,
                    rtt,
                )
                .vs("rtt.tcp.64B")
                .note("includes | the yamux frame"),
                Figure::new(
                    "tput.tcp",
                    "tput",
                    "raw TCP",
                    "Mbit/s",
                    Better::Higher,
                    vec![1000.0, 1100.0],
                ),
                Figure::new(
                    "tput.libp2p",
                    "tput",
                    "libp2p stream",
                    "Mbit/s",
                    Better::Higher,
                    tput,
                )
                .vs("tput.tcp"),
            ],
        }
    }

    #[test]
    fn summarize_odd_even_single_empty() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (4, 2.5, 1.0, 4.0));
        let s = summarize(&[7.5]).unwrap();
        assert_eq!(
            s,
            Summary {
                n: 1,
                median: 7.5,
                min: 7.5,
                max: 7.5,
                p95: 7.5
            }
        );
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn summarize_ignores_nan() {
        let s = summarize(&[f64::NAN, 5.0, 1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!(
            (s.n, s.median, s.min, s.max, s.p95),
            (3, 3.0, 1.0, 5.0, 5.0)
        );
    }

    #[test]
    fn summarize_p95_nearest_rank() {
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(summarize(&v).unwrap().p95, 19.0); // ⌈0.95·20⌉ = 19
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summarize(&v).unwrap().p95, 95.0);
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(summarize(&v).unwrap().p95, 10.0); // ⌈9.5⌉ = 10
        let v: Vec<f64> = (1..=21).map(f64::from).collect();
        assert_eq!(summarize(&v).unwrap().p95, 20.0); // ⌈19.95⌉ = 20
    }

    #[test]
    fn ratio_of_medians() {
        let r = report(vec![1.0, 1.2, 1.1], vec![500.0]);
        let direct = r.figure("rtt.direct.64B").unwrap();
        assert!((r.ratio(direct).unwrap() - 1.1 / 0.5).abs() < 1e-12);
        // Higher-is-better figures are still median / baseline median.
        assert!(
            (r.ratio(r.figure("tput.libp2p").unwrap()).unwrap() - 500.0 / 1050.0).abs() < 1e-12
        );
        assert_eq!(r.ratio(r.figure("rtt.tcp.64B").unwrap()), None);
        let empty = report(vec![], vec![500.0]);
        assert_eq!(empty.ratio(empty.figure("rtt.direct.64B").unwrap()), None);
        let mut missing = report(vec![1.0], vec![500.0]);
        missing.figures.retain(|f| f.id != "rtt.tcp.64B");
        assert_eq!(
            missing.ratio(missing.figure("rtt.direct.64B").unwrap()),
            None
        );
    }

    #[test]
    fn compare_both_directions() {
        let prev = report(vec![1.0], vec![500.0]);
        // Lower is better: +30% is a regression; Higher is better: +30% is not.
        let cur = report(vec![1.3], vec![650.0]);
        let c = compare(&cur, &prev, REGRESSION_THRESHOLD);
        let get = |id: &str| c.iter().find(|c| c.id == id).unwrap().clone();
        assert!(get("rtt.direct.64B").regression);
        assert!((get("rtt.direct.64B").change_pct - 30.0).abs() < 1e-9);
        assert!(!get("tput.libp2p").regression);
        assert!((get("tput.libp2p").change_pct - 30.0).abs() < 1e-9);
        // And the other way round.
        let cur = report(vec![0.7], vec![350.0]);
        let c = compare(&cur, &prev, REGRESSION_THRESHOLD);
        let get = |id: &str| c.iter().find(|c| c.id == id).unwrap().clone();
        assert!(!get("rtt.direct.64B").regression);
        assert!(get("tput.libp2p").regression);
        assert!((get("tput.libp2p").change_pct + 30.0).abs() < 1e-9);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn compare_exactly_at_threshold_is_no_regression() {
        for (p, c, t) in [
            (1.0, 1.2, 0.8),
            (0.1, 0.12, 0.08),
            (10.0, 12.0, 8.0),
            (0.3, 0.36, 0.24),
        ] {
            let prev = report(vec![p], vec![p]);
            let cur = report(vec![c], vec![t]);
            let changes = compare(&cur, &prev, 0.20);
            assert!(
                changes.iter().all(|c| !c.regression),
                "{p} → {c}/{t}: {changes:?}"
            );
            // Just beyond is one.
            let cur = report(vec![c * 1.001], vec![t * 0.999]);
            let changes = compare(&cur, &prev, 0.20);
            assert!(
                changes
                    .iter()
                    .find(|c| c.id == "rtt.direct.64B")
                    .unwrap()
                    .regression
            );
            assert!(
                changes
                    .iter()
                    .find(|c| c.id == "tput.libp2p")
                    .unwrap()
                    .regression
            );
        }
    }

    #[test]
    fn compare_skips_missing_empty_and_zero() {
        let mut prev = report(vec![1.0], vec![0.0]);
        prev.figures.retain(|f| f.id != "rtt.tcp.64B");
        let mut cur = report(vec![], vec![10.0]);
        cur.figures.push(Figure::new(
            "new.one",
            "rtt",
            "new",
            "ms",
            Better::Lower,
            vec![1.0],
        ));
        let c = compare(&cur, &prev, REGRESSION_THRESHOLD);
        // rtt.tcp.64B: not in previous; rtt.direct.64B: no samples now; tput.libp2p: previous
        // median 0; new.one: new.
        let ids: Vec<&str> = c.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["tput.tcp"]);
    }

    #[test]
    fn json_round_trip_is_exact_and_carries_summary() {
        let mut r = report(
            vec![994.1414234139935, 0.1 + 0.2, 1e-7, f64::MAX, 5e-324],
            vec![12.345678901234567],
        );
        r.machine.memory_gib = 31.123456789012345;
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["figures"][1]["summary"]["n"], 5);
        assert!(v["figures"][1]["ratio"].is_number());
        assert!(v["figures"][0].get("ratio").is_none());
        assert!(v["figures"][0].get("baseline").is_none());
        assert_eq!(Report::from_json(&json).unwrap(), r);
        // Without the computed fields too.
        let plain = serde_json::to_string(&r).unwrap();
        assert!(!plain.contains("summary"));
        assert_eq!(Report::from_json(&plain).unwrap(), r);
    }

    #[test]
    fn json_nan_sample_reads_back_as_nan() {
        let r = report(vec![1.0, f64::NAN], vec![1.0]);
        let back = Report::from_json(&r.to_json()).unwrap();
        let s = &back.figure("rtt.direct.64B").unwrap().samples;
        assert_eq!(s[0], 1.0);
        assert!(s[1].is_nan());
    }

    #[test]
    fn json_errors() {
        assert!(matches!(Report::from_json("{"), Err(BenchError::Json(_))));
        let mut r = report(vec![1.0], vec![1.0]);
        r.format = 2;
        assert!(matches!(
            Report::from_json(&r.to_json()),
            Err(BenchError::Format(2))
        ));
        let e = Report::from_json("{}").unwrap_err().to_string();
        assert!(e.starts_with("invalid benchmark JSON: "), "{e}");
    }

    #[test]
    fn markdown_round_trip() {
        let r = report(vec![1.0, 1.25, 1.1, 0.9], vec![480.5, 510.25]);
        let md = r.markdown(None, "benchmarks.json");
        assert!(md.starts_with("# p2plab benchmarks\n"));
        assert!(md.contains("cargo run --release -p p2plab -- bench"));
        assert!(md.contains("## Machine and run"));
        assert!(md.contains("`p2plab bench --samples 5`"));
        assert!(md.contains("## Round-trip time\n\nPing-pong of 64 B messages, 5 samples.\n"));
        assert!(md.contains("| Figure | n | median | range | unit | vs baseline |\n"));
        assert!(!md.contains("vs previous"));
        assert!(md.contains(
            "| libp2p request-response, direct, 64 B | 4 | 1.05 | 0.900–1.25 | ms | 2.10× raw TCP, 64 B |"
        ));
        assert!(
            md.contains("\n- libp2p request-response, direct, 64 B: includes | the yamux frame\n")
        );
        assert!(md.contains("\n## Data\n\n"));
        assert!(md.contains("[`benchmarks.json`](benchmarks.json)"), "{md}");
        assert!(!md.contains(JSON_MARKER) && !md.contains("```json"));
        // With a previous run: its column and the call-out, and still readable.
        let prev = report(vec![0.5], vec![500.0]);
        let md = r.markdown(Some(&prev), "benchmarks.json");
        assert!(md.contains(" vs previous |"));
        assert!(md.contains("**REGRESSION +110.0%**"));
        assert!(md.contains("**1 regression**"));
    }

    fn longest_backtick_run(s: &str) -> usize {
        s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
    }

    /// A document of the earlier format: the JSON fenced after the marker.
    fn legacy_markdown(r: &Report) -> String {
        let json = r.to_json();
        let fence = "`".repeat(longest_backtick_run(&json).max(2) + 1);
        format!("# p2plab benchmarks\n\n## Data\n\n{JSON_MARKER}\n{fence}json\n{json}\n{fence}\n")
    }

    #[test]
    fn documents_of_the_earlier_format_are_still_read() {
        let mut r = report(vec![1.0], vec![1.0]);
        r.figures[0].label = "a ```` b".into();
        let md = legacy_markdown(&r) + "\nSomething appended later.\n";
        assert_eq!(Report::from_markdown(&md).unwrap(), r);
    }

    #[test]
    fn from_markdown_errors() {
        let e = Report::from_markdown("# p2plab benchmarks\n\nnothing here\n").unwrap_err();
        assert!(matches!(e, BenchError::NoJsonBlock));
        assert!(e.to_string().contains("no p2plab-bench JSON block"));
        let e = Report::from_markdown(&format!("{JSON_MARKER}\n```json\n{{\n")).unwrap_err();
        assert!(matches!(e, BenchError::UnclosedJsonBlock));
        let e = Report::from_markdown(&format!("{JSON_MARKER}\n\nnot a fence\n")).unwrap_err();
        assert!(matches!(e, BenchError::NoJsonBlock));
        let e = Report::from_markdown(&format!("{JSON_MARKER}\n```json\n{{\"format\":1}}\n```\n"))
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid benchmark JSON"), "{e}");
    }

    #[test]
    fn table_flags_regressions_only() {
        let prev = report(vec![1.0], vec![500.0]);
        // rtt direct 31% worse (lower is better), libp2p throughput 31% better.
        let cur = report(vec![1.31], vec![655.0]);
        let t = cur.table(Some(&prev));
        let line = |label: &str| {
            t.lines()
                .find(|l| l.starts_with(label))
                .unwrap()
                .to_string()
        };
        assert!(
            line("libp2p request-response").contains("REGRESSION +31.0%"),
            "{t}"
        );
        let tput = line("libp2p stream");
        assert!(
            tput.contains("+31.0%") && !tput.contains("REGRESSION"),
            "{t}"
        );
        assert!(t.contains("== Round-trip time =="));
        assert!(
            t.contains("Regressions (> 20% worse than 2025-01-02T03:04:05Z):"),
            "{t}"
        );
        assert!(
            t.contains("  libp2p request-response, direct, 64 B: 1.00 → 1.31 ms (+31.0%)"),
            "{t}"
        );
        assert!(!t.contains("No regression"));

        let better = report(vec![0.9], vec![600.0]);
        let t = better.table(Some(&prev));
        assert!(!t.contains("REGRESSION"), "{t}");
        assert!(!t.contains("Regressions"), "{t}");
        assert!(
            t.contains("No regression against 2025-01-02T03:04:05Z."),
            "{t}"
        );
    }

    #[test]
    fn table_columns_align() {
        let r = report(vec![1.0, 1.2], vec![480.0]);
        let t = r.table(None);
        assert!(!t.contains("vs previous"));
        assert!(t.contains("2.20× raw TCP, 64 B"), "{t}");
        assert!(t.contains("0.457× raw TCP"), "{t}");
        // The unit column starts at the same character everywhere.
        let cols: Vec<usize> = t
            .lines()
            .filter(|l| !l.starts_with("==") && !l.is_empty())
            .map(|l| {
                let unit = [" unit", " ms", " Mbit/s"]
                    .iter()
                    .find_map(|u| l.find(u))
                    .unwrap();
                l[..unit].chars().count()
            })
            .collect();
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "{t}");
    }

    #[test]
    fn fmt_value_cases() {
        let cases = [
            (0.123, "0.123"),
            (1.234, "1.23"),
            (12.34, "12.3"),
            (123.4, "123"),
            (1234.4, "1234"),
            (12345.0, "12345"),
            (1234567.0, "1234567"),
            (0.01234, "0.0123"),
            (0.0001234, "0.000123"),
            (1.0, "1.00"),
            (0.0, "0"),
            (-2.5, "-2.50"),
            (9.996, "10.0"),
            (99.96, "100"),
            (0.9996, "1.00"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(fmt_value(v), want, "{v}");
        }
        assert!(!fmt_value(1e20).contains('e'));
        assert!(!fmt_value(1e-9).contains('e'));
    }

    #[test]
    fn pipes_escaped_in_tables() {
        assert_eq!(md_cell("a | b\nc"), "a \\| b c");
        let mut r = report(vec![1.0], vec![1.0]);
        r.figures[0].label = "tcp | raw".into();
        let md = r.markdown(None, "benchmarks.json");
        assert!(md.contains("| tcp \\| raw | 3 |"), "{md}");
        assert!(md.contains("2.00× tcp \\| raw |"), "{md}");
    }

    #[test]
    fn machine_parsing() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\nBogoMIPS : 50\n"), None);
        assert_eq!(
            memory_gib("MemTotal:       16315388 kB\nMemFree: 1 kB\n"),
            Some(15.6)
        );
        assert_eq!(memory_gib("nothing"), None);
        let m = Machine::detect(" ".into());
        assert_eq!(m.docker, "unknown");
        assert!(!m.hostname.is_empty() && !m.kernel.is_empty() && !m.cpu_model.is_empty());
    }
}
