//! What every scenario's rounds share: their settings, running clients on
//! threads of their own against one server, and turning the clients'
//! samples, the server's CPU and memory and the bench's own CPU into a
//! round's figures; then the medians over rounds.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::client::Sample;
use crate::measure::{self, Costs};
use crate::peer::Server;
use crate::report::{self, Figures, Metric};

/// Round settings of a request-rate scenario (`ranges`, `api`).
#[derive(clap::Args, Clone)]
pub struct Load {
    /// Seconds per round.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Most requests per client per round (bounds a round whatever the speed).
    #[arg(long, default_value_t = 200_000)]
    pub max_requests: usize,
    /// Rounds per server (or request kind) and client count; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl Load {
    /// When a round started now must end.
    pub fn deadline(&self) -> Instant {
        Instant::now() + std::time::Duration::from_secs(self.seconds)
    }
}

/// One round's figures and every request's latency (µs).
pub struct Round {
    /// Metric key to value.
    pub metrics: BTreeMap<String, f64>,
    /// Each request's latency, µs.
    pub latencies_us: Vec<u32>,
}

/// Runs one round: `client(i)` on a thread each for `clients` clients, each
/// returning its requests' samples, while the server's CPU and peak memory
/// and the bench's own CPU are measured.
pub fn round<F>(server: &Server, clients: usize, client: F) -> Round
where
    F: Fn(usize) -> Vec<Sample> + Sync,
{
    let window = measure::Window::open(server.pid());
    let start = Instant::now();
    let per_client: Vec<Vec<Sample>> = std::thread::scope(|scope| {
        let client = &client;
        let handles: Vec<_> = (0..clients)
            .map(|c| scope.spawn(move || client(c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    figures(&per_client, secs, &window.close())
}

/// A round's figures from its samples (per client), its length in seconds
/// and what it cost.
pub fn figures(per_client: &[Vec<Sample>], secs: f64, costs: &Costs) -> Round {
    let (server_cpu, own_cpu) = (costs.server_cpu, costs.own_cpu);
    let samples = || per_client.iter().flatten();
    let n = samples().count();
    let bytes: u64 = samples().map(|s| s.bytes).sum();
    let mut latencies: Vec<u32> = samples().map(|s| s.latency_us).collect();
    let mut ttfb: Vec<u32> = samples().map(|s| s.ttfb_us).collect();
    latencies.sort_unstable();
    ttfb.sort_unstable();
    let mut m = BTreeMap::new();
    let mut put = |metric: &Metric, v: f64| {
        m.insert(metric.key.to_owned(), v);
    };
    let (gb, gib) = (bytes as f64 / 1e9, bytes as f64 / f64::from(1u32 << 30));
    put(&report::REQ_PER_S, n as f64 / secs);
    put(&report::LATENCY_P50, percentile(&latencies, 0.50) / 1e3);
    put(&report::LATENCY_P99, percentile(&latencies, 0.99) / 1e3);
    put(&report::TTFB_P50, percentile(&ttfb, 0.50) / 1e3);
    put(&report::TTFB_P99, percentile(&ttfb, 0.99) / 1e3);
    put(
        &report::PEAK_RSS,
        costs.peak_rss as f64 / f64::from(1u32 << 20),
    );
    if n > 0 {
        put(&report::SERVER_CPU_PER_REQ, server_cpu * 1e6 / n as f64);
        put(&report::CLIENT_CPU_PER_REQ, own_cpu * 1e6 / n as f64);
    }
    if bytes > 0 {
        put(&report::GB_PER_S, gb / secs);
        put(&report::MIB_PER_S, gib * 1024.0 / secs);
        put(&report::SERVER_CPU_PER_GB, server_cpu / gb);
        put(&report::SERVER_CPU_PER_GIB, server_cpu / gib);
        put(&report::CLIENT_CPU_PER_GB, own_cpu / gb);
        // Each client's own rate over the round.
        let mut rates: Vec<f64> = per_client
            .iter()
            .map(|c| c.iter().map(|s| s.bytes).sum::<u64>() as f64 / secs)
            .collect();
        rates.sort_by(f64::total_cmp);
        put(&report::CLIENT_GB_PER_S_MIN, rates[0] / 1e9);
        put(&report::CLIENT_GB_PER_S_P50, median(rates.clone()) / 1e9);
        put(
            &report::CLIENT_MIB_PER_S_P50,
            median(rates) / f64::from(1u32 << 20),
        );
    }
    Round {
        metrics: m,
        latencies_us: latencies,
    }
}

/// The value at quantile `q` of sorted `v` (0 when empty).
pub fn percentile(v: &[u32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    f64::from(v[i.min(v.len() - 1)])
}

/// The median of `v` (the mean of the two middle values for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One server's figures over its rounds: each metric's median, and the
/// latency CDF of every request of every round.
pub fn summarize(server: &str, rounds: Vec<Round>) -> Figures {
    let mut metrics = BTreeMap::new();
    let keys: Vec<String> = rounds
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    for k in keys {
        if metrics.contains_key(&k) {
            continue;
        }
        let vals: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.metrics.get(&k))
            .copied()
            .collect();
        metrics.insert(k, median(vals));
    }
    let mut all: Vec<u32> = rounds.into_iter().flat_map(|r| r.latencies_us).collect();
    all.sort_unstable();
    let latency_cdf_ms = if all.is_empty() {
        Vec::new()
    } else {
        (0..=100)
            .map(|p| percentile(&all, f64::from(p) / 100.0) / 1e3)
            .collect()
    };
    Figures {
        server: server.to_owned(),
        metrics,
        latency_cdf_ms,
    }
}

/// Measures `servers` (ours first, then the peers) at one point: `rounds`
/// rounds each, alternating server by server so drift on a shared machine
/// falls on all of them alike, and starting each round with the next server
/// so none always goes first; `one(server, r)` runs round `r` against a
/// server.
pub fn compare(
    run: &crate::report::Run,
    servers: &[&Server],
    clients: usize,
    kind: Option<&str>,
    rounds: usize,
    mut one: impl FnMut(&Server, usize) -> Round,
) -> crate::report::Point {
    let mut results: Vec<Vec<Round>> = servers.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for k in 0..servers.len() {
            let i = (r + k) % servers.len();
            let s = servers[i];
            run.starting(format!(
                "{}, {clients} clients{}, round {}/{rounds}",
                s.name,
                kind.map_or(String::new(), |k| format!(", {k}")),
                r + 1
            ));
            results[i].push(one(s, r));
            run.done_round();
        }
    }
    let mut figures = servers
        .iter()
        .zip(results)
        .map(|(s, rs)| (s.key.clone(), summarize(&s.name, rs)));
    let (_, ours) = figures.next().expect("ours is measured first");
    crate::report::Point {
        clients,
        kind: kind.map(str::to_owned),
        ours,
        peers: figures.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency_ms: u32, bytes: u64) -> Sample {
        Sample {
            latency_us: latency_ms * 1000,
            ttfb_us: latency_ms * 100,
            bytes,
        }
    }

    #[test]
    fn a_rounds_figures_come_from_its_samples_and_costs() {
        // Two clients over 2 s: one moved 3 GB in 3 requests, the other 1 GB in 1.
        let per_client = vec![
            vec![sample(10, 1_000_000_000); 3],
            vec![sample(40, 1_000_000_000)],
        ];
        let costs = Costs {
            server_cpu: 0.8,
            own_cpu: 0.4,
            peak_rss: 64 << 20,
        };
        let r = figures(&per_client, 2.0, &costs);
        let m = |metric: &Metric| r.metrics[metric.key];
        assert_eq!(m(&report::REQ_PER_S), 2.0);
        assert_eq!(m(&report::GB_PER_S), 2.0);
        assert_eq!(m(&report::SERVER_CPU_PER_GB), 0.2);
        assert_eq!(m(&report::CLIENT_CPU_PER_GB), 0.1);
        assert_eq!(m(&report::SERVER_CPU_PER_REQ), 200_000.0);
        assert_eq!(m(&report::CLIENT_GB_PER_S_MIN), 0.5);
        assert_eq!(m(&report::CLIENT_GB_PER_S_P50), 1.0);
        assert_eq!(m(&report::LATENCY_P50), 10.0);
        assert_eq!(m(&report::LATENCY_P99), 40.0);
        assert_eq!(m(&report::TTFB_P99), 4.0);
        assert_eq!(m(&report::PEAK_RSS), 64.0);
        assert_eq!(r.latencies_us, vec![10_000, 10_000, 10_000, 40_000]);
    }

    #[test]
    fn no_bytes_no_throughput_figures() {
        let r = figures(
            &[vec![sample(1, 0)]],
            1.0,
            &Costs {
                server_cpu: 0.0,
                own_cpu: 0.0,
                peak_rss: 0,
            },
        );
        assert!(!r.metrics.contains_key(report::GB_PER_S.key));
        assert_eq!(r.metrics[report::REQ_PER_S.key], 1.0);
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn summaries_take_each_metrics_median_and_one_cdf() {
        let round = |gbps: f64, lat: u32| Round {
            metrics: BTreeMap::from([(report::GB_PER_S.key.to_owned(), gbps)]),
            latencies_us: vec![lat],
        };
        let f = summarize(
            "x",
            vec![round(1.0, 3000), round(5.0, 1000), round(2.0, 2000)],
        );
        assert_eq!(f.metrics[report::GB_PER_S.key], 2.0);
        assert_eq!(f.latency_cdf_ms.len(), 101);
        assert_eq!(f.latency_cdf_ms[0], 1.0);
        assert_eq!(f.latency_cdf_ms[100], 3.0);
    }
}
