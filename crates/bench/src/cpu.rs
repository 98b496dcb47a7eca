//! CPU time from /proc: of a process (the spawned service) and of the calling thread (a raw
//! argon2id thread). Work per CPU second does not change when other processes compete for the
//! cores, so these figures stay comparable on a busy machine where calls/s do not.

/// Clock ticks per second of /proc's `utime`/`stime` (USER_HZ: 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// User + system CPU seconds of process `pid`.
pub fn process_seconds(pid: u32) -> Option<f64> {
    stat_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU seconds of the calling thread.
pub fn thread_seconds() -> Option<f64> {
    stat_seconds(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
}

/// `utime + stime` of a /proc `stat` line, in seconds.
fn stat_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let stat = "4242 (recovery service) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(stat_seconds(stat), Some(3.0));
        assert_eq!(stat_seconds("garbage"), None);
        assert!(process_seconds(std::process::id()).is_some());
        assert!(thread_seconds().is_some());
    }
}
