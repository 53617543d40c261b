//! The results of a run: every scenario's figures for glance-stream (or
//! glance-api) and for each peer measured beside it, with their ratios;
//! printed as Markdown tables as they come, and written at the end as
//! `results.json` and an HTML report (see `html`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// A metric: its key in `results.json`, its label in tables and plots, and
/// the decimals it is printed with. Units are in the keys.
#[derive(Debug)]
pub struct Metric {
    /// Key in the JSON figures.
    pub key: &'static str,
    /// Column heading.
    pub label: &'static str,
    /// Decimals shown.
    pub decimals: usize,
}

const fn m(key: &'static str, label: &'static str, decimals: usize) -> Metric {
    Metric {
        key,
        label,
        decimals,
    }
}

/// Aggregate download throughput.
pub const GB_PER_S: Metric = m("gb_per_s", "GB/s", 2);
/// Aggregate upload throughput.
pub const MIB_PER_S: Metric = m("mib_per_s", "MiB/s", 0);
/// Requests per second.
pub const REQ_PER_S: Metric = m("req_per_s", "req/s", 0);
/// The slowest client's own throughput.
pub const CLIENT_GB_PER_S_MIN: Metric = m("per_client_gb_per_s_min", "slowest client GB/s", 3);
/// The median client's own throughput.
pub const CLIENT_GB_PER_S_P50: Metric = m("per_client_gb_per_s_p50", "median client GB/s", 3);
/// The median client's own upload throughput.
pub const CLIENT_MIB_PER_S_P50: Metric = m("per_client_mib_per_s_p50", "median client MiB/s", 0);
/// Median request latency (a whole download for the transfer scenarios).
pub const LATENCY_P50: Metric = m("latency_ms_p50", "p50 ms", 2);
/// 99th percentile request latency.
pub const LATENCY_P99: Metric = m("latency_ms_p99", "p99 ms", 2);
/// Median time to the first response byte.
pub const TTFB_P50: Metric = m("ttfb_ms_p50", "TTFB p50 ms", 2);
/// 99th percentile time to the first response byte.
pub const TTFB_P99: Metric = m("ttfb_ms_p99", "TTFB p99 ms", 2);
/// Server CPU seconds (user + system, whole process tree) per GB moved.
pub const SERVER_CPU_PER_GB: Metric = m("server_cpu_s_per_gb", "server CPU s/GB", 3);
/// Server CPU seconds per GiB moved.
pub const SERVER_CPU_PER_GIB: Metric = m("server_cpu_s_per_gib", "server CPU s/GiB", 3);
/// Server CPU µs per request.
pub const SERVER_CPU_PER_REQ: Metric = m("server_cpu_us_per_req", "server CPU µs/req", 1);
/// The bench's own CPU seconds per GB (clients and hashing).
pub const CLIENT_CPU_PER_GB: Metric = m("client_cpu_s_per_gb", "client CPU s/GB", 3);
/// The bench's own CPU µs per request.
pub const CLIENT_CPU_PER_REQ: Metric = m("client_cpu_us_per_req", "client CPU µs/req", 1);
/// Peak resident memory of the server's process tree during the round.
pub const PEAK_RSS: Metric = m("server_peak_rss_mib", "server peak RSS MiB", 0);
/// Bytes read from the backend, as a multiple of the image.
pub const BACKEND_X: Metric = m("backend_bytes_x_image", "backend bytes (x image)", 2);
/// Seconds until the last client had the whole image.
pub const ALL_DONE_S: Metric = m("all_done_s", "all done s", 1);
/// `all_done_s` over the fill time (one direct download from the backend).
pub const ALL_DONE_X_FILL: Metric = m("all_done_x_fill_time", "all done (x fill time)", 2);
/// Idle (slowloris) connections the server closed during the round, each
/// opened again at once.
pub const IDLE_DROPPED: Metric = m("idle_conns_dropped", "idle dropped", 0);

/// One server's figures at one point: medians over the rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// Which server.
    pub server: String,
    /// Metric key to value.
    #[serde(flatten)]
    pub metrics: BTreeMap<String, f64>,
    /// Latency at each percentile 0, 1, ..., 100 (ms), over all rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_cdf_ms: Vec<f64>,
}

impl Figures {
    /// The value of `metric`, if measured.
    pub fn get(&self, metric: &Metric) -> Option<f64> {
        self.metrics.get(metric.key).copied()
    }
}

/// One point of a scenario: a client count (and, for `api`, a request
/// kind; for `hot` with `--idle`, the idle connections held), ours and each
/// peer's figures.
#[derive(Clone, Debug)]
pub struct Point {
    /// Concurrent clients.
    pub clients: usize,
    /// What was asked, where a scenario asks more than one thing.
    pub kind: Option<String>,
    /// glance-stream's or glance-api's figures.
    pub ours: Figures,
    /// Each peer's, by key (`nginx`, `glance`, ...).
    pub peers: Vec<(String, Figures)>,
}

impl Point {
    /// Ours, then each peer's figures.
    pub fn all(&self) -> impl Iterator<Item = &Figures> {
        std::iter::once(&self.ours).chain(self.peers.iter().map(|(_, f)| f))
    }

    /// The table cells of `f`: each column's value, `-` where not measured.
    pub fn cells<'s>(
        columns: &'s [&'static Metric],
        f: &'s Figures,
    ) -> impl Iterator<Item = String> + 's {
        columns
            .iter()
            .map(|m| f.get(m).map_or("-".into(), |v| fmt_num(v, m.decimals)))
    }

    /// The table cells of ours / `peer`: each column's ratio, `-` where
    /// either was not measured.
    pub fn ratio_cells(&self, columns: &[&'static Metric], peer: &Figures) -> Vec<String> {
        let r = self.ratios(peer);
        columns
            .iter()
            .map(|m| r.get(m.key).map_or("-".into(), |v| format!("{v:.2}x")))
            .collect()
    }

    /// ours / peer for every metric both have.
    pub fn ratios(&self, peer: &Figures) -> BTreeMap<String, f64> {
        self.ours
            .metrics
            .iter()
            .filter_map(|(k, v)| {
                let p = *peer.metrics.get(k)?;
                (p != 0.0 && p.is_finite() && v.is_finite()).then(|| (k.clone(), v / p))
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("clients".into(), json!(self.clients));
        if let Some(kind) = &self.kind {
            o.insert("kind".into(), json!(kind));
        }
        o.insert("ours".into(), json!(self.ours));
        for (key, fig) in &self.peers {
            o.insert(key.clone(), json!(fig));
            o.insert(format!("ratio_vs_{key}"), json!(self.ratios(fig)));
        }
        Value::Object(o)
    }
}

/// Bytes over time during one storm, sampled at a fixed interval.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    /// Which server.
    pub server: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds between samples, as planned.
    pub interval_s: f64,
    /// The image's size.
    pub image_bytes: u64,
    /// When each sample was taken, seconds from the start.
    pub times_s: Vec<f64>,
    /// Bytes each client had received, per sample.
    pub per_client_bytes: Vec<Vec<u64>>,
    /// Bytes the backend's processes had written, per sample (`wchar`,
    /// which counts `sendfile`; the scenario's total comes from the
    /// backend's access log, which counts body bytes only).
    pub backend_bytes: Vec<u64>,
}

/// One scenario's results.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// `hot`, `storm`, `ranges`, `upload`, `api`.
    pub name: &'static str,
    /// A line saying what was measured.
    pub title: String,
    /// The command that repeats it.
    pub command: String,
    /// The settings, for the record.
    pub settings: Value,
    /// The columns of its table, headline first, cost second.
    pub columns: &'static [&'static Metric],
    /// Its points.
    pub points: Vec<Point>,
    /// Storm timelines.
    pub timelines: Vec<Timeline>,
    /// Remarks made while running (a peer skipped, a limit reached).
    pub notes: Vec<String>,
    /// The heading of the column of `Point::kind`, where its points differ
    /// in more than the client count.
    pub kind_heading: Option<&'static str>,
}

impl Scenario {
    /// A scenario with no points yet.
    pub fn new(
        name: &'static str,
        title: String,
        command: String,
        settings: Value,
        columns: &'static [&'static Metric],
    ) -> Scenario {
        Scenario {
            name,
            title,
            command,
            settings,
            columns,
            points: Vec::new(),
            timelines: Vec::new(),
            notes: Vec::new(),
            kind_heading: None,
        }
    }

    /// The same, its points told apart by `Point::kind` too, in a column
    /// headed `heading`.
    pub fn by_kind(mut self, heading: &'static str) -> Scenario {
        self.kind_heading = Some(heading);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "title": self.title,
            "command": self.command,
            "settings": self.settings,
            "points": self.points.iter().map(Point::to_json).collect::<Vec<_>>(),
            "timelines": self.timelines,
            "notes": self.notes,
        })
    }

    /// The Markdown rows of one point (no header): ours, each peer, and the
    /// ratio to each peer.
    pub fn rows(&self, p: &Point) -> Vec<String> {
        let label = match (self.kind_heading, &p.kind) {
            (Some(_), k) => format!("{} | {}", p.clients, k.as_deref().unwrap_or("")),
            (None, _) => p.clients.to_string(),
        };
        let mut rows = Vec::new();
        for f in p.all() {
            let cells: Vec<String> = Point::cells(self.columns, f).collect();
            rows.push(format!(
                "| {label} | {} | {} |",
                f.server,
                cells.join(" | ")
            ));
        }
        for (_, f) in &p.peers {
            let ratios = p.ratio_cells(self.columns, f).join(" | ");
            rows.push(format!("| {label} | ratio vs {} | {ratios} |", f.server));
        }
        rows
    }

    /// The Markdown table header.
    pub fn header(&self) -> String {
        let labels: Vec<&str> = self.columns.iter().map(|m| m.label).collect();
        let kind = self
            .kind_heading
            .map_or(String::new(), |h| format!(" {h} |"));
        format!(
            "| clients |{kind} server | {} |\n|{}",
            labels.join(" | "),
            " --- |".repeat(labels.len() + 2 + usize::from(self.kind_heading.is_some()))
        )
    }
}

/// A number with thousands separators past 10,000 (or 1,000 for a whole
/// number), else with `decimals` places.
fn fmt_num(v: f64, decimals: usize) -> String {
    if v.abs() >= 10_000.0 || (decimals == 0 && v.abs() >= 1_000.0) {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// A whole run: the machine, the scenarios, and where to write them.
pub struct Run {
    started: String,
    scenarios: Vec<Scenario>,
    report: Option<PathBuf>,
    bar: ProgressBar,
}

impl Run {
    /// A run writing its report to `report` (if given) when it finishes.
    pub fn new(report: Option<PathBuf>) -> Run {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rounds  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Run {
            started: now_utc(),
            scenarios: Vec::new(),
            report,
            bar,
        }
    }

    /// Prints a line above the progress bar.
    pub fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Adds `rounds` to the work planned.
    pub fn plan(&self, rounds: usize) {
        self.bar.inc_length(rounds as u64);
    }

    /// One round is about to run: shown beside the bar.
    pub fn starting(&self, what: String) {
        self.bar.set_message(what);
    }

    /// One round is done.
    pub fn done_round(&self) {
        self.bar.inc(1);
    }

    /// Starts a scenario: prints its title and table header.
    pub fn begin(&mut self, scenario: Scenario) {
        self.say(&format!("\n{}\n", scenario.title));
        self.say(&scenario.header());
        self.scenarios.push(scenario);
    }

    /// The scenario under way.
    pub fn current(&mut self) -> &mut Scenario {
        self.scenarios.last_mut().expect("a scenario has begun")
    }

    /// Records a point of the scenario under way and prints its rows.
    pub fn point(&mut self, p: Point) {
        let rows = self.current().rows(&p);
        for r in rows {
            self.say(&r);
        }
        self.current().points.push(p);
    }

    /// Records a remark of the scenario under way and prints it.
    pub fn note(&mut self, note: String) {
        self.say(&format!("note: {note}"));
        self.current().notes.push(note);
    }

    /// Ends the run: writes `results.json` and `index.html` when a report
    /// directory was given.
    pub fn finish(self) {
        self.bar.finish_and_clear();
        let Some(dir) = &self.report else { return };
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let json = self.to_json();
        write(
            &dir.join("results.json"),
            &serde_json::to_string_pretty(&json).unwrap_or_default(),
        );
        write(
            &dir.join("index.html"),
            &crate::html::page(&self.started, &machine(), &self.scenarios),
        );
        println!(
            "\nreport: {}/index.html and {}/results.json",
            dir.display(),
            dir.display()
        );
    }

    fn to_json(&self) -> Value {
        let scenarios: Map<String, Value> = self
            .scenarios
            .iter()
            .map(|s| (s.name.to_owned(), s.to_json()))
            .collect();
        json!({
            "started": self.started,
            "machine": machine(),
            "scenarios": scenarios,
        })
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// What the run ran on.
pub fn machine() -> BTreeMap<&'static str, String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split_once(':')?
                    .1
                    .trim()
                    .to_owned(),
            )
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    BTreeMap::from([
        ("cpu", cpu),
        ("cores", cores.to_string()),
        ("kernel", kernel),
    ])
}

/// The current time, UTC, as RFC 3339.
fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(server: &str, gbps: f64, cpu: f64) -> Figures {
        Figures {
            server: server.into(),
            metrics: BTreeMap::from([
                (GB_PER_S.key.to_owned(), gbps),
                (SERVER_CPU_PER_GB.key.to_owned(), cpu),
            ]),
            latency_cdf_ms: Vec::new(),
        }
    }

    fn point() -> Point {
        Point {
            clients: 16,
            kind: None,
            ours: figures("glance-stream", 6.0, 0.1),
            peers: vec![
                ("nginx".into(), figures("nginx", 4.0, 0.2)),
                ("glance".into(), figures("Glance", 2.0, 0.0)),
            ],
        }
    }

    #[test]
    fn each_peer_gets_its_figures_and_ours_over_theirs() {
        let json = point().to_json();
        assert_eq!(json["clients"], 16);
        assert_eq!(json["ours"]["server"], "glance-stream");
        assert_eq!(json["ours"]["gb_per_s"], 6.0);
        assert_eq!(json["nginx"]["gb_per_s"], 4.0);
        assert_eq!(json["ratio_vs_nginx"]["gb_per_s"], 1.5);
        assert_eq!(json["ratio_vs_nginx"]["server_cpu_s_per_gb"], 0.5);
        assert_eq!(json["ratio_vs_glance"]["gb_per_s"], 3.0);
        // No ratio over a zero.
        assert!(json["ratio_vs_glance"].get("server_cpu_s_per_gb").is_none());
    }

    #[test]
    fn markdown_rows_hold_values_and_ratios() {
        let s = Scenario::new(
            "hot",
            String::new(),
            String::new(),
            Value::Null,
            &[&GB_PER_S, &SERVER_CPU_PER_GB, &PEAK_RSS],
        );
        let rows = s.rows(&point());
        assert_eq!(rows[0], "| 16 | glance-stream | 6.00 | 0.100 | - |");
        assert_eq!(rows[1], "| 16 | nginx | 4.00 | 0.200 | - |");
        assert_eq!(rows[3], "| 16 | ratio vs nginx | 1.50x | 0.50x | - |");
        assert_eq!(s.header().lines().count(), 2);
    }

    #[test]
    fn a_kind_column_is_headed_and_every_row_fills_it() {
        let s = Scenario::new(
            "hot",
            String::new(),
            String::new(),
            Value::Null,
            &[&GB_PER_S, &IDLE_DROPPED],
        )
        .by_kind("load");
        let mut p = point();
        p.kind = Some("1000 idle".into());
        p.ours.metrics.insert(IDLE_DROPPED.key.to_owned(), 3.0);
        let rows = s.rows(&p);
        assert_eq!(rows[0], "| 16 | 1000 idle | glance-stream | 6.00 | 3 |");
        assert_eq!(rows[3], "| 16 | 1000 idle | ratio vs nginx | 1.50x | - |");
        assert!(
            s.header()
                .starts_with("| clients | load | server | GB/s | idle dropped |")
        );
        // A point without a kind still has the column, empty.
        p.kind = None;
        assert_eq!(s.rows(&p)[1], "| 16 |  | nginx | 4.00 | - |");
        let cells = |line: &str| line.matches('|').count();
        for line in s
            .header()
            .lines()
            .chain(s.rows(&p).iter().map(String::as_str))
        {
            assert_eq!(cells(line), 6, "{line}");
        }
    }

    #[test]
    fn numbers_are_grouped_past_ten_thousand() {
        assert_eq!(fmt_num(12_345.6, 2), "12,346");
        assert_eq!(fmt_num(1_234.0, 0), "1,234");
        assert_eq!(fmt_num(1_234.5, 1), "1234.5");
        assert_eq!(fmt_num(-1_234_567.0, 0), "-1,234,567");
        assert_eq!(fmt_num(0.1234, 3), "0.123");
    }
}
