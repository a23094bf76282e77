//! What a process costs, read from `/proc`: CPU seconds (user + system, the process and
//! its children threads) and peak resident memory.

/// CPU seconds used so far by `pid` (all its threads).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), 1-based from `state` = 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    100.0
}

/// Peak resident memory of `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Resets the peak resident memory of `pid` to its current resident memory (Linux
/// `clear_refs` value 5), so that the next [`peak_rss_mib`] is the peak of what ran
/// since; false when the kernel refused it (the peak then covers the process's life).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The child processes of `pid` (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Resident memory of `pid` now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Open file descriptors of `pid`, and how many of them are sockets.
pub fn open_fds(pid: u32) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut fds = 0;
    let mut sockets = 0;
    for entry in entries.filter_map(Result::ok) {
        fds += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    (fds, sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read() {
        let me = std::process::id();
        assert!(rss_mib(me) > 1.0);
        assert!(peak_rss_mib(me) >= rss_mib(me));
        // A peak well above the current resident memory, then reset to it.
        let big = vec![1u8; 64 << 20];
        assert!(big.iter().map(|&b| u64::from(b)).sum::<u64>() == 64 << 20);
        drop(big);
        assert!(peak_rss_mib(me) >= rss_mib(me) + 32.0);
        assert!(reset_peak_rss(me));
        assert!(peak_rss_mib(me) < rss_mib(me) + 32.0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (fds, sockets) = open_fds(me);
        // Other tests of this process open sockets too: only a floor is certain.
        assert!(fds >= 4 && sockets >= 1, "{fds} fds, {sockets} sockets");
        drop(listener);
    }
}
