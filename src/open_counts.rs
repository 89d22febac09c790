//! The open-case gauges (`redlight_open_cases`, `redlight_case_lights`), counted as cases
//! change rather than by recounting the store.
//!
//! A case's *class* is what the gauges count it under: its department and, per rule open
//! in it, that rule's light (its overall light is the worst of them). The consumer loop
//! judges each case it persists (the cases the engine reports changed, while it encodes
//! them) and keeps the class, as a 64-bit hash, in the case's [`Case::tag`]; when the class
//! changes, the old one is counted down and the new one up. A forgotten case hands its tag
//! back ([`crate::engine::Engine::take_released`]), and a restore judges every case it
//! loads. So the counts are exact after every batch, and a scrape of `/metrics` reads them
//! without touching the store. Judging a case just encoded costs 90–130 ns (the engine
//! bench's `open-case gauges` line: a million cases encoded with and without it).
//!
//! Before, the gauges came from the board's recount of the whole store: with a million
//! cases about 2 s of CPU at most every 20 s while anything scraped `/metrics`, a tenth of
//! a core (and 1.4–4.2 µs of CPU per event of the daemon benchmark, which polls `/metrics`
//! while it consumes a backlog: docs/performance-log.md).
//!
//! They count the cases of the partitions this instance holds; the board's counts come
//! from the store (`board.cache_seconds`), so for a moment after a change the two may
//! differ. A class is identified by its hash alone: two classes sharing one of 2^64
//! values (never seen, and with a few thousand classes about 1 in 10^12) would be counted
//! together.

use crate::engine::{Case, Datum, Light};
use crate::scorecard::NO_DEPARTMENT;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::hash::Hasher;
use std::sync::Arc;

/// Per rule index, the light of that rule's open items, sorted by rule.
pub type RuleLights = SmallVec<[(u16, Light); 4]>;

/// What the views count a case under, per rule: the light of each rule with an open item —
/// a running or paused clock (its light), an unresolved violation (red), a watched
/// periodic duty (red while a period is missing, else green). Empty for a withdrawn case
/// and for one with nothing open: such a case is not open.
pub fn rule_lights(
    withdrawn: bool,
    active_clocks: impl Iterator<Item = (u16, Light)>,
    unresolved_violations: impl Iterator<Item = u16>,
    duties_missing: impl Iterator<Item = (u16, bool)>,
) -> RuleLights {
    let mut rules = RuleLights::new();
    if withdrawn {
        return rules;
    }
    let mut mark = |rule: u16, light: Light| match rules.iter_mut().find(|(r, _)| *r == rule) {
        Some((_, l)) => *l = (*l).max(light),
        None => rules.push((rule, light)),
    };
    for (rule, light) in active_clocks {
        mark(rule, light);
    }
    for rule in unresolved_violations {
        mark(rule, Light::Red);
    }
    for (rule, missing) in duties_missing {
        mark(rule, if missing { Light::Red } else { Light::Green });
    }
    rules.sort_unstable_by_key(|r| r.0);
    rules
}

/// The rule lights of an engine case (as the board judges its stored form).
fn case_rule_lights(case: &Case) -> RuleLights {
    rule_lights(
        case.withdrawn,
        case.clocks
            .iter()
            .filter(|c| c.active())
            .map(|c| (c.rule, c.light())),
        case.violations
            .iter()
            .filter(|v| !v.resolved)
            .map(|v| v.rule),
        case.duties.iter().map(|d| (d.rule, !d.missing.is_empty())),
    )
}

/// A class of open cases: one department, one set of rule lights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub department: String,
    pub rules: RuleLights,
}

impl Class {
    /// The case's overall light: the worst of its rules'.
    pub fn light(&self) -> Light {
        self.rules.iter().map(|r| r.1).max().unwrap_or(Light::Green)
    }
}

/// The department text of a case, as the views show it ([`Datum::text`]).
fn department(case: &Case) -> std::borrow::Cow<'_, str> {
    case.get("department")
        .and_then(Datum::text)
        .unwrap_or(std::borrow::Cow::Borrowed(NO_DEPARTMENT))
}

fn class_hash(department: &str, rules: &RuleLights) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(department.as_bytes());
    h.write_u8(0xff); // not in UTF-8: the department's end
    for (rule, light) in rules {
        h.write_u16(*rule);
        h.write_u8(*light as u8);
    }
    // Zero is "not counted": a class hashing to it moves to one.
    h.finish().max(1)
}

/// Judges cases into classes, keeping each class's description by its hash.
///
/// The maps of this module are keyed by class hashes, already spread over 64 bits: they
/// hash them with `FxHasher` (a multiplication) rather than SipHash. The loop judges every
/// case it persists and moves it between counts, and SipHash was most of that work.
#[derive(Default)]
pub struct Classifier {
    classes: FxHashMap<u64, Arc<Class>>,
}

impl Classifier {
    /// The class hash of a case; 0 when it is not open.
    pub fn judge(&mut self, case: &Case) -> u64 {
        let rules = case_rule_lights(case);
        if rules.is_empty() {
            return 0;
        }
        let department = department(case);
        let h = class_hash(&department, &rules);
        self.classes.entry(h).or_insert_with(|| {
            Arc::new(Class {
                department: department.into_owned(),
                rules,
            })
        });
        h
    }

    /// Judges a case again and keeps its class in its tag: `(was, is)`, the class it was
    /// counted under (0: none) and the one it is counted under now, for
    /// [`Counts::moved`].
    pub fn rejudge(&mut self, case: &Case) -> (u64, u64) {
        let (was, is) = (case.tag.get(), self.judge(case));
        if was != is {
            case.tag.set(is);
        }
        (was, is)
    }

    /// Learns the classes another classifier has seen (a restore's, on its own thread).
    pub fn absorb(&mut self, other: Classifier) {
        for (h, c) in other.classes {
            self.classes.entry(h).or_insert(c);
        }
    }

    pub fn class(&self, h: u64) -> Option<&Arc<Class>> {
        self.classes.get(&h)
    }

    /// Forgets the classes no case is counted under any more, once they are most of those
    /// known: departments come from event data, and a producer writing a new one into
    /// every event must not grow this without bound. Call it after the batch's counts are
    /// in `totals`, which then hold every class still counted.
    pub fn forget_uncounted(&mut self, totals: &Totals) {
        if self.classes.len() > 2 * totals.counts.len() + FORGET_ABOVE {
            self.classes.retain(|h, _| totals.counts.contains_key(h));
        }
    }
}

/// Classes known beyond twice those counted before [`Classifier::forget_uncounted`] sweeps.
const FORGET_ABOVE: usize = 4096;

/// Open cases per class hash (class 0, "not open", is never counted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts(FxHashMap<u64, i64>);

impl Counts {
    pub fn add(&mut self, h: u64, n: i64) {
        if h == 0 || n == 0 {
            return;
        }
        let e = self.0.entry(h).or_insert(0);
        *e += n;
        if *e == 0 {
            self.0.remove(&h);
        }
    }

    /// Counts a case that moved from class `old` to class `new`.
    pub fn moved(&mut self, old: u64, new: u64) {
        if old != new {
            self.add(old, -1);
            self.add(new, 1);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.0.iter().map(|(h, n)| (*h, *n))
    }
}

/// The counts of every partition the instance holds, as `/metrics` renders them.
#[derive(Default)]
pub struct Totals {
    counts: FxHashMap<u64, (Arc<Class>, i64)>,
}

impl Totals {
    /// Adds `delta` (each count times `sign`); the classes come from `classifier`.
    pub fn apply(&mut self, delta: &Counts, sign: i64, classifier: &Classifier) {
        for (h, n) in delta.iter() {
            match self.counts.get_mut(&h) {
                Some((_, c)) => {
                    *c += n * sign;
                    if *c == 0 {
                        self.counts.remove(&h);
                    }
                }
                None => match classifier.class(h) {
                    Some(class) => {
                        self.counts.insert(h, (class.clone(), n * sign));
                    }
                    None => tracing::warn!(class = h, "open-case count of an unknown class"),
                },
            }
        }
    }

    /// `(class, open cases)` for every class with cases.
    pub fn classes(&self) -> impl Iterator<Item = (&Class, i64)> {
        self.counts.values().map(|(c, n)| (&**c, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_rule_takes_the_worst_light_of_its_open_items_and_withdrawn_cases_count_nowhere() {
        let r = rule_lights(
            false,
            [(3, Light::Yellow), (1, Light::Green), (3, Light::Green)].into_iter(),
            [1].into_iter(),
            [(7, false), (5, true)].into_iter(),
        );
        assert_eq!(
            r.as_slice(),
            &[
                (1, Light::Red),
                (3, Light::Yellow),
                (5, Light::Red),
                (7, Light::Green)
            ]
        );
        let none = rule_lights(
            true,
            [(3, Light::Red)].into_iter(),
            [1].into_iter(),
            std::iter::empty(),
        );
        assert!(none.is_empty(), "a withdrawn case is not open");
    }

    #[test]
    fn counts_move_a_case_between_classes_and_forget_empty_ones() {
        let mut c = Counts::default();
        c.moved(0, 7);
        c.moved(0, 7);
        c.moved(7, 9);
        c.moved(9, 9);
        assert_eq!(
            c.iter().collect::<HashMap<_, _>>(),
            HashMap::from([(7, 1), (9, 1)])
        );
        c.moved(7, 0);
        c.moved(9, 0);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn classes_no_case_is_counted_under_are_forgotten_once_they_pile_up() {
        let mut classifier = Classifier::default();
        for i in 0..(FORGET_ABOVE as u64 + 10) {
            let class = Class {
                department: format!("部门{i}"),
                rules: RuleLights::from_slice(&[(1, Light::Green)]),
            };
            classifier.classes.insert(i + 1, Arc::new(class));
        }
        let mut counted = Counts::default();
        counted.add(7, 3);
        let mut totals = Totals::default();
        totals.apply(&counted, 1, &classifier);
        classifier.forget_uncounted(&totals);
        assert_eq!(
            classifier.classes.len(),
            1,
            "only the counted class is kept"
        );
        assert_eq!(
            classifier.class(7).map(|c| c.department.as_str()),
            Some("部门6")
        );
        // Below the threshold nothing is swept.
        let mut few = Classifier {
            classes: classifier.classes.clone(),
        };
        few.classes.insert(99, classifier.classes[&7].clone());
        few.forget_uncounted(&Totals::default());
        assert_eq!(few.classes.len(), 2);
    }

    #[test]
    fn the_department_and_each_rule_light_make_the_class() {
        let a = class_hash("市住建局", &RuleLights::from_slice(&[(1, Light::Red)]));
        let b = class_hash("市住建局", &RuleLights::from_slice(&[(1, Light::Yellow)]));
        let c = class_hash("市住建", &RuleLights::from_slice(&[(1, Light::Red)]));
        let d = class_hash(
            "市住建局",
            &RuleLights::from_slice(&[(1, Light::Red), (2, Light::Green)]),
        );
        assert_eq!(
            a,
            class_hash("市住建局", &RuleLights::from_slice(&[(1, Light::Red)]))
        );
        assert!(a != b && a != c && a != d && b != c && b != d && c != d);
    }
}
