//! Environment: the block at the top of every report that says what machine produced the
//! numbers (CPU, cores, memory, kernel, OS, limits, versions). Host names are left out on
//! purpose, so reports can be shared.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub cpu_model: Option<String>,
    pub logical_cores: usize,
    pub memory_total_bytes: Option<u64>,
    pub kernel: Option<String>,
    pub os: Option<String>,
    pub arch: &'static str,
    pub open_files_limit: Option<String>,
    /// Kernel settings that bound connection counts and rates.
    pub sysctls: Vec<(String, String)>,
    pub loadtest_version: &'static str,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

impl Environment {
    pub fn collect() -> Environment {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned());
        let memory_total_bytes = read("/proc/meminfo").and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
        let os = read("/etc/os-release").and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?.to_owned();
            Some(line.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_owned())
        });
        let open_files_limit = read("/proc/self/limits").and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?.to_owned();
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(format!("{} soft / {} hard", fields.get(3)?, fields.get(4)?))
        });
        let sysctls = [
            "net/core/somaxconn",
            "net/ipv4/ip_local_port_range",
            "net/ipv4/tcp_max_syn_backlog",
            "fs/file-max",
        ]
        .iter()
        .filter_map(|key| {
            let value = read(&format!("/proc/sys/{key}"))?;
            Some((
                key.replace('/', "."),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect();
        Environment {
            cpu_model,
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_total_bytes,
            kernel: read("/proc/sys/kernel/osrelease"),
            os,
            arch: std::env::consts::ARCH,
            open_files_limit,
            sysctls,
            loadtest_version: env!("CARGO_PKG_VERSION"),
        }
    }
}
