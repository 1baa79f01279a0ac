//! The open-file limit serve runs under.
//!
//! Every proxied request holds two sockets (the client's and the upstream's), and the usual soft
//! limit (1,024 on Linux desktops, 256 on macOS) would stop serve at a few hundred concurrent
//! streams with `Too many open files` while the hard limit allows far more. Like Go's runtime
//! and nginx's `worker_rlimit_nofile`, serve raises its soft limit to the hard one when it
//! starts (the `rlimit` crate: one safe call, and it knows macOS's `OPEN_MAX` cap), and says so
//! when even that leaves little room.

/// Below this many open files serve warns: it can hold about half as many connections.
pub const LOW: u64 = 4096;

/// The soft limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft open-file limit as far as the hard limit allows.
#[cfg(unix)]
pub fn raise() -> std::io::Result<OpenFiles> {
    let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let now = rlimit::increase_nofile_limit(rlimit::INFINITY)?;
    Ok(OpenFiles { before, now })
}

#[cfg(not(unix))]
pub fn raise() -> std::io::Result<OpenFiles> {
    Err(std::io::Error::other("no open-file limit to raise here"))
}

/// File descriptors kept for everything but connections (listener, runtime, log, policy).
const RESERVED: u64 = 64;

/// The default `--max-connections`: each proxied request holds its client's socket and one to
/// its upstream, so half of what the limit leaves. Serve stops accepting there, and a new
/// client waits in the listen backlog instead of failing half-way with `Too many open files`.
pub fn connection_cap(limit: OpenFiles) -> usize {
    let cap = limit.now.saturating_sub(RESERVED) / 2;
    usize::try_from(cap.max(16)).unwrap_or(usize::MAX)
}

/// What serve prints when the limit stays low, naming the fix and the connection cap serve runs
/// with (`--max-connections`, by default [`connection_cap`]); `None` when there is room.
pub fn warning(limit: OpenFiles, max_connections: usize) -> Option<String> {
    (limit.now < LOW).then(|| {
        let raised = if limit.before < limit.now {
            format!("; serve raised its soft limit from {}", limit.before)
        } else {
            String::new()
        };
        format!(
            "warning: the open-file limit is {} (the hard limit{raised}), so serve holds at most {} \
             connections at once and more wait (see --max-connections); raise it with \
             `ulimit -Hn 65536 && ulimit -n 65536` (root), `LimitNOFILE=65536` in a systemd unit, or \
             `--ulimit nofile=65536` for docker",
            limit.now, max_connections
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_little_room_is_left() {
        let room = OpenFiles {
            before: 1024,
            now: 524_288,
        };
        assert_eq!(warning(room, connection_cap(room)), None);
        let low = OpenFiles {
            before: 256,
            now: 1024,
        };
        let w = warning(low, connection_cap(low)).unwrap();
        assert!(w.contains("open-file limit is 1024"), "{w}");
        assert!(w.contains("at most 480 connections"), "{w}");
        assert!(w.contains("LimitNOFILE"), "{w}");
        assert!(w.contains("raised its soft limit from 256"), "{w}");
        let w = warning(
            OpenFiles {
                before: 1024,
                now: 1024,
            },
            100,
        )
        .unwrap();
        assert!(!w.contains("raised"), "{w}");
        // An explicit --max-connections is the cap the warning names.
        assert!(w.contains("at most 100 connections"), "{w}");
    }

    #[test]
    fn the_default_connection_cap_leaves_a_socket_per_upstream() {
        let cap = |now| connection_cap(OpenFiles { before: 0, now });
        assert_eq!(cap(1024), 480);
        assert_eq!(cap(20_000), 9_968);
        // Never so low that serve cannot work at all.
        assert_eq!(cap(40), 16);
    }

    #[cfg(unix)]
    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let l = raise().unwrap();
        assert_eq!(l.before, soft);
        assert!(l.now >= l.before);
    }
}
