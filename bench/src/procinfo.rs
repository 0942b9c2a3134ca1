//! What /proc says about a process (RSS, CPU time, threads, descriptors) and
//! about the machine.

use serde::Serialize;
use std::collections::BTreeMap;

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a `stat` file, in seconds, and the command name.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    // The name is in parentheses and may itself hold spaces or parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / clk_tck()))
}

/// CPU seconds a process has used so far (user and system), read alone:
/// cheap enough to sample every few milliseconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, s)| s)
}

pub fn self_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
        .map_or(0.0, |(_, s)| s)
}

/// One look at a process.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub rss_bytes: u64,
    pub cpu_s: f64,
    pub fds: usize,
    /// CPU seconds and context switches (voluntary and not) per thread,
    /// keyed `name/tid`.
    #[serde(skip)]
    pub threads: BTreeMap<String, (f64, u64)>,
}

impl Sample {
    /// Context switches from `earlier` to this sample, over the threads alive
    /// at both (a thread that ended takes its count with it).
    pub fn ctx_switches_since(&self, earlier: &Sample) -> u64 {
        self.threads
            .iter()
            .filter_map(|(k, (_, n))| Some(n.saturating_sub(earlier.threads.get(k)?.1)))
            .sum()
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some(kib * 1024)
}

pub fn sample(pid: u32) -> Option<Sample> {
    let rss_bytes = status_bytes(pid, "VmRSS:")?;
    let (_, cpu_s) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let mut threads = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Some((name, s)) = std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|x| parse_stat(&x))
            {
                // By thread id: names are cut to 15 characters, and every
                // actix thread is then called "actix-rt|system".
                let tid = t.file_name().to_string_lossy().into_owned();
                let switches = std::fs::read_to_string(t.path().join("status"))
                    .map(|st| {
                        st.lines()
                            .filter(|l| l.contains("ctxt_switches:"))
                            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                            .sum::<u64>()
                    })
                    .unwrap_or(0);
                threads.insert(format!("{name}/{tid}"), (s, switches));
            }
        }
    }
    Some(Sample {
        rss_bytes,
        cpu_s,
        fds,
        threads,
    })
}

/// The peak RSS of a process over its life (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The soft open-file limit of a process.
pub fn fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Raises this process's soft open-file limit to the hard limit (every
/// session is a socket); returns (soft, hard) afterwards.
pub fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// The scheduling policy of process `pid`'s main thread, by name.
pub fn sched_policy(pid: u32) -> Option<&'static str> {
    // SAFETY: reads the policy of a process by id; -1 if it is gone.
    match unsafe { libc::sched_getscheduler(pid as libc::pid_t) } {
        libc::SCHED_OTHER => Some("SCHED_OTHER"),
        libc::SCHED_BATCH => Some("SCHED_BATCH"),
        libc::SCHED_IDLE => Some("SCHED_IDLE"),
        libc::SCHED_FIFO => Some("SCHED_FIFO"),
        libc::SCHED_RR => Some("SCHED_RR"),
        _ => None,
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_gib: f64,
    pub fd_soft_limit: u64,
    pub fd_hard_limit: u64,
    pub kernel: String,
}

pub fn machine(fd: (u64, u64)) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_default();
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        fd_soft_limit: fd.0,
        fd_hard_limit: fd.1,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_names() {
        let line = "123 (actix-rt|system:0|arbiter:1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let (name, s) = parse_stat(line).unwrap();
        assert_eq!(name, "actix-rt|system:0|arbiter:1");
        assert!((s - 300.0 / clk_tck()).abs() < 1e-9);
        let (name, _) = parse_stat("9 (a) b) R 1 2 3 4 5 6 7 8 9 10 1 1 0").unwrap();
        assert_eq!(name, "a) b");
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(peak_rss(std::process::id()).unwrap() >= me.rss_bytes);
    }
}
