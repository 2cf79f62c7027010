//! Figures read from `/proc`: the benchmarks read them of their own process (`bench swarm`) and,
//! through `docker exec`, of a node in its container (the harness's memory figures).

/// This process's resident set size in KiB (`VmRSS` of `/proc/self/status`), 0 where unknown.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_vm_rss(&s))
        .unwrap_or(0)
}

/// This process's open file descriptors (entries of `/proc/self/fd`), 0 where unknown.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// CPU time (user + system) of this process in ms, 0 where unknown.
pub fn cpu_ms() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat_cpu_ms(&s))
        .unwrap_or(0)
}

/// `utime + stime` in ms from the text of a `/proc/<pid>/stat`. Both count in USER_HZ ticks,
/// which Linux fixes at 100 a second for user space on every architecture it runs us on.
pub fn parse_stat_cpu_ms(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) * 10)
}

/// When the process started, in clock ticks after boot (field 22 of a `/proc/<pid>/stat`): with
/// the pid and the boot id it names one process for good, although pids are reused.
pub fn parse_stat_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `VmRSS` in KiB from the text of a `/proc/<pid>/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_status() {
        let s = "Name:\tbench\nVmPeak:\t  10 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(s), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kb() > 0);
        assert!(open_fds() >= 3);
    }

    #[test]
    fn cpu_time_is_read_from_stat() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks.
        let s = "42 (b (x) y) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ms(s), Some(3000));
        assert_eq!(parse_stat_cpu_ms("42 (x) R 1"), None);
    }

    #[test]
    fn start_time_is_read_from_stat() {
        let s = "42 (b (x) y) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 987654 100 200";
        assert_eq!(parse_stat_start_ticks(s), Some(987654));
        assert_eq!(parse_stat_start_ticks("42 (x) R 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        assert!(parse_stat_start_ticks(&own).is_some_and(|t| t > 0));
    }
}
