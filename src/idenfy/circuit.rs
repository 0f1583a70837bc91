//! A circuit breaker for calls to iDenfy: after several failures in a row, calls fail at once
//! for a cool-down instead of each waiting out a timeout; then one trial call decides whether
//! iDenfy is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Circuit {
    state: Mutex<State>,
    threshold: u32,
    cool_down: Duration,
}

#[derive(Debug)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

/// What the breaker is doing, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// The cool-down ended: one trial call may go (or is out) to decide.
    HalfOpen,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }
}

/// Leave to make one call. Report its outcome with `succeeded` or `failed`; dropped unreported
/// (the caller's future was dropped mid-call), a trial's mark is cleared so the next call may
/// try again, and the failure count is left as it was.
#[must_use = "report the call's outcome on the permit"]
pub struct Permit<'a> {
    circuit: &'a Circuit,
    trial: bool,
}

impl Permit<'_> {
    /// iDenfy answered (any answer that is not its own failure).
    pub fn succeeded(mut self) {
        let mut s = self.circuit.state.lock().unwrap();
        s.failures = 0;
        s.open_until = None;
        s.trial_in_flight = false;
        self.trial = false;
    }

    /// iDenfy was unreachable, timed out or answered 5xx.
    pub fn failed(mut self) {
        let mut s = self.circuit.state.lock().unwrap();
        s.failures += 1;
        if self.trial {
            s.trial_in_flight = false;
            self.trial = false;
        }
        if s.failures >= self.circuit.threshold || s.open_until.is_some() {
            s.open_until = Some(Instant::now() + self.circuit.cool_down);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.circuit.state.lock().unwrap().trial_in_flight = false;
        }
    }
}

impl Circuit {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                failures: 0,
                open_until: None,
                trial_in_flight: false,
            }),
            threshold,
            cool_down,
        }
    }

    /// May a call go out now? While open, no; once the cool-down ends, one trial call may.
    pub fn allow(&self) -> Option<Permit<'_>> {
        let mut s = self.state.lock().unwrap();
        let trial = match s.open_until {
            None => false,
            Some(until) if Instant::now() < until => return None,
            Some(_) if s.trial_in_flight => return None,
            Some(_) => {
                s.trial_in_flight = true;
                true
            }
        };
        Some(Permit {
            circuit: self,
            trial,
        })
    }

    pub fn phase(&self) -> Phase {
        match self.state.lock().unwrap().open_until {
            None => Phase::Closed,
            Some(until) if Instant::now() < until => Phase::Open,
            Some(_) => Phase::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_tries_once_after_the_cool_down() {
        let c = Circuit::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            c.allow().unwrap().failed();
        }
        c.allow()
            .expect("still closed below the threshold")
            .failed();
        assert!(c.allow().is_none(), "open");
        assert_eq!(c.phase(), Phase::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.phase(), Phase::HalfOpen);
        let trial = c.allow().expect("one trial after the cool-down");
        assert!(c.allow().is_none(), "only one");
        trial.failed();
        assert!(c.allow().is_none(), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(40));
        c.allow().unwrap().succeeded();
        assert_eq!(c.phase(), Phase::Closed);
        assert!(c.allow().is_some() && c.allow().is_some(), "closed again");
    }

    #[test]
    fn a_trial_dropped_unreported_lets_the_next_call_try() {
        let c = Circuit::new(1, Duration::from_millis(20));
        c.allow().unwrap().failed();
        std::thread::sleep(Duration::from_millis(30));
        let trial = c.allow().expect("trial");
        assert!(c.allow().is_none());
        drop(trial);
        c.allow()
            .expect("the abandoned trial no longer blocks")
            .succeeded();
        assert_eq!(c.phase(), Phase::Closed);
    }

    #[test]
    fn every_phase_has_its_metric_series() {
        for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
            assert!(crate::metrics::BREAKER_PHASES.contains(&phase.as_str()));
        }
    }
}
