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
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        match s.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if s.trial_in_flight => false,
            Some(_) => {
                s.trial_in_flight = true;
                true
            }
        }
    }

    /// iDenfy answered (any answer that is not its own failure).
    pub fn succeeded(&self) {
        let mut s = self.state.lock().unwrap();
        s.failures = 0;
        s.open_until = None;
        s.trial_in_flight = false;
    }

    /// iDenfy was unreachable, timed out or answered 5xx.
    pub fn failed(&self) {
        let mut s = self.state.lock().unwrap();
        s.failures += 1;
        s.trial_in_flight = false;
        if s.failures >= self.threshold || s.open_until.is_some() {
            s.open_until = Some(Instant::now() + self.cool_down);
        }
    }

    pub fn is_open(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .open_until
            .is_some_and(|u| Instant::now() < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_tries_once_after_the_cool_down() {
        let c = Circuit::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert!(c.allow());
            c.failed();
        }
        assert!(c.allow(), "still closed below the threshold");
        c.failed();
        assert!(!c.allow(), "open");
        assert!(c.is_open());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.allow(), "one trial after the cool-down");
        assert!(!c.allow(), "only one");
        c.failed();
        assert!(!c.allow(), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.allow());
        c.succeeded();
        assert!(c.allow() && c.allow(), "closed again");
    }
}
