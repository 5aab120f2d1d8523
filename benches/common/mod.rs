//! Measurement helpers shared by the end-to-end benches: /proc readings, rusage times,
//! medians and the machine description printed with every result.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

pub fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}

pub fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(n as f64 / hz)
}

/// The fields of /proc/<pid>/stat after the command name (field 3 = state is index 0).
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn stat_field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn process_ticks(pid: i32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(stat_field(&f, 14)? + stat_field(&f, 15)?)
}

/// cutime + cstime: the CPU of the children a process has reaped. For the postmaster
/// that is its backends once they have exited (exact, unlike sampling them).
pub fn reaped_children_ticks(pid: i32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(stat_field(&f, 16)? + stat_field(&f, 17)?)
}

/// Busy time of all CPUs (the "cpu" line of /proc/stat less idle and iowait), in ticks.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal (guest is in user)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    Some(total - values.get(3)? - values.get(4)?)
}

pub fn process_rss_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Peak resident set size of a live process (VmHWM), in KiB.
pub fn process_hwm_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// A `kB` field of /proc/<pid>/status, e.g. `VmRSS` or `VmHWM`.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pids of the processes in /proc whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid).and_then(|f| stat_field(&f, 4))
                == Some(u64::try_from(parent).unwrap_or(0))
        })
        .collect()
}

/// The test kit's ClickHouse front, if this process started one: its child running
/// clickhouse_front.py.
pub fn clickhouse_front_pid() -> Option<i32> {
    let me = i32::try_from(std::process::id()).ok()?;
    children_of(me).into_iter().find(|&pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("clickhouse_front.py")
    })
}

pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The value at quantile `q` (0..=1) of ascending `sorted` values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn print_machine() {
    print_machine_titled("snapshot: pgch run (snapshot_only) vs COPY … TO STDOUT (FORMAT binary)");
}

/// The machine description under a `== <title>` line.
pub fn print_machine_titled(title: &str) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("== {title}");
    println!(
        "machine:   nproc {nproc}, CPU {model}, {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    );
    println!(
        "           load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
