//! `rate-limit` windows in Redis, exact across replicas: one Lua script per check reads the
//! bucket's current and previous fixed-window counts and counts the request only when the
//! sliding estimate is under capacity, atomically, so N replicas together allow exactly
//! `capacity` per window. The decision itself is [`crate::traffic::rate::decide`], the same as
//! in one process.
//!
//! This is the one place a request waits on Redis (one round trip per `rate-limit` action),
//! on a blocking thread (see [`RateState::blocks`]). When Redis does not answer, the check
//! falls back to this process's own counters at once and does not try Redis again until the
//! sync task has reconnected, so a lost Redis costs no request more than one timeout.
//! Keys are `aigw:rl:{sha256(bucket) prefix}:{window}`: bucket keys are often credentials.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::traffic::rate::{RateState, Verdict, decide, position};

use super::Link;

/// Longest a rate-limit check waits for Redis before counting locally.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Idle connections kept for the blocking pool's threads.
const POOL_MAX: usize = 16;

/// KEYS[1]: the current window's counter, KEYS[2]: the previous one's; ARGV: how far into the
/// window (0..1), capacity, the counter's time to live in ms. Returns {allowed, current,
/// previous} with the counts as they were before this request.
const SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = previous * (1 - tonumber(ARGV[1])) + current
if estimate < tonumber(ARGV[2]) then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, current, previous}
end
return {0, current, previous}
";

pub struct RedisRate {
    client: redis::Client,
    script: redis::Script,
    idle: Mutex<Vec<redis::Connection>>,
    local: crate::traffic::InProcess,
    link: Arc<Link>,
}

impl RedisRate {
    pub fn new(client: redis::Client, link: Arc<Link>) -> RedisRate {
        RedisRate {
            client,
            script: redis::Script::new(SCRIPT),
            idle: Mutex::new(Vec::new()),
            local: crate::traffic::InProcess::default(),
            link,
        }
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let c = self.client.get_connection_with_timeout(TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        c.set_write_timeout(Some(TIMEOUT))?;
        Ok(c)
    }

    fn shared_hit(
        &self,
        bucket: &str,
        capacity: u64,
        window: Duration,
        now: Duration,
    ) -> redis::RedisResult<Verdict> {
        let (index, into) = position(now, window);
        let bucket = key_name(bucket);
        let mut conn = self.connection()?;
        self.link
            .request_path_round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (allowed, current, previous): (u8, u64, u64) = self
            .script
            .key(format!("aigw:rl:{bucket}:{index}"))
            .key(format!("aigw:rl:{bucket}:{}", index.wrapping_sub(1)))
            .arg(into)
            .arg(capacity)
            .arg((window.as_millis() * 2).min(u64::MAX as u128) as u64)
            .invoke(&mut conn)?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(conn);
        }
        drop(idle);
        Ok(match decide(current, previous, into, capacity, window) {
            // The script and `decide` agree on the estimate; `allowed` is what was counted.
            _ if allowed == 1 => Verdict::Allowed,
            Verdict::Allowed => Verdict::Limited {
                retry_after: Duration::from_secs(1),
            },
            limited => limited,
        })
    }
}

/// The Redis name of a bucket: a SHA-256 of its key, because a `bucket_key` is often a
/// credential (an `Authorization` header, an API key) that must not sit in Redis in clear.
fn key_name(bucket: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bucket.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl RateState for RedisRate {
    fn hit(&self, bucket: &str, capacity: u64, window: Duration, now: Duration) -> Verdict {
        if self.link.is_connected() {
            match self.shared_hit(bucket, capacity, window, now) {
                Ok(v) => return v,
                Err(e) => {
                    // The pooled connections died with the server; new ones come after
                    // the sync task has reconnected.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    self.link.down(&format!(
                        "a rate-limit check failed: {}",
                        super::sync::describe(&e)
                    ))
                }
            }
        }
        self.link
            .local_fallbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.local.hit(bucket, capacity, window, now)
    }

    fn blocks(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::key_name;

    #[test]
    fn bucket_keys_reach_redis_hashed_and_stable() {
        let k = key_name("Bearer sk-secret-team-token");
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        assert!(!k.contains("secret"));
        // Every replica names the same bucket the same way (SHA-256 of "abc").
        assert_eq!(key_name("abc"), "ba7816bf8f01cfea414140de5dae2223");
        assert_ne!(key_name("a"), key_name("b"));
    }
}
