//! I/O rate limiting: token buckets for bytes and operations per second.
//!
//! [`TokenBucket`] and [`RateLimiter`] are pure arithmetic on an instant the caller passes
//! in, so tests drive them with a made-up clock. [`Throttle`] adds the timerfd a device
//! registers with its event loop to resume once the tokens it waits for have refilled.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Limits of one resource: `rate` tokens per second, at most `burst` saved up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketConfig {
    /// Tokens per second; 0 means unlimited.
    pub rate: u64,
    /// Bucket size: how many tokens can be spent at once after a pause. 0 means one
    /// second's worth (`rate`).
    pub burst: u64,
}

/// The limits of a device's I/O; `Default` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub bytes: BucketConfig,
    pub ops: BucketConfig,
}

/// A token bucket. The level is kept in token-nanoseconds (tokens x 10^9), so refilling by
/// `rate x elapsed_ns` is exact integer arithmetic and no fraction of a token is lost.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: i128,
    capacity: i128,
    /// Below zero after a request larger than the bucket (see [`TokenBucket::try_take`]).
    level: i128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `None` for an unlimited one (`rate == 0`).
    pub fn new(config: BucketConfig, now: Instant) -> Option<Self> {
        if config.rate == 0 {
            return None;
        }
        let burst = if config.burst == 0 {
            config.rate
        } else {
            config.burst
        };
        let capacity = i128::from(burst) * NANOS_PER_SEC;
        Some(TokenBucket {
            rate: i128::from(config.rate),
            capacity,
            level: capacity,
            last: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        // An instant before `last` (a caller's clock going back) adds nothing.
        let elapsed = i128::try_from(now.saturating_duration_since(self.last).as_nanos())
            .unwrap_or(i128::MAX);
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.capacity);
        if now > self.last {
            self.last = now;
        }
    }

    /// How long until `n` tokens can be taken, zero if now. A request larger than the
    /// bucket waits for a full bucket.
    pub fn wait_time(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let want = (i128::from(n) * NANOS_PER_SEC).min(self.capacity);
        let missing = want - self.level;
        if missing <= 0 {
            return Duration::ZERO;
        }
        // Round up: waking a nanosecond early would find the bucket still short.
        let nanos = (missing + self.rate - 1) / self.rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes `n` tokens if they are there (see [`TokenBucket::wait_time`]); else takes
    /// nothing and says how long to wait. A request larger than the whole bucket is let
    /// through when the bucket is full and leaves it in debt, so it is paid for by waiting
    /// afterwards instead of blocking forever.
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        match self.wait_time(n, now) {
            Duration::ZERO => {
                self.level -= i128::from(n) * NANOS_PER_SEC;
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Whole tokens in the bucket (for tests and metrics).
    pub fn tokens(&mut self, now: Instant) -> i64 {
        self.refill(now);
        i64::try_from(self.level / NANOS_PER_SEC).unwrap_or(i64::MAX)
    }
}

/// A bytes bucket and an operations bucket, taken from together.
#[derive(Clone, Debug, Default)]
pub struct RateLimiter {
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        RateLimiter {
            bytes: TokenBucket::new(limit.bytes, now),
            ops: TokenBucket::new(limit.ops, now),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.ops.is_none()
    }

    /// Whether bytes are limited, so that a caller need not count them when they are not.
    pub fn limits_bytes(&self) -> bool {
        self.bytes.is_some()
    }

    /// Takes `ops` operations and `bytes` bytes, both or neither; on refusal, how long
    /// until both are available.
    pub fn try_take(&mut self, ops: u64, bytes: u64, now: Instant) -> Result<(), Duration> {
        let wait_ops = self
            .ops
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_time(ops, now));
        let wait_bytes = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_time(bytes, now));
        let wait = wait_ops.max(wait_bytes);
        if !wait.is_zero() {
            return Err(wait);
        }
        for (bucket, n) in [(&mut self.ops, ops), (&mut self.bytes, bytes)] {
            if let Some(b) = bucket {
                // Cannot be refused: `wait_time` just said the tokens are there.
                let _ = b.try_take(n, now);
            }
        }
        Ok(())
    }
}

/// A [`RateLimiter`] plus the timer that wakes the device when it may go on.
#[derive(Debug)]
pub struct Throttle {
    limiter: RateLimiter,
    timer: TimerFd,
    blocked: bool,
}

impl Throttle {
    pub fn new(limit: RateLimit) -> std::io::Result<Self> {
        Ok(Throttle {
            limiter: RateLimiter::new(limit, Instant::now()),
            timer: TimerFd::new()?,
            blocked: false,
        })
    }

    /// Whether bytes are limited (see [`RateLimiter::limits_bytes`]).
    pub fn limits_bytes(&self) -> bool {
        self.limiter.limits_bytes()
    }

    /// True while waiting for the timer: take nothing from the queue until then.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Takes the tokens for a request, or arms the timer and blocks.
    pub fn try_take(&mut self, ops: u64, bytes: u64) -> bool {
        if self.limiter.is_unlimited() {
            return true;
        }
        match self.limiter.try_take(ops, bytes, Instant::now()) {
            Ok(()) => true,
            Err(wait) => {
                // A zero duration would disarm the timer.
                let wait = wait.max(Duration::from_micros(1));
                match self.timer.reset(wait, None) {
                    Ok(()) => self.blocked = true,
                    // Without a timer nothing would wake us: let the request through.
                    Err(e) => {
                        log::error!("virtio: cannot arm the rate limiter's timer: {e}");
                        return true;
                    }
                }
                false
            }
        }
    }

    /// The timer fired: the device may try again.
    pub fn on_timer(&mut self) {
        // The timerfd is blocking: read it only when it is readable (the event loop said so)
        // or armed to expire; otherwise there is nothing to clear.
        if self.timer.is_armed().unwrap_or(false) || self.blocked {
            let _ = self.timer.wait();
        }
        self.blocked = false;
    }

    /// Forget any wait (device reset).
    pub fn unblock(&mut self) {
        if let Err(e) = self.timer.clear() {
            log::error!("virtio: cannot disarm the rate limiter's timer: {e}");
        }
        self.blocked = false;
    }
}

impl AsRawFd for Throttle {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bucket(rate: u64, burst: u64, t0: Instant) -> TokenBucket {
        TokenBucket::new(BucketConfig { rate, burst }, t0).unwrap()
    }

    #[test]
    fn unlimited_has_no_bucket() {
        let t0 = Instant::now();
        assert!(TokenBucket::new(BucketConfig::default(), t0).is_none());
        let mut l = RateLimiter::new(RateLimit::default(), t0);
        assert!(l.is_unlimited());
        assert_eq!(l.try_take(1_000_000, u64::MAX, t0), Ok(()));
    }

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 100, t0);
        assert_eq!(b.tokens(t0), 100);
        assert_eq!(b.try_take(100, t0), Ok(()));
        assert_eq!(b.tokens(t0), 0);
        // 1000/s: 10 ms gives 10 tokens.
        assert_eq!(b.try_take(20, t0 + ms(10)), Err(ms(10)));
        assert_eq!(b.try_take(20, t0 + ms(20)), Ok(()));
        // Never above the burst.
        assert_eq!(b.tokens(t0 + Duration::from_secs(60)), 100);
    }

    #[test]
    fn burst_defaults_to_one_second() {
        let t0 = Instant::now();
        let mut b = bucket(500, 0, t0);
        assert_eq!(b.tokens(t0), 500);
    }

    #[test]
    fn fractions_of_tokens_are_not_lost() {
        let t0 = Instant::now();
        // 3 tokens/s: one token every 333.33 ms; 3000 steps of 1 ms give exactly 9.
        let mut b = bucket(3, 3, t0);
        assert_eq!(b.try_take(3, t0), Ok(()));
        let mut got = 0;
        for i in 1..=3000 {
            if b.try_take(1, t0 + ms(i)).is_ok() {
                got += 1;
            }
        }
        assert_eq!(got, 9);
    }

    #[test]
    fn wait_time_rounds_up() {
        let t0 = Instant::now();
        let mut b = bucket(3, 3, t0);
        b.try_take(3, t0).unwrap();
        let wait = b.wait_time(1, t0);
        assert_eq!(wait, Duration::from_nanos(333_333_334));
        assert!(b.try_take(1, t0 + wait - Duration::from_nanos(1)).is_err());
        assert!(b.try_take(1, t0 + wait).is_ok());
    }

    #[test]
    fn a_request_larger_than_the_bucket_passes_when_full_then_is_paid_for() {
        let t0 = Instant::now();
        let mut b = bucket(100, 100, t0);
        // 250 tokens from a 100-token bucket: allowed once full, leaves 150 of debt.
        assert_eq!(b.try_take(250, t0), Ok(()));
        assert_eq!(b.tokens(t0), -150);
        // The next single token needs 151 tokens of refill: 1.51 s.
        assert_eq!(b.wait_time(1, t0), ms(1510));
        // A second huge one waits for a full bucket again: 2.5 s.
        assert_eq!(b.try_take(250, t0), Err(ms(2500)));
        assert_eq!(b.try_take(250, t0 + ms(2500)), Ok(()));
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = bucket(10, 10, t0);
        b.try_take(10, t0).unwrap();
        assert!(b.try_take(1, t0 - Duration::from_secs(5)).is_err());
        assert_eq!(b.tokens(t0), 0);
        assert!(b.try_take(1, t0 + ms(100)).is_ok());
    }

    #[test]
    fn huge_rates_and_times_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = bucket(u64::MAX, u64::MAX, t0);
        assert_eq!(b.try_take(u64::MAX, t0), Ok(()));
        assert_eq!(b.tokens(t0 + Duration::from_secs(1_000_000_000)), i64::MAX);
        let mut slow = bucket(1, 1, t0);
        slow.try_take(1, t0).unwrap();
        assert_eq!(slow.wait_time(u64::MAX, t0), Duration::from_secs(1));
    }

    #[test]
    fn limiter_takes_both_or_neither() {
        let t0 = Instant::now();
        let limit = RateLimit {
            bytes: BucketConfig {
                rate: 1000,
                burst: 1000,
            },
            ops: BucketConfig { rate: 10, burst: 2 },
        };
        let mut l = RateLimiter::new(limit, t0);
        assert_eq!(l.try_take(1, 600, t0), Ok(()));
        // Bytes short (400 left): the op is not taken either.
        assert_eq!(l.try_take(1, 600, t0), Err(ms(200)));
        // 1 op left, 400 bytes: a small request still passes.
        assert_eq!(l.try_take(1, 400, t0), Ok(()));
        // No op left: 100 ms for one at 10/s; bytes need 100 ms too for 100.
        assert_eq!(l.try_take(1, 100, t0), Err(ms(100)));
        assert_eq!(l.try_take(1, 100, t0 + ms(100)), Ok(()));
    }

    #[test]
    fn throttle_blocks_and_its_timer_fires() {
        let limit = RateLimit {
            bytes: BucketConfig::default(),
            ops: BucketConfig {
                rate: 100,
                burst: 1,
            },
        };
        let mut t = Throttle::new(limit).unwrap();
        assert!(t.try_take(1, 0));
        assert!(!t.try_take(1, 0));
        assert!(t.is_blocked());
        // The timer expires within ~10 ms; `on_timer` waits for it.
        t.on_timer();
        assert!(!t.is_blocked());
        assert!(t.try_take(1, 0));
        assert!(!t.try_take(1, 0));
        t.unblock();
        assert!(!t.is_blocked());
    }
}
