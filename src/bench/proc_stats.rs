//! CPU time and peak RSS of a process, and what machine this is, from /proc.

/// Figures of a running process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), MB.
    pub peak_rss_mb: f64,
}

impl ProcStats {
    pub fn read(pid: u32) -> ProcStats {
        let mut out = ProcStats::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name (which may hold spaces) start at ')'.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                // SAFETY: sysconf has no memory effects.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                out.cpu_s = (ticks(11) + ticks(12)) / hz;
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kb: f64 = v
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse()
                        .unwrap_or(0.0);
                    out.peak_rss_mb = kb / 1024.0;
                }
            }
        }
        out
    }
}

pub struct Machine {
    pub cores: usize,
    pub mem_gib: f64,
    pub cpu_model: String,
}

pub fn machine() -> Machine {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        cores,
        mem_gib,
        cpu_model,
    }
}
