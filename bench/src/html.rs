//! The HTML report: for each scenario its command, its table (ours, each
//! peer, the ratios) and SVG plots drawn with plotters: the headline figure
//! and the cost against the client count, the latency CDFs, and for the
//! storm each client's bytes over time beside the backend's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::{Figures, Metric, Point, Scenario, Timeline};

type Plot = Result<String, Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (640, 380);
const FONT: (&str, u32) = ("sans-serif", 15);

/// The whole page.
pub fn page(started: &str, machine: &BTreeMap<&str, String>, scenarios: &[Scenario]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>glance-bench</title>\n<style>\
         body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0;font-size:14px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:not(:first-child):not(.n),th{{text-align:left}} td.n{{text-align:right}}\
         tr.ratio td{{color:#555;font-style:italic}}\
         code{{background:#f4f4f4;padding:2px 4px}} .plots{{display:flex;flex-wrap:wrap;gap:8px}}\
         </style></head><body>\n<h1>glance-bench</h1>\n<p>Run started {}; {} ({} cores), kernel {}. \
         Medians over rounds; servers alternate round by round. Ratios are ours / the peer's.</p>\n",
        esc(started),
        esc(&machine["cpu"]),
        esc(&machine["cores"]),
        esc(&machine["kernel"]),
    );
    for s in scenarios {
        scenario(&mut h, s);
    }
    h.push_str("</body></html>\n");
    h
}

fn scenario(h: &mut String, s: &Scenario) {
    let _ = write!(
        h,
        "<h2 id=\"{0}\">{0}</h2>\n<p>{1}</p>\n<p><code>{2}</code></p>\n",
        s.name,
        esc(&s.title),
        esc(&s.command)
    );
    table(h, s);
    for note in &s.notes {
        let _ = writeln!(h, "<p>Note: {}</p>", esc(note));
    }
    h.push_str("<div class=\"plots\">\n");
    let mut plots = Vec::new();
    for metric in s.columns.iter().take(2) {
        plots.push(by_clients(s, metric));
    }
    plots.push(latency_cdf(s));
    if let Some(largest) = s.timelines.iter().map(|t| t.clients).max() {
        for t in s.timelines.iter().filter(|t| t.clients == largest) {
            plots.push(timeline(t));
        }
    }
    for p in plots {
        match p {
            Ok(svg) => h.push_str(&svg),
            Err(e) => {
                let _ = write!(h, "<p>(plot failed: {})</p>", esc(&e.to_string()));
            }
        }
    }
    h.push_str("</div>\n");
}

fn table(h: &mut String, s: &Scenario) {
    h.push_str("<table><tr><th>clients</th>");
    if let Some(heading) = s.kind_heading {
        let _ = write!(h, "<th>{}</th>", esc(heading));
    }
    h.push_str("<th>server</th>");
    for m in s.columns {
        let _ = write!(h, "<th>{}</th>", esc(m.label));
    }
    h.push_str("</tr>\n");
    for p in &s.points {
        let lead = |server: &str, class: &str| {
            let mut r = format!("<tr class=\"{class}\"><td>{}</td>", p.clients);
            if s.kind_heading.is_some() {
                let _ = write!(r, "<td>{}</td>", esc(p.kind.as_deref().unwrap_or("")));
            }
            let _ = write!(r, "<td>{}</td>", esc(server));
            r
        };
        for f in p.all() {
            h.push_str(&lead(&f.server, ""));
            for v in Point::cells(s.columns, f) {
                let _ = write!(h, "<td class=\"n\">{v}</td>");
            }
            h.push_str("</tr>\n");
        }
        for (_, f) in &p.peers {
            h.push_str(&lead(&format!("ratio vs {}", f.server), "ratio"));
            for v in p.ratio_cells(s.columns, f) {
                let _ = write!(h, "<td class=\"n\">{v}</td>");
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</table>\n");
}

/// One line per server (and request kind): `metric` against the client
/// count, the counts evenly spaced (they grow by multiples).
fn by_clients(s: &Scenario, metric: &Metric) -> Plot {
    let mut counts: Vec<usize> = s.points.iter().map(|p| p.clients).collect();
    counts.sort_unstable();
    counts.dedup();
    let at = |clients: usize| counts.iter().position(|&c| c == clients).unwrap_or(0) as f64;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for p in &s.points {
        for f in p.all() {
            if let Some(v) = f.get(metric) {
                let name = match &p.kind {
                    Some(k) => format!("{} {k}", f.server),
                    None => f.server.clone(),
                };
                series.entry(name).or_default().push((at(p.clients), v));
            }
        }
    }
    let y1 = series.values().flatten().map(|p| p.1).fold(0.0, f64::max);
    let last = counts.len().saturating_sub(1) as f64;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            counts
                .get(i as usize)
                .map_or(String::new(), ToString::to_string)
        } else {
            String::new()
        }
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: {}", s.name, metric.label), FONT)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.3..last + 0.3, 0.0..(y1 * 1.15).max(1e-9))?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc(metric.label)
            .x_labels(counts.len() * 2 + 1)
            .x_label_formatter(&label)
            .disable_x_mesh()
            .draw()?;
        for (i, (name, pts)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

/// Latency CDFs at the largest client count: one line per server (and kind).
fn latency_cdf(s: &Scenario) -> Plot {
    let largest = s.points.iter().map(|p| p.clients).max().unwrap_or(0);
    let mut series: Vec<(String, &Figures)> = Vec::new();
    for p in s.points.iter().filter(|p| p.clients == largest) {
        for f in p.all() {
            if f.latency_cdf_ms.is_empty() {
                continue;
            }
            let name = match &p.kind {
                Some(k) => format!("{} {k}", f.server),
                None => f.server.clone(),
            };
            series.push((name, f));
        }
    }
    let x1 = series
        .iter()
        .filter_map(|(_, f)| f.latency_cdf_ms.last())
        .fold(0.0f64, |a, b| a.max(*b));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: latency CDF, {largest} clients", s.name), FONT)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..(x1 * 1.05).max(1e-6), 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("latency ms")
            .y_desc("percent of requests")
            .draw()?;
        for (i, (name, f)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts = f
                .latency_cdf_ms
                .iter()
                .enumerate()
                .map(|(p, ms)| (*ms, p as f64));
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

/// One storm: each client's bytes received over time (thin lines) and the
/// bytes read from the backend (thick), in GiB.
fn timeline(t: &Timeline) -> Plot {
    const GIB: f64 = (1u64 << 30) as f64;
    let secs = t.times_s.last().copied().unwrap_or(0.0);
    let ymax = t
        .backend_bytes
        .iter()
        .copied()
        .chain(t.per_client_bytes.iter().flatten().copied())
        .max()
        .unwrap_or(0)
        .max(t.image_bytes) as f64
        / GIB;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("storm, {} clients: {}", t.clients, t.server), FONT)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..secs.max(t.interval_s), 0.0..ymax * 1.08)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("GiB")
            .draw()?;
        let at = |i: usize| t.times_s.get(i).copied().unwrap_or(0.0);
        let client_color = BLUE.mix(0.25);
        for (c, bytes) in t.per_client_bytes.iter().enumerate() {
            let s = chart.draw_series(LineSeries::new(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (at(i), *b as f64 / GIB)),
                client_color.stroke_width(1),
            ))?;
            if c == 0 {
                s.label("bytes received, per client").legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(1))
                });
            }
        }
        chart
            .draw_series(LineSeries::new(
                t.backend_bytes
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (at(i), *b as f64 / GIB)),
                RED.stroke_width(3),
            ))?
            .label("bytes sent by the backend")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(3)));
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string().into())
}

/// `s` with HTML's special characters escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{GB_PER_S, SERVER_CPU_PER_GB};

    #[test]
    fn the_page_holds_the_table_and_a_plot_per_figure() {
        let fig = |server: &str, gbps: f64| Figures {
            server: server.into(),
            metrics: BTreeMap::from([
                (GB_PER_S.key.to_owned(), gbps),
                (SERVER_CPU_PER_GB.key.to_owned(), 0.2),
            ]),
            latency_cdf_ms: (0..=100).map(f64::from).collect(),
        };
        let mut s = Scenario::new(
            "hot",
            "hot <object>".into(),
            "glance-bench hot".into(),
            serde_json::Value::Null,
            &[&GB_PER_S, &SERVER_CPU_PER_GB],
        );
        for clients in [1, 16] {
            s.points.push(Point {
                clients,
                kind: None,
                ours: fig("glance-stream", 6.0),
                peers: vec![("nginx".into(), fig("nginx", 4.0))],
            });
        }
        let machine = BTreeMap::from([
            ("cpu", "x".into()),
            ("cores", "2".into()),
            ("kernel", "k".into()),
        ]);
        let h = page("now", &machine, &[s]);
        // Throughput and cost against clients, and the latency CDF.
        assert_eq!(h.matches("<svg").count(), 3, "{h}");
        assert!(h.contains("<td class=\"n\">6.00</td>"));
        assert!(h.contains("<td>ratio vs nginx</td><td class=\"n\">1.50x</td>"));
        assert!(h.contains("hot &lt;object&gt;"));
        assert!(!h.contains("plot failed"));
    }
}
