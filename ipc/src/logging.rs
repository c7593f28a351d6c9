//! The one logger set-up of the three processes: env_logger on stderr
//! (`RUST_LOG`, default `info`), or, when stderr is the systemd journal,
//! lines that carry their syslog priority (`<3>` error ... `<7>` debug) and
//! no timestamp of their own, so `journalctl -p warning` shows exactly the
//! warnings and errors (a rejected guest command among them).

use std::io::Write;

/// Whether stderr is the stream `JOURNAL_STREAM` (`DEVICE:INODE`) names,
/// as systemd.exec(5) asks a service to check.
fn stderr_is_the_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_names(&value, st.st_dev, st.st_ino)
}

fn journal_stream_names(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority of a level (sd-daemon(3)'s `<N>` prefixes).
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Sets up logging for this process; call once, first thing in main.
pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format_target(false);
    if stderr_is_the_journal() {
        builder
            .format(|buf, record| writeln!(buf, "<{}>{}", priority(record.level()), record.args()));
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_names("8:1234", 8, 1234));
        assert!(journal_stream_names("8:1234\n", 8, 1234));
        assert!(!journal_stream_names("8:1235", 8, 1234));
        assert!(!journal_stream_names("9:1234", 8, 1234));
        assert!(!journal_stream_names("garbage", 8, 1234));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
    }
}
