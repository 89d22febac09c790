//! Log lines for failures that repeat: each kind said when it first comes, then at most
//! once a period with how many of it were not said in between.
//!
//! Why: some failures come in floods that say nothing new after the first line. With the
//! brokers out of reach librdkafka reports an error about five times a second; with a
//! webhook receiver down, every delivery attempt fails (measured: 2,000 cases' alerts to a
//! receiver refusing connections gave 49,505 warning lines in a minute). Such a flood buries
//! the log's other lines, and journald drops lines past its rate limit whichever they are.
//! The metrics still count every failure.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often a failure that keeps coming is said.
pub const EVERY: Duration = Duration::from_secs(60);

/// Per kind of failure: when it was last said and how many of it came since.
#[derive(Debug)]
pub struct LogThrottle<K> {
    every: Duration,
    kinds: HashMap<K, (Instant, u64)>,
}

impl<K> Default for LogThrottle<K> {
    fn default() -> Self {
        LogThrottle {
            every: EVERY,
            kinds: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> LogThrottle<K> {
    /// Whether to say a failure of `kind` now: `Some(n)` with the `n` of its kind left
    /// unsaid since it was last said, or `None` to leave it unsaid (counted for the next
    /// line).
    pub fn say(&mut self, kind: K, now: Instant) -> Option<u64> {
        match self.kinds.get_mut(&kind) {
            Some((said, unsaid)) if now.saturating_duration_since(*said) < self.every => {
                *unsaid += 1;
                None
            }
            Some((said, unsaid)) => {
                *said = now;
                Some(std::mem::take(unsaid))
            }
            None => {
                self.kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }

    /// Forgets the kinds `gone` picks (the failure is over: the next one is said at once),
    /// giving how many of them were left unsaid.
    pub fn forget(&mut self, mut gone: impl FnMut(&K) -> bool) -> u64 {
        let mut unsaid = 0;
        self.kinds.retain(|k, (_, n)| {
            if gone(k) {
                unsaid += *n;
                false
            } else {
                true
            }
        });
        unsaid
    }
}

/// The end of a repeated failure's log line: how many like it were not said.
pub fn unsaid_note(unsaid: u64) -> String {
    if unsaid == 0 {
        String::new()
    } else {
        format!(" ({unsaid} more like it since the last such line, not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_that_keeps_coming_is_said_once_a_period_with_its_count() {
        let mut log = LogThrottle::default();
        let t0 = Instant::now();
        assert_eq!(log.say("down", t0), Some(0), "the first is said");
        // Five a second for a minute: none said, each counted.
        for i in 1..300u64 {
            let at = t0 + Duration::from_millis(200 * i);
            assert_eq!(log.say("down", at), None, "the {i}th within the minute");
        }
        // Another kind is said at once.
        assert_eq!(log.say("refused", t0 + Duration::from_secs(30)), Some(0));
        // The first past the minute is said with the 299 left unsaid, and the count begins
        // again.
        let later = t0 + EVERY;
        assert_eq!(log.say("down", later), Some(299));
        assert_eq!(log.say("down", later + Duration::from_secs(1)), None);
        assert_eq!(log.say("down", later + EVERY), Some(1));
        assert!(unsaid_note(299).contains("299 more like it"));
        assert_eq!(unsaid_note(0), "");
    }

    #[test]
    fn a_forgotten_failure_is_said_at_once_when_it_comes_again() {
        let mut log = LogThrottle::default();
        let t0 = Instant::now();
        assert_eq!(log.say(("office", "retry"), t0), Some(0));
        assert_eq!(log.say(("office", "retry"), t0), None);
        assert_eq!(log.say(("office", "retry"), t0), None);
        assert_eq!(log.say(("robot", "retry"), t0), Some(0));
        assert_eq!(log.say(("robot", "retry"), t0), None);
        // The office delivers again: its two unsaid failures are given, the robot's kept.
        assert_eq!(log.forget(|k| k.0 == "office"), 2);
        assert_eq!(log.say(("office", "retry"), t0), Some(0), "said at once");
        assert_eq!(log.say(("robot", "retry"), t0), None, "still held");
    }
}
