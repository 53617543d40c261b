//! What the request-rate scenarios (`ranges`, `api`) share: how long and how
//! often they run, and how a round's latencies become its figures.

/// Round settings of a request-rate scenario.
#[derive(clap::Args)]
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

/// Runs one round: `client(i)` on a thread each for `clients` clients, each
/// returning its latencies; the figures count `server`'s CPU meanwhile.
pub fn round<F>(server: &crate::peer::Server, clients: usize, client: F) -> [f64; 4]
where
    F: Fn(usize) -> Vec<u32> + Sync,
{
    let cpu0 = server.cpu_seconds();
    let start = std::time::Instant::now();
    let latencies: Vec<u32> = std::thread::scope(|scope| {
        let client = &client;
        let handles: Vec<_> = (0..clients)
            .map(|c| scope.spawn(move || client(c)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    summarize(latencies, secs, server.cpu_seconds() - cpu0)
}

/// A round's figures: requests per second, p50 and p99 latency (µs), and
/// server CPU µs per request.
fn summarize(mut latencies: Vec<u32>, secs: f64, server_cpu_secs: f64) -> [f64; 4] {
    latencies.sort_unstable();
    let n = latencies.len().max(1);
    let pct = |p: f64| {
        latencies
            .get(((n - 1) as f64 * p) as usize)
            .map_or(0.0, |v| f64::from(*v))
    };
    [
        latencies.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        server_cpu_secs * 1e6 / n as f64,
    ]
}

/// The time since `t0` in µs, for a latency list.
pub fn micros_since(t0: std::time::Instant) -> u32 {
    t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}
