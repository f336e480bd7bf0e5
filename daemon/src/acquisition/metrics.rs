//! Acquisition counters and poll-time histograms, rendered as Prometheus
//! text. Atomics only: the bus tasks never wait on a lock to count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the poll-duration buckets, in seconds.
pub const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Upper bounds for latencies inside the process (reading to output), s.
pub const FAST_BUCKETS: [f64; 10] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(&BUCKETS)
    }
}

impl Histogram {
    /// A histogram with these bucket upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(self.bounds) {
            if s <= *le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Prometheus text lines for this histogram; `labels` is empty or
    /// `key="value",…` without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bucket, le) in self.buckets.iter().zip(self.bounds) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Why a request failed, for the error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer in time.
    Timeout,
    /// The device answered with a Modbus exception.
    Exception,
    /// The answer did not fit the request (garbage, wrong id, short frame).
    Protocol,
    /// The connection or port failed or could not be opened.
    Transport,
}

impl ErrorKind {
    const ALL: [ErrorKind; 4] = [
        ErrorKind::Timeout,
        ErrorKind::Exception,
        ErrorKind::Protocol,
        ErrorKind::Transport,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Exception => "exception",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Transport => "transport",
        }
    }
}

/// Counters of one bus.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// Bus id.
    pub bus: String,
    /// Requests sent.
    pub polls: Counter,
    /// Failed requests, by [`ErrorKind`].
    pub errors: [Counter; 4],
    /// Connections (re)opened.
    pub connects: Counter,
    /// Time from request to answer (or failure).
    pub duration: Histogram,
}

impl BusMetrics {
    /// Counts one failure.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }
}

/// All acquisition metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Per bus, in configuration order.
    pub buses: Vec<BusMetrics>,
    /// Poll results the recorder could not take in time (store too slow).
    pub recorder_dropped: Counter,
    /// Microseconds from process start to the first published poll result
    /// (0 until then).
    pub first_poll_us: AtomicU64,
}

impl Metrics {
    /// Zeroed metrics for these buses.
    pub fn new(buses: impl Iterator<Item = String>) -> Self {
        Metrics {
            buses: buses
                .map(|bus| BusMetrics {
                    bus,
                    ..BusMetrics::default()
                })
                .collect(),
            recorder_dropped: Counter::default(),
            first_poll_us: AtomicU64::new(0),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pithead_modbus_polls_total Modbus requests sent."
        );
        let _ = writeln!(out, "# TYPE pithead_modbus_polls_total counter");
        for b in &self.buses {
            let _ = writeln!(
                out,
                "pithead_modbus_polls_total{{bus=\"{}\"}} {}",
                b.bus,
                b.polls.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP pithead_modbus_errors_total Failed Modbus requests by kind."
        );
        let _ = writeln!(out, "# TYPE pithead_modbus_errors_total counter");
        for b in &self.buses {
            for k in ErrorKind::ALL {
                let _ = writeln!(
                    out,
                    "pithead_modbus_errors_total{{bus=\"{}\",kind=\"{}\"}} {}",
                    b.bus,
                    k.as_str(),
                    b.errors[k as usize].get()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pithead_modbus_connects_total Connections or ports (re)opened."
        );
        let _ = writeln!(out, "# TYPE pithead_modbus_connects_total counter");
        for b in &self.buses {
            let _ = writeln!(
                out,
                "pithead_modbus_connects_total{{bus=\"{}\"}} {}",
                b.bus,
                b.connects.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP pithead_modbus_poll_duration_seconds Time from request to answer or failure."
        );
        let _ = writeln!(out, "# TYPE pithead_modbus_poll_duration_seconds histogram");
        for b in &self.buses {
            b.duration.render(
                out,
                "pithead_modbus_poll_duration_seconds",
                &format!("bus=\"{}\"", b.bus),
            );
        }
        let _ = writeln!(
            out,
            "# HELP pithead_recorder_dropped_total Readings left out of the per-minute aggregates because the store was behind."
        );
        let _ = writeln!(out, "# TYPE pithead_recorder_dropped_total counter");
        let _ = writeln!(
            out,
            "pithead_recorder_dropped_total {}",
            self.recorder_dropped.get()
        );
        let first = self.first_poll_us.load(Ordering::Relaxed);
        if first > 0 {
            let _ = writeln!(
                out,
                "# HELP pithead_start_to_first_poll_seconds From process start to the first poll result.\n\
                 # TYPE pithead_start_to_first_poll_seconds gauge\n\
                 pithead_start_to_first_poll_seconds {}",
                first as f64 / 1e6
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new(["rs485".to_owned()].into_iter());
        m.buses[0].polls.inc();
        m.buses[0].error(ErrorKind::Timeout);
        m.buses[0].duration.observe(Duration::from_millis(3));
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("pithead_modbus_polls_total{bus=\"rs485\"} 1\n"));
        assert!(s.contains("pithead_modbus_errors_total{bus=\"rs485\",kind=\"timeout\"} 1\n"));
        assert!(s.contains("pithead_modbus_errors_total{bus=\"rs485\",kind=\"exception\"} 0\n"));
        assert!(s.contains("le=\"0.0025\"} 0\n"));
        assert!(s.contains("le=\"0.005\"} 1\n"));
        assert!(s.contains("le=\"+Inf\"} 1\n"));
    }
}
