//! Retry policies for activities, run as durable orchestration logic (attempts and backoff timers
//! are history, so a retry loop replays exactly).

use std::time::Duration;

use crate::compose::{select2, Either};
use crate::context::{ActivityOptions, OrchestrationContext};

/// Delay between attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backoff {
    /// Retry at once.
    None,
    /// The same delay every time.
    Fixed { delay: Duration },
    /// `base × attempt`, capped at `max`.
    Linear { base: Duration, max: Duration },
    /// `base × multiplier^(attempt-1)`, capped at `max`.
    Exponential {
        base: Duration,
        multiplier: u32,
        max: Duration,
    },
}

impl Backoff {
    /// The default exponential backoff: 100 ms, doubling, capped at 30 s.
    pub fn exponential() -> Self {
        Backoff::Exponential {
            base: Duration::from_millis(100),
            multiplier: 2,
            max: Duration::from_secs(30),
        }
    }

    /// The default linear backoff: 100 ms more per attempt, capped at 30 s.
    pub fn linear() -> Self {
        Backoff::Linear {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }

    /// The default fixed backoff: 100 ms.
    pub fn fixed() -> Self {
        Backoff::Fixed {
            delay: Duration::from_millis(100),
        }
    }

    /// Delay after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        match self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed { delay } => *delay,
            Backoff::Linear { base, max } => base.saturating_mul(attempt).min(*max),
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                let factor = (*multiplier as u64)
                    .saturating_pow(attempt - 1)
                    .min(u32::MAX as u64) as u32;
                base.saturating_mul(factor).min(*max)
            }
        }
    }
}

/// How to retry a failing activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Each attempt fails with a timeout error if it takes longer than this.
    pub timeout: Option<Duration>,
    /// No attempt starts, and the running one is abandoned, once this much time has passed since the
    /// first attempt was scheduled.
    pub total_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::exponential(),
            timeout: None,
            total_timeout: None,
        }
    }
}

impl RetryPolicy {
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..Self::default()
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn with_total_timeout(mut self, total: Duration) -> Self {
        self.total_timeout = Some(total);
        self
    }

    /// Checks the policy; an invalid one is refused rather than silently adjusted.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.timeout == Some(Duration::ZERO) || self.total_timeout == Some(Duration::ZERO) {
            return Err("timeouts must be greater than zero".into());
        }
        Ok(())
    }
}

/// The durable retry loop behind `schedule_activity_with_retry*`.
pub(crate) async fn run(
    ctx: &OrchestrationContext,
    name: &str,
    input: &str,
    policy: &RetryPolicy,
    options: &ActivityOptions,
) -> Result<String, String> {
    policy
        .validate()
        .map_err(|e| format!("invalid retry policy for {name}: {e}"))?;
    let started_ms = ctx.current_time_ms();
    let deadline_ms = policy
        .total_timeout
        .map(|t| started_ms.saturating_add(t.as_millis() as u64));
    let mut last_error = String::new();
    for attempt in 1..=policy.max_attempts {
        let now = ctx.current_time_ms();
        let remaining = deadline_ms.map(|d| Duration::from_millis(d.saturating_sub(now)));
        let limit = match (policy.timeout, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let activity = ctx.schedule_activity_with_options(name, input, options);
        let outcome = match limit {
            None => activity.await,
            Some(limit) => match select2(activity, ctx.schedule_timer(limit)).await {
                Either::Left(result) => result,
                Either::Right(()) => Err(format!(
                    "activity {name} timed out after {} ms",
                    limit.as_millis()
                )),
            },
        };
        match outcome {
            Ok(value) => return Ok(value),
            Err(error) => last_error = error,
        }
        if attempt == policy.max_attempts {
            break;
        }
        let delay = policy.backoff.delay_after(attempt);
        if let Some(deadline) = deadline_ms {
            if ctx.current_time_ms().saturating_add(delay.as_millis() as u64) >= deadline {
                return Err(format!(
                    "{last_error} (total retry timeout reached after attempt {attempt})"
                ));
            }
        }
        if !delay.is_zero() {
            ctx.schedule_timer(delay).await;
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_delays() {
        let ms = Duration::from_millis;
        let e = Backoff::exponential();
        assert_eq!(
            [1, 2, 3, 4].map(|a| e.delay_after(a)),
            [ms(100), ms(200), ms(400), ms(800)]
        );
        assert_eq!(e.delay_after(40), Duration::from_secs(30));
        assert_eq!(Backoff::linear().delay_after(3), ms(300));
        assert_eq!(Backoff::fixed().delay_after(9), ms(100));
        assert_eq!(Backoff::None.delay_after(2), Duration::ZERO);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(RetryPolicy::new(0).validate().is_err());
        assert!(RetryPolicy::new(2)
            .with_timeout(Duration::ZERO)
            .validate()
            .is_err());
        assert!(RetryPolicy::new(2).validate().is_ok());
    }
}
