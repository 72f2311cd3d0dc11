//! Request metrics in the Prometheus text format (`GET /metrics`).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    buckets: [AtomicU64; 13],
    count: AtomicU64,
    sum_micros: AtomicU64,
    auth_failures: AtomicU64,
    rate_limited: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        {
            let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            *m.entry((route.to_owned(), method.to_owned(), status))
                .or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `gauges` and `counters` are extra `(name, help, value)` samples.
    pub fn render(&self, gauges: &[(&str, &str, f64)], counters: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP backendai_http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(out, "# TYPE backendai_http_requests_total counter");
        let mut rows: Vec<_> = {
            let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        rows.sort();
        for ((route, method, status), n) in rows {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "backendai_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP backendai_http_request_duration_seconds Time to answer a request."
        );
        let _ = writeln!(
            out,
            "# TYPE backendai_http_request_duration_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "backendai_http_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "backendai_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "backendai_http_request_duration_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "backendai_http_request_duration_seconds_count {count}");
        let own = [
            (
                "backendai_auth_failures_total",
                "Requests whose signature did not match.",
                self.auth_failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "backendai_rate_limited_total",
                "Requests refused by the rate limit.",
                self.rate_limited.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, v) in own.iter().chain(counters) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.observe("/auth", "GET", 200, Duration::from_millis(3));
        m.observe("/auth", "GET", 200, Duration::from_millis(30));
        let text = m.render(&[("backendai_up", "Up.", 1.0)], &[]);
        assert!(text.contains(
            "backendai_http_requests_total{route=\"/auth\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains("backendai_http_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("backendai_http_request_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("backendai_http_request_duration_seconds_count 2"));
        assert!(text.contains("backendai_up 1"));
    }
}
