//! What the bench reads from `/proc` about the processes it measures: CPU
//! time and peak resident memory of a server's whole process tree (nginx's
//! master and workers, uWSGI's, a script and what it started), and the
//! bench's own CPU time (so a report shows the clients were no bottleneck).

/// CPU ticks per second in `/proc/*/stat` (`sysconf(_SC_CLK_TCK)`, which is
/// 100 on every Linux this runs on).
const CLOCK_TICKS: f64 = 100.0;

/// The pids of `root` and all its descendants.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        // Every thread's children, as a process's children hang off the
        // thread that forked them.
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    pids
}

/// User + system CPU seconds of `root`'s process tree: each live process's
/// own, and that of its children which have exited and been reaped (nginx's
/// cache loader, say), which the kernel adds to the parent.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let ticks: u64 = process_tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| cpu_ticks(&stat, true))
        .sum();
    ticks as f64 / CLOCK_TICKS
}

/// Resets the peak resident set size of every process in `root`'s tree
/// (`clear_refs` 5), so the next [`tree_peak_rss_bytes`] covers only what
/// follows. Needs the right to write the processes' `clear_refs` (the
/// bench's own children, or root).
pub fn reset_peak_rss(root: u32) {
    for pid in process_tree(root) {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

/// The sum over `root`'s tree of each process's peak resident set size
/// (`VmHWM`) since its last reset: an upper bound of the tree's peak, since
/// the processes need not peak at the same moment.
pub fn tree_peak_rss_bytes(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|l| {
                let kib = l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .sum::<u64>()
        * 1024
}

/// Bytes written by `root`'s tree so far (`wchar` of `/proc/*/io`, which
/// counts what `sendfile` sends too): the origin's bytes over time.
pub fn tree_bytes_written(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/io")).ok())
        .filter_map(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:")?.trim().parse::<u64>().ok())
        })
        .sum()
}

/// User + system CPU seconds of this process, all its threads included
/// (not the servers it started and has stopped).
pub fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    cpu_ticks(&stat, false) as f64 / CLOCK_TICKS
}

/// utime + stime of a `/proc/PID/stat` line, in clock ticks, plus cutime +
/// cstime (its reaped children's) when `reaped` is set.
fn cpu_ticks(stat: &str, reaped: bool) -> u64 {
    // Fields after the command name, which is in parentheses: utime, stime,
    // cutime and cstime are fields 14 to 17 of the line, 12 to 15 here.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let own = field(11) + field(12);
    if reaped {
        own + field(13) + field(14)
    } else {
        own
    }
}

/// What one measured stretch of time cost a server and the bench: opened
/// before the clients start, read when they are done.
pub struct Window {
    root: u32,
    server_cpu: f64,
    own_cpu: f64,
}

/// A [`Window`]'s figures.
pub struct Costs {
    /// Server CPU seconds (its whole tree).
    pub server_cpu: f64,
    /// The bench's CPU seconds.
    pub own_cpu: f64,
    /// The server tree's peak RSS over the window, bytes (see
    /// [`tree_peak_rss_bytes`]).
    pub peak_rss: u64,
}

impl Window {
    /// Starts measuring the tree under `root` (its peak RSS reset).
    pub fn open(root: u32) -> Window {
        reset_peak_rss(root);
        Window {
            root,
            server_cpu: tree_cpu_seconds(root),
            own_cpu: own_cpu_seconds(),
        }
    }

    /// What the window cost so far.
    pub fn close(&self) -> Costs {
        Costs {
            server_cpu: tree_cpu_seconds(self.root) - self.server_cpu,
            own_cpu: own_cpu_seconds() - self.own_cpu,
            peak_rss: tree_peak_rss_bytes(self.root),
        }
    }
}
