//! Rule packs: TOML files under `config/rules/`, compiled into a [`RuleSet`] (SPEC §2).
//!
//! A pack is `[pack]` (its name, title, the event types it adds to the catalogue, the
//! events that withdraw a case) and a list of `[[rule]]` tables. Each rule has an `id`, a
//! human `title`, a legal `basis` and a `kind`:
//! - `deadline` — a clock: `start` → `stop`, optional `pause`/`resume`, `extend`, `limit`,
//!   `warn`, `variant`s chosen by case data;
//! - `sequence` — `stages` that must happen in order;
//! - `check` — a CEL `condition` evaluated `on` some event types; true means a violation;
//! - `periodic` — a duty that recurs every `period` after `start`, met by a `fulfil` event.
//!
//! Loading never stops at the first mistake: every problem is collected with its file, rule
//! and field, so `redlight check` can print them all.

use crate::event::{CATALOGUE, DATA_FIELDS};
use cel::common::ast::{EntryExpr, Expr, IdedExpr, MapExpr, StructExpr};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default share of the limit at which a clock turns yellow: several cities' systems turn
/// yellow at 90% of the time limit.
pub const DEFAULT_WARN_SHARE: f64 = 0.9;

/// One mistake in a pack, located as precisely as the loader can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub rule: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(rule) = &self.rule {
            write!(f, ": rule `{rule}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The unit a span is counted in (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Counted from the start instant itself, every minute counts.
    Minutes,
    Hours,
    /// 民法典 Art. 201: counted from 00:00 of the day after the start; every day counts.
    Days,
    /// As days, but only time inside workdays counts.
    Workdays,
}

impl Unit {
    /// Milliseconds of counted time in one unit.
    pub fn ms(self) -> i64 {
        match self {
            Unit::Minutes => 60_000,
            Unit::Hours => 3_600_000,
            Unit::Days | Unit::Workdays => 86_400_000,
        }
    }
    pub fn is_day_unit(self) -> bool {
        matches!(self, Unit::Days | Unit::Workdays)
    }
    pub fn name(self) -> &'static str {
        match self {
            Unit::Minutes => "minutes",
            Unit::Hours => "hours",
            Unit::Days => "days",
            Unit::Workdays => "workdays",
        }
    }
}

/// A time limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// A fixed span in a unit.
    Span { unit: Unit, amount: u32 },
    /// A per-case span taken from a field of the start event (承诺时限); missing, not a
    /// whole number, or above `max` is a violation, and the clock then runs with `max`.
    SpanFrom { unit: Unit, field: String, max: u32 },
    /// 24:00 of the start day when it is a workday, else of the next workday (即办件).
    SameWorkday,
    /// An absolute due time (RFC 3339) taken from a field of the start event.
    DueFrom { field: String },
}

impl Limit {
    /// The unit of counted time, for the limits that count time.
    pub fn unit(&self) -> Option<Unit> {
        match self {
            Limit::Span { unit, .. } | Limit::SpanFrom { unit, .. } => Some(*unit),
            Limit::SameWorkday | Limit::DueFrom { .. } => None,
        }
    }
}

/// When a clock turns yellow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Warn {
    /// At this share of the limit (plus extensions) of counted time.
    Share(f64),
    /// This many units of counted time before the deadline (as Art. 203 moved it: see
    /// `Counting::schedule_span`), or for fixed-instant limits, this span of wall time
    /// before the deadline.
    Before { unit: Unit, amount: u32 },
}

/// Extensions (行政许可法 Art. 42): an event that adds a number of units to the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Extend {
    pub on: String,
    pub field: String,
    /// The most that may be added in total; more is a violation and is not granted.
    pub max: Option<u32>,
}

/// A variant of a deadline rule chosen by the case's data (e.g. `joint = true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub when: Matcher,
    pub limit: Option<Limit>,
    pub extend_max: Option<u32>,
}

/// Equality tests on the case's data: every listed field must equal its value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matcher(pub Vec<(String, Value)>);

impl Matcher {
    /// Whether every field matches: `test(field, wanted value)` compares the case's value
    /// (with [`json_eq`]) and is false when the case has none.
    pub fn matches(&self, test: impl Fn(&str, &Value) -> bool) -> bool {
        self.0.iter().all(|(k, want)| test(k, want))
    }
}

/// Equality of JSON values for `when`: numbers by value (`15` equals `15.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A compiled CEL condition with its source (for messages), and which of the three
/// variables it reads: the engine builds only those for each evaluation.
#[derive(Clone)]
pub struct Condition {
    pub source: String,
    pub program: Arc<cel::Program>,
    /// Whether the program reads `event`, `data` and `case`.
    pub reads: Reads,
}

/// Which of a condition's variables its program reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    pub event: bool,
    pub data: bool,
    pub case: bool,
}

impl Reads {
    /// Which of `event`, `data` and `case` are among a program's free variables ([`refs`]).
    fn of(variables: &BTreeSet<String>) -> Reads {
        Reads {
            event: variables.contains("event"),
            data: variables.contains("data"),
            case: variables.contains("case"),
        }
    }
}

/// CEL's standard environment (its functions, types and macros; timestamps and durations,
/// not regular expressions: see docs/rules.md), built once and shared by every
/// evaluation: a `cel::Context::default()` builds it anew, and did so for every condition
/// evaluated, most of what an evaluation cost.
pub fn cel_env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

/// The fields of a condition's `event` and `case` (built in `Core::eval`).
const EVENT_FIELDS: [&str; 6] = ["id", "type", "source", "subject", "time", "data"];
const CASE_FIELDS: [&str; 3] = ["id", "data", "types"];

/// CEL's names of types, which a condition may compare with `type(x)`.
const CEL_TYPE_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// What a program refers to: the variables it reads from its context, in name order (its
/// identifiers, less those a comprehension binds where it binds them: the `x` of
/// `data.items.exists(x, x > 1)`, the accumulators the macros add), and the functions it
/// calls, each with whether it is called on a target (`s.startsWith(…)`).
/// `Program::references` lists every identifier, bound or not, and would have `check`
/// refuse CEL's standard macros.
#[derive(Default)]
struct Refs {
    variables: BTreeSet<String>,
    calls: BTreeSet<(String, bool)>,
    /// `(variable, field)` of each `event.x` and `case.x` (the variables, not a macro's
    /// names that shadow them): their fields are fixed, so a misspelt one is known.
    fields: BTreeSet<(String, String)>,
    /// The fields of the data read as `data.x`, `event.data.x` or `case.data.x` (the
    /// variables, not a macro's names): they must be in the catalogue or a pack's `fields`.
    data_fields: BTreeSet<String>,
}

/// ` (did you mean `x`?)` when one of `known` is within two edits of `name` (a letter
/// missing, extra, changed or two swapped), else nothing.
fn did_you_mean<'k>(name: &str, known: impl Iterator<Item = &'k String>) -> String {
    known
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.chars().count())
        .min()
        .map_or_else(String::new, |(_, k)| format!(" (did you mean `{k}`?)"))
}

fn refs(program: &cel::Program) -> Refs {
    fn walk(e: &IdedExpr, bound: &mut Vec<String>, out: &mut Refs) {
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => {
                if !name.starts_with('@') && !bound.iter().any(|b| b == name) {
                    out.variables.insert(name.clone());
                }
            }
            Expr::Call(call) => {
                out.calls
                    .insert((call.func_name.clone(), call.target.is_some()));
                if let Some(target) = &call.target {
                    walk(target, bound, out);
                }
                for arg in &call.args {
                    walk(arg, bound, out);
                }
            }
            Expr::Select(select) => {
                let free = |name: &str| !bound.iter().any(|b| b == name);
                match &select.operand.expr {
                    Expr::Ident(name) if (name == "event" || name == "case") && free(name) => {
                        out.fields.insert((name.clone(), select.field.clone()));
                    }
                    Expr::Ident(name) if name == "data" && free(name) => {
                        out.data_fields.insert(select.field.clone());
                    }
                    Expr::Select(inner)
                        if inner.field == "data"
                            && matches!(&inner.operand.expr,
                                Expr::Ident(name) if (name == "case" || name == "event")
                                    && free(name)) =>
                    {
                        out.data_fields.insert(select.field.clone());
                    }
                    _ => {}
                }
                walk(&select.operand, bound, out)
            }
            Expr::List(list) => {
                for elem in &list.elements {
                    walk(elem, bound, out);
                }
            }
            Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::StructField(field) => walk(&field.value, bound, out),
                        EntryExpr::MapEntry(m) => {
                            walk(&m.key, bound, out);
                            walk(&m.value, bound, out);
                        }
                    }
                }
            }
            Expr::Comprehension(c) => {
                // The range and the accumulator's start are outside the loop's scope; the
                // loop sees its variables and the accumulator, the result the accumulator.
                walk(&c.iter_range, bound, out);
                walk(&c.accu_init, bound, out);
                let depth = bound.len();
                bound.push(c.accu_var.clone());
                walk(&c.result, bound, out);
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.iter().cloned());
                walk(&c.loop_cond, bound, out);
                walk(&c.loop_step, bound, out);
                bound.truncate(depth);
            }
        }
    }
    let mut out = Refs::default();
    walk(program.expression(), &mut Vec::new(), &mut out);
    out
}

/// Whether [`cel_env`] knows a function of that name, called as it is called (on a target
/// or not). The cel crate names no lookup for it, and resolves calls only when it
/// evaluates them, so that a misspelt function would pass `check` and make its rule never
/// apply: it is called once without arguments, which a known function refuses for its
/// arguments and an unknown one as an undeclared reference. Operators (`_==_`, `@in`) are
/// not names a probe can spell, and count as known.
fn function_known(name: &str, member: bool) -> bool {
    let probe = if member {
        format!("null.{name}()")
    } else {
        format!("{name}()")
    };
    let Ok(program) = cel::Program::compile(&probe) else {
        return true;
    };
    let cx = cel::Context::with_env(cel_env());
    !matches!(
        program.execute(&cx),
        Err(cel::ExecutionError::UndeclaredReference(n)) if n.as_str() == name
    )
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

#[derive(Debug, Clone)]
pub struct DeadlineRule {
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub pause: Vec<String>,
    pub resume: Vec<String>,
    pub when: Matcher,
    pub condition: Option<Condition>,
    pub limit: Limit,
    pub variants: Vec<Variant>,
    pub extend: Option<Extend>,
    pub warn: Warn,
}

#[derive(Debug, Clone)]
pub struct SequenceRule {
    pub stages: Vec<String>,
    pub when: Matcher,
}

#[derive(Debug, Clone)]
pub struct CheckRule {
    pub on: Vec<String>,
    pub when: Matcher,
    pub condition: Condition,
    /// What the violation means, for people (the alert's `detail`); the condition's source
    /// when absent.
    pub message: Option<String>,
}

/// How long a periodic duty's period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Month,
    Quarter,
    Year,
}

#[derive(Debug, Clone)]
pub struct PeriodicRule {
    pub start: Vec<String>,
    pub when: Matcher,
    pub fulfil: String,
    pub period: Period,
    /// The data field of the fulfilling event naming the period it is for (`2026Q3`);
    /// without it, an event counts for the period it happens in.
    pub period_field: Option<String>,
    /// Time allowed after a period ends (counted like a deadline from the period's last day).
    pub grace: Option<Limit>,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Deadline(DeadlineRule),
    Sequence(SequenceRule),
    Check(CheckRule),
    Periodic(PeriodicRule),
    /// A rule the store's cases number but the packs retire (`enabled = false`): it keeps
    /// its number and does nothing (see [`RuleSet::with_rule_order`]).
    Retired,
}

/// What a store's rule order has in place of a retired rule's id (before it). Rule ids
/// are words without white space, so no rule id starts with it.
pub const RETIRED: &str = "retired ";

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Arc<str>,
    pub title: Arc<str>,
    pub basis: Arc<str>,
    pub pack: String,
    pub kind: RuleKind,
    /// The values a field of the case's data may take (`values = { kind = ["immediate",
    /// "promised"] }`): another value, where the engine judges the rule's `when`, is a data
    /// problem of the rule. A misspelt `kind` would otherwise match no `when` and start no
    /// clock without a word. A field that is absent is not judged.
    pub values: Vec<(String, Vec<Value>)>,
}

impl Rule {
    /// The place of a retired rule (see [`RuleSet::with_rule_order`]).
    fn retired(id: &str) -> Rule {
        Rule {
            id: Arc::from(id),
            title: Arc::from(""),
            basis: Arc::from(""),
            pack: String::new(),
            kind: RuleKind::Retired,
            values: Vec::new(),
        }
    }
}

/// What an event type does to one rule. The engine runs them phase by phase, in this order
/// ([`Handler::phase`]), and within a phase in the rules' pack order: a withdrawal first,
/// then stops, pauses, resumes and extensions of running clocks, and only then starts, so
/// that one event may stop one clock and start the next (`approval.accepted` stops
/// `xk.notify_incomplete` and starts `xk.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handler {
    Withdraw,
    Stop(u16),
    Pause(u16),
    Resume(u16),
    Extend(u16),
    Start(u16),
    Stage(u16, u8),
    Check(u16),
    // A periodic duty starts before the same event counts towards it: the first
    // `safety.meeting_held` both starts the quarterly duty and meets the current quarter.
    PeriodicStart(u16),
    PeriodicFulfil(u16),
}

impl Handler {
    /// Its phase: handlers run phase by phase, and within one in the rules' pack order.
    fn phase(self) -> u8 {
        match self {
            Handler::Withdraw => 0,
            Handler::Stop(_) => 1,
            Handler::Pause(_) => 2,
            Handler::Resume(_) => 3,
            Handler::Extend(_) => 4,
            Handler::Start(_) => 5,
            Handler::Stage(..) => 6,
            Handler::Check(_) => 7,
            Handler::PeriodicStart(_) => 8,
            Handler::PeriodicFulfil(_) => 9,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PackInfo {
    pub name: String,
    pub title: String,
    pub file: PathBuf,
}

/// Every loaded rule and, per event type, what it does.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub packs: Vec<PackInfo>,
    by_type: FxHashMap<String, TypeInfo>,
    known_types: FxHashSet<String>,
    /// Known types sorted (or as a store numbers them, [`RuleSet::with_type_order`]); a
    /// type's position is its bit in a case's seen-types set.
    type_bits: Vec<String>,
    /// The ids of the rules the packs have with `enabled = false`.
    disabled: Vec<String>,
    /// Event types that withdraw a case (every pack's `withdraw`).
    withdraw: Vec<String>,
    /// Per rule number, its position in the packs' order (a retired rule: `u16::MAX`).
    /// The identity, unless a store numbers the rules otherwise
    /// ([`RuleSet::with_rule_order`]): the engine runs an event's handlers, and a case's
    /// timers due at one instant, in this order, so that the alerts are the same whatever
    /// the numbering.
    rank: Vec<u16>,
}

/// What the engine needs to know about one known event type, found with one lookup.
#[derive(Debug, Clone, Default)]
pub struct TypeInfo {
    /// A small number per known type, so a case can record the types it has seen in a
    /// bit set (CEL conditions ask `"safety.accident_reported" in case.types`).
    pub bit: u8,
    /// What the type does, in engine order.
    pub handlers: Vec<Handler>,
}

impl RuleSet {
    /// What `kind` does, in engine order; empty for a type no rule uses.
    pub fn handlers(&self, kind: &str) -> &[Handler] {
        self.by_type
            .get(kind)
            .map(|t| t.handlers.as_slice())
            .unwrap_or(&[])
    }
    /// The type's bit and handlers; `None` for a type neither the catalogue nor a pack knows.
    pub fn type_info(&self, kind: &str) -> Option<&TypeInfo> {
        self.by_type.get(kind)
    }
    /// Whether the type is in the catalogue or declared by a pack.
    pub fn is_known_type(&self, kind: &str) -> bool {
        self.known_types.contains(kind)
    }
    /// The bit of a known type in a case's seen-types set (at most 128 types).
    pub fn type_bit(&self, kind: &str) -> Option<u8> {
        self.by_type.get(kind).map(|t| t.bit)
    }
    /// The types whose bits are set.
    pub fn types_of(&self, bits: u128) -> Vec<&str> {
        (0..self.type_bits.len().min(128))
            .filter(|i| bits & (1u128 << i) != 0)
            .map(|i| self.type_bits[i].as_str())
            .collect()
    }
    /// The known types in the order a case's seen-types set numbers them (its bits).
    pub fn type_order(&self) -> &[String] {
        &self.type_bits
    }

    /// This rule set with its types numbered as `stored` numbers them (the order a store's
    /// cases were written with), the types `stored` lacks numbered after them in name order.
    /// A stored type no pack declares any more keeps its number, unused by events. So a pack
    /// added with types of its own never renumbers the types stored cases have seen (their
    /// bits are stored as they are). An error when that makes more than 128.
    pub fn with_type_order(&self, stored: &[String]) -> Result<RuleSet, String> {
        let mut bits: Vec<String> = stored.to_vec();
        bits.extend(
            self.type_bits
                .iter()
                .filter(|t| !stored.contains(t))
                .cloned(),
        );
        if bits.len() > 128 {
            return Err(format!(
                "{} event types with those the stored cases have seen ({}); at most 128",
                bits.len(),
                stored.len()
            ));
        }
        let mut set = self.clone();
        for (i, t) in bits.iter().enumerate() {
            if let Some(info) = set.by_type.get_mut(t) {
                info.bit = i as u8;
            }
        }
        set.type_bits = bits;
        Ok(set)
    }

    /// This rule set with its rules numbered as `stored` numbers them (the rule ids in the
    /// order a store's cases were written with: a case names the rule of each clock, stage,
    /// duty and violation by number), with the order to record for the cases written from
    /// now on. So the packs may be reordered, and rules added anywhere, while a store holds
    /// cases:
    /// - a stored rule keeps its number wherever its pack now lists it;
    /// - a rule the store lacks is numbered after the stored ones, in pack order;
    /// - a stored rule the packs have with `enabled = false` keeps its number as a
    ///   [`RuleKind::Retired`] rule, which does nothing: the engine drops its clocks,
    ///   stages, duties and violations from cases as they are restored. Its place is
    ///   recorded as retired for good ([`RETIRED`] before its id), so that enabling the
    ///   rule again numbers it anew, rather than bringing back the clocks it left in cases
    ///   no event has rewritten since;
    /// - a stored rule no pack has at all is an error naming it: a pack left out of the
    ///   configuration by mistake would otherwise silence its rules' running clocks.
    ///
    /// The engine runs an event's handlers and a case's simultaneous timers in pack order
    /// whatever the numbering, so a store's numbering changes no alert.
    pub fn with_rule_order(&self, stored: &[String]) -> Result<(RuleSet, Vec<String>), String> {
        let by_id: FxHashMap<&str, usize> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (&*r.id, i))
            .collect();
        let mut placed = vec![false; self.rules.len()];
        let mut rules = Vec::with_capacity(stored.len() + self.rules.len());
        let mut rank = Vec::with_capacity(rules.capacity());
        let mut order = Vec::with_capacity(rules.capacity());
        let mut gone = Vec::new();
        for id in stored {
            if let Some(&i) = by_id.get(id.as_str())
                && !placed[i]
            {
                placed[i] = true;
                rules.push(self.rules[i].clone());
                rank.push(self.rank[i]);
                order.push(id.clone());
                continue;
            }
            let live = id.strip_prefix(RETIRED).unwrap_or(id);
            if id.starts_with(RETIRED) || self.disabled.iter().any(|d| d == live) {
                rules.push(Rule::retired(live));
                rank.push(u16::MAX);
                order.push(format!("{RETIRED}{live}"));
            } else {
                gone.push(id.as_str());
            }
        }
        if !gone.is_empty() {
            return Err(format!(
                "the store's cases hold clocks, stages, duties or violations of {} that no rule \
                 pack has: {}. Add the pack that has {} back to `engine.rule_packs`; to retire a rule \
                 for good, keep it in its pack with `enabled = false` (its running clocks \
                 then go quiet at the start)",
                if gone.len() == 1 { "a rule" } else { "rules" },
                gone.iter()
                    .map(|g| format!("`{g}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if gone.len() == 1 { "it" } else { "them" },
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !placed[i] {
                rules.push(rule.clone());
                rank.push(self.rank[i]);
                order.push(rule.id.to_string());
            }
        }
        if rules.len() > usize::from(u16::MAX) {
            return Err(format!(
                "{} rules with those the store's cases number; at most 65535",
                rules.len()
            ));
        }
        let mut set = self.clone();
        set.rules = rules;
        set.rank = rank;
        set.index();
        Ok((set, order))
    }

    /// Whether the rule numbered `idx` is retired: it does nothing, and the engine drops
    /// what restored cases hold of it.
    #[inline]
    pub fn is_retired(&self, idx: u16) -> bool {
        self.rank
            .get(usize::from(idx))
            .is_none_or(|&r| r == u16::MAX)
    }
    /// The ids of the rules the packs have with `enabled = false`.
    pub fn disabled(&self) -> &[String] {
        &self.disabled
    }
    /// Whether any rule is retired (see [`RuleSet::with_rule_order`]).
    #[inline]
    pub fn any_retired(&self) -> bool {
        // A scan of one number per rule (a few dozen), for every case restored or viewed:
        // derived rather than kept beside `rank`.
        self.rank.contains(&u16::MAX)
    }
    /// The rule's position in the packs' order: the order the engine runs handlers and
    /// simultaneous timers in.
    #[inline]
    pub fn rank(&self, idx: u16) -> u16 {
        self.rank.get(usize::from(idx)).copied().unwrap_or(u16::MAX)
    }

    pub fn rule(&self, idx: u16) -> &Rule {
        &self.rules[idx as usize]
    }
    pub fn index_of(&self, id: &str) -> Option<u16> {
        self.rules
            .iter()
            .position(|r| &*r.id == id)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Loads and compiles the packs, collecting every problem.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, Vec<Problem>> {
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for p in paths {
            match std::fs::read_to_string(p) {
                Ok(text) => sources.push((p.clone(), text)),
                Err(e) => problems.push(Problem {
                    file: p.clone(),
                    rule: None,
                    field: None,
                    message: format!("cannot read the pack: {e}"),
                }),
            }
        }
        match Self::from_sources(&sources) {
            Ok(set) if problems.is_empty() => Ok(set),
            Ok(_) => Err(problems),
            Err(mut more) => {
                problems.append(&mut more);
                Err(problems)
            }
        }
    }

    /// Compiles packs given as (path, text); the path is used in messages only.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<RuleSet, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut set = RuleSet {
            known_types: CATALOGUE.iter().map(|s| s.to_string()).collect(),
            ..RuleSet::default()
        };
        let mut withdraw: Vec<String> = Vec::new();
        let mut parsed = Vec::new();
        // The data fields a rule may name: the catalogue's and every pack's own.
        let mut known_fields: BTreeSet<String> =
            DATA_FIELDS.iter().map(|s| s.to_string()).collect();
        for (file, text) in sources {
            match parse_pack(file, text) {
                Ok(p) => {
                    set.known_types.extend(p.meta.types.iter().cloned());
                    known_fields.extend(p.meta.fields.iter().cloned());
                    withdraw.extend(p.meta.withdraw.iter().cloned());
                    set.packs.push(PackInfo {
                        name: p.meta.name.clone(),
                        title: p.meta.title.clone(),
                        file: file.clone(),
                    });
                    parsed.push((file.clone(), p));
                }
                Err(mut e) => problems.append(&mut e),
            }
        }
        let mut seen_ids: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (file, pack) in parsed {
            for (i, raw) in pack.rules.into_iter().enumerate() {
                let mut cx = Cx {
                    file: &file,
                    rule: raw
                        .get("id")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("#{}", i + 1)),
                    problems: &mut problems,
                    known: &set.known_types,
                    known_fields: &known_fields,
                };
                if raw.get("enabled").and_then(toml::Value::as_bool) == Some(false) {
                    set.disabled.push(cx.rule.clone());
                }
                let Some(rule) = compile_rule(&mut cx, raw, &pack.meta) else {
                    continue;
                };
                if let Some(first) = seen_ids.get(&*rule.id) {
                    cx.problem(
                        Some("id"),
                        format!("duplicate rule id, first defined in {}", first.display()),
                    );
                    continue;
                }
                seen_ids.insert(rule.id.to_string(), file.clone());
                set.rules.push(rule);
            }
        }
        for w in &withdraw {
            if !set.known_types.contains(w) {
                problems.push(Problem {
                    file: PathBuf::new(),
                    rule: None,
                    field: Some("pack.withdraw".into()),
                    message: format!("event type `{w}` is not in the catalogue"),
                });
            }
        }
        if set.rules.len() > usize::from(u16::MAX) {
            problems.push(Problem {
                file: PathBuf::new(),
                rule: None,
                field: None,
                message: "more than 65535 rules".into(),
            });
        }
        if set.known_types.len() > 128 {
            problems.push(Problem {
                file: PathBuf::new(),
                rule: None,
                field: Some("pack.types".into()),
                message: format!("{} event types in all; at most 128", set.known_types.len()),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut bits: Vec<String> = set.known_types.iter().cloned().collect();
        bits.sort();
        set.type_bits = bits;
        set.rank = (0..set.rules.len() as u16).collect();
        set.withdraw = withdraw;
        set.index();
        Ok(set)
    }

    fn index(&mut self) {
        let mut by_type: FxHashMap<String, TypeInfo> = self
            .type_bits
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    t.clone(),
                    TypeInfo {
                        bit: i as u8,
                        handlers: Vec::new(),
                    },
                )
            })
            .collect();
        let mut add = |t: &str, h: Handler| {
            if let Some(info) = by_type.get_mut(t) {
                info.handlers.push(h);
            }
        };
        for w in &self.withdraw {
            add(w, Handler::Withdraw);
        }
        // In the packs' order, whatever the numbering, sorted by phase below (stably). A
        // retired rule adds nothing (its arm below).
        let mut order: Vec<u16> = (0..self.rules.len() as u16).collect();
        order.sort_by_key(|&i| self.rank[usize::from(i)]);
        for i in order {
            let rule = &self.rules[usize::from(i)];
            match &rule.kind {
                RuleKind::Deadline(d) => {
                    d.start.iter().for_each(|t| add(t, Handler::Start(i)));
                    d.stop.iter().for_each(|t| add(t, Handler::Stop(i)));
                    d.pause.iter().for_each(|t| add(t, Handler::Pause(i)));
                    d.resume.iter().for_each(|t| add(t, Handler::Resume(i)));
                    if let Some(e) = &d.extend {
                        add(&e.on, Handler::Extend(i));
                    }
                }
                RuleKind::Sequence(s) => {
                    for (n, t) in s.stages.iter().enumerate() {
                        add(t, Handler::Stage(i, n as u8));
                    }
                }
                RuleKind::Check(c) => c.on.iter().for_each(|t| add(t, Handler::Check(i))),
                RuleKind::Periodic(p) => {
                    p.start
                        .iter()
                        .for_each(|t| add(t, Handler::PeriodicStart(i)));
                    add(&p.fulfil, Handler::PeriodicFulfil(i));
                }
                RuleKind::Retired => {}
            }
        }
        for info in by_type.values_mut() {
            info.handlers.sort_by_key(|h| h.phase());
            info.handlers.dedup();
        }
        self.by_type = by_type;
    }
}

// ---------------------------------------------------------------------------------------
// The file format.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackMeta {
    name: String,
    title: String,
    /// Event types this pack adds to the catalogue of SPEC §1.
    #[serde(default)]
    types: Vec<String>,
    /// Fields of events' `data` this pack's rules name beyond those SPEC §1 lists.
    #[serde(default)]
    fields: Vec<String>,
    /// Event types that withdraw a case: every clock stops, no alert (`approval.withdrawn`).
    #[serde(default)]
    withdraw: Vec<String>,
    /// The pack's default warning share.
    #[serde(default)]
    warn_share: Option<f64>,
}

struct RawPack {
    meta: PackMeta,
    rules: Vec<toml::Table>,
}

fn parse_pack(file: &Path, text: &str) -> Result<RawPack, Vec<Problem>> {
    let problem = |field: Option<&str>, message: String| Problem {
        file: file.to_path_buf(),
        rule: None,
        field: field.map(str::to_string),
        message,
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        vec![problem(
            None,
            format!("not valid TOML: {}", e.to_string().trim_end()),
        )]
    })?;
    let mut problems = Vec::new();
    let meta = match table.remove("pack") {
        None => {
            problems.push(problem(Some("pack"), "missing the [pack] table".into()));
            None
        }
        Some(v) => match PackMeta::deserialize(v) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(problem(Some("pack"), e.message().to_string()));
                None
            }
        },
    };
    let rules = match table.remove("rule") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let mut rules = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    toml::Value::Table(t) => rules.push(t),
                    _ => problems.push(problem(
                        Some("rule"),
                        format!("rule #{} is not a table", i + 1),
                    )),
                }
            }
            rules
        }
        Some(_) => {
            problems.push(problem(
                Some("rule"),
                "`rule` must be an array of tables ([[rule]])".into(),
            ));
            Vec::new()
        }
    };
    for key in table.keys() {
        problems.push(problem(
            Some(key),
            "unknown top-level key; a pack has [pack] and [[rule]] only".into(),
        ));
    }
    match meta {
        Some(meta) if problems.is_empty() => Ok(RawPack { meta, rules }),
        _ => Err(problems),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindName {
    Deadline,
    Sequence,
    Check,
    Periodic,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    id: String,
    title: String,
    basis: String,
    kind: KindName,
    #[serde(default)]
    enabled: Option<bool>,
    start: Option<OneOrMany>,
    stop: Option<OneOrMany>,
    pause: Option<OneOrMany>,
    resume: Option<OneOrMany>,
    when: Option<toml::Table>,
    values: Option<toml::Table>,
    condition: Option<String>,
    limit: Option<LimitDef>,
    variant: Option<Vec<VariantDef>>,
    extend: Option<ExtendDef>,
    warn: Option<WarnDef>,
    stages: Option<Vec<String>>,
    on: Option<OneOrMany>,
    message: Option<String>,
    fulfil: Option<String>,
    period: Option<Period>,
    period_field: Option<String>,
    grace: Option<LimitDef>,
}

/// See [`RuleDef::kind_fields`].
type KindFields = [(&'static str, bool); 16];

impl RuleDef {
    /// The fields that belong to one kind of rule or another (`when` and `values` serve
    /// every kind), and whether this rule sets each; in the order `redlight check` names
    /// them.
    fn kind_fields(&self) -> KindFields {
        [
            ("message", self.message.is_some()),
            ("start", self.start.is_some()),
            ("stop", self.stop.is_some()),
            ("pause", self.pause.is_some()),
            ("resume", self.resume.is_some()),
            ("limit", self.limit.is_some()),
            ("variant", self.variant.is_some()),
            ("extend", self.extend.is_some()),
            ("warn", self.warn.is_some()),
            ("stages", self.stages.is_some()),
            ("on", self.on.is_some()),
            ("condition", self.condition.is_some()),
            ("fulfil", self.fulfil.is_some()),
            ("period", self.period.is_some()),
            ("period_field", self.period_field.is_some()),
            ("grace", self.grace.is_some()),
        ]
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitDef {
    minutes: Option<u32>,
    hours: Option<u32>,
    days: Option<u32>,
    workdays: Option<u32>,
    same_workday: Option<bool>,
    due_from: Option<String>,
    minutes_from: Option<String>,
    hours_from: Option<String>,
    days_from: Option<String>,
    workdays_from: Option<String>,
    max: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantDef {
    when: toml::Table,
    limit: Option<LimitDef>,
    extend_max: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendDef {
    on: String,
    field: String,
    max: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WarnDef {
    share: Option<f64>,
    before: Option<LimitDef>,
}

struct Cx<'a> {
    file: &'a Path,
    rule: String,
    problems: &'a mut Vec<Problem>,
    known: &'a FxHashSet<String>,
    known_fields: &'a BTreeSet<String>,
}

impl Cx<'_> {
    fn problem(&mut self, field: Option<&str>, message: String) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            rule: Some(self.rule.clone()),
            field: field.map(str::to_string),
            message,
        });
    }

    fn types(&mut self, field: &str, v: Option<OneOrMany>, required: bool) -> Vec<String> {
        let v = match v {
            Some(v) => v.into_vec(),
            None => {
                if required {
                    self.problem(Some(field), "required for this kind of rule".into());
                }
                return Vec::new();
            }
        };
        if required && v.is_empty() {
            self.problem(Some(field), "must name at least one event type".into());
        }
        for t in &v {
            self.check_type(field, t);
        }
        v
    }

    fn check_type(&mut self, field: &str, t: &str) {
        let known = self.known;
        if !known.contains(t) {
            self.unknown(field, ("event type", t), "types", known.iter(), "");
        }
    }

    /// A field of events' data that the rule names (at `at`) must be one SPEC §1 lists or
    /// a pack declares in `fields`: a misspelt one would be absent from every case, and the
    /// rule would never apply (a `when`), never count a limit or extension, never warn.
    fn data_field(&mut self, at: &str, name: &str) {
        let known = self.known_fields;
        if !known.contains(name) {
            let advice = "; declare a field of the producers' own in `[pack] fields`";
            self.unknown(at, ("data field", name), "fields", known.iter(), advice);
        }
    }

    /// Reports a name (`what`, `name`) in neither SPEC §1 nor a pack's `key`, with the
    /// nearest of `known`.
    fn unknown<'k>(
        &mut self,
        at: &str,
        (what, name): (&str, &str),
        key: &str,
        known: impl Iterator<Item = &'k String>,
        advice: &str,
    ) {
        let hint = did_you_mean(name, known);
        self.problem(
            Some(at),
            format!(
                "{what} `{name}` is not in the catalogue (SPEC §1) nor in a pack's `{key}`{hint}\
                 {advice}"
            ),
        );
    }

    fn matcher(&mut self, field: &str, t: Option<toml::Table>) -> Matcher {
        let Some(t) = t else {
            return Matcher::default();
        };
        let mut out = Vec::new();
        for (k, v) in t {
            self.data_field(&format!("{field}.{k}"), &k);
            match toml_to_json(&v) {
                Some(j) => out.push((k, j)),
                None => self.problem(
                    Some(&format!("{field}.{k}")),
                    "must be a string, number or boolean".into(),
                ),
            }
        }
        Matcher(out)
    }

    /// `values = { field = [value, …] }`: each a non-empty list of strings, numbers or
    /// booleans.
    fn values(&mut self, t: Option<toml::Table>) -> Vec<(String, Vec<Value>)> {
        let mut out = Vec::new();
        for (k, v) in t.unwrap_or_default() {
            self.data_field(&format!("values.{k}"), &k);
            let list: Option<Vec<Value>> = match &v {
                toml::Value::Array(items) if !items.is_empty() => {
                    items.iter().map(toml_to_json).collect()
                }
                _ => None,
            };
            match list {
                Some(list) => out.push((k, list)),
                None => self.problem(
                    Some(&format!("values.{k}")),
                    "must be a non-empty list of strings, numbers or booleans".into(),
                ),
            }
        }
        out
    }

    fn condition(&mut self, field: &str, src: Option<String>) -> Option<Condition> {
        let src = src?;
        match cel::Program::compile(&src) {
            Ok(program) => {
                let refs = refs(&program);
                for (name, member) in &refs.calls {
                    if !function_known(name, *member) {
                        let hint = if name == "matches" {
                            " (regular expressions are not in this build; use `startsWith`, \
                             `endsWith` or `contains`)"
                        } else {
                            ""
                        };
                        self.problem(
                            Some(field),
                            format!("unknown function `{name}` in CEL{hint}"),
                        );
                    }
                }
                for (var, name) in &refs.fields {
                    let fields = if var == "event" {
                        EVENT_FIELDS.as_slice()
                    } else {
                        CASE_FIELDS.as_slice()
                    };
                    if !fields.contains(&name.as_str()) {
                        self.problem(
                            Some(field),
                            format!(
                                "`{var}` has no field `{name}` in CEL; it has {}",
                                fields.join(", ")
                            ),
                        );
                    }
                }
                for name in &refs.data_fields {
                    self.data_field(field, name);
                }
                for var in &refs.variables {
                    if !["event", "data", "case"].contains(&var.as_str())
                        && !CEL_TYPE_NAMES.contains(&var.as_str())
                    {
                        self.problem(
                            Some(field),
                            format!(
                                "unknown variable `{var}` in CEL; use `event`, `data` or `case`"
                            ),
                        );
                    }
                }
                Some(Condition {
                    source: src,
                    program: Arc::new(program),
                    reads: Reads::of(&refs.variables),
                })
            }
            Err(e) => {
                self.problem(Some(field), format!("not valid CEL: {e}"));
                None
            }
        }
    }

    fn limit(&mut self, field: &str, def: LimitDef, allow_from: bool) -> Option<Limit> {
        let mut found: Vec<Limit> = Vec::new();
        let span = |unit, amount| Limit::Span { unit, amount };
        let spans = [
            (def.minutes, Unit::Minutes),
            (def.hours, Unit::Hours),
            (def.days, Unit::Days),
            (def.workdays, Unit::Workdays),
        ];
        for (v, unit) in spans {
            if let Some(amount) = v {
                found.push(span(unit, amount));
            }
        }
        let froms = [
            (def.minutes_from, Unit::Minutes, "minutes_from"),
            (def.hours_from, Unit::Hours, "hours_from"),
            (def.days_from, Unit::Days, "days_from"),
            (def.workdays_from, Unit::Workdays, "workdays_from"),
        ];
        for (v, unit, key) in froms {
            if let Some(f) = v {
                self.data_field(&format!("{field}.{key}"), &f);
                match def.max {
                    Some(max) => found.push(Limit::SpanFrom {
                        unit,
                        field: f,
                        max,
                    }),
                    None => self.problem(
                        Some(&format!("{field}.max")),
                        "a limit taken from the event needs `max`, the statutory limit".into(),
                    ),
                }
            }
        }
        if def.same_workday == Some(true) {
            found.push(Limit::SameWorkday);
        }
        if let Some(f) = def.due_from {
            self.data_field(&format!("{field}.due_from"), &f);
            found.push(Limit::DueFrom { field: f });
        }
        if found.len() != 1 {
            self.problem(
                Some(field),
                format!(
                    "give exactly one of minutes, hours, days, workdays, same_workday, due_from, \
                     or a *_from field (found {})",
                    found.len()
                ),
            );
            return None;
        }
        let limit = found.pop()?;
        if !allow_from && matches!(limit, Limit::SpanFrom { .. } | Limit::DueFrom { .. }) {
            self.problem(Some(field), "cannot be taken from an event here".into());
            return None;
        }
        if def.max.is_some() && !matches!(limit, Limit::SpanFrom { .. }) {
            self.problem(
                Some(&format!("{field}.max")),
                "only applies to a limit taken from the event".into(),
            );
        }
        if let Limit::Span { amount: 0, .. } = limit {
            self.problem(Some(field), "must be greater than zero".into());
        }
        Some(limit)
    }

    /// A problem for each field the rule sets that its kind does not take (of the fields
    /// that belong to one kind or another, [`RuleDef::kind_fields`]).
    fn takes_only(&mut self, kind: &str, fields: &KindFields, takes: &[&str]) {
        for &(name, set) in fields {
            if set && !takes.contains(&name) {
                self.problem(Some(name), format!("does not apply to a {kind} rule"));
            }
        }
    }
}

fn toml_to_json(v: &toml::Value) -> Option<Value> {
    Some(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        _ => return None,
    })
}

/// The field a rule's deserialisation error is about: the path to the value serde refused
/// (`kind`, `limit.hours`, `variant[0].limit`, or an unknown field: `strat`), from
/// `serde_path_to_error`. `None` for the rule's table as a whole.
fn error_field(path: &str) -> Option<String> {
    let path = path.trim_start_matches('.');
    (!path.is_empty()).then(|| path.to_string())
}

fn compile_rule(cx: &mut Cx<'_>, raw: toml::Table, meta: &PackMeta) -> Option<Rule> {
    let def = match serde_path_to_error::deserialize::<_, RuleDef>(toml::Value::Table(raw)) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.inner().message().to_string();
            cx.problem(error_field(&e.path().to_string()).as_deref(), msg);
            return None;
        }
    };
    if def.enabled == Some(false) {
        return None;
    }
    let before = cx.problems.len();
    if def.id.trim().is_empty() || def.id.contains(char::is_whitespace) {
        cx.problem(
            Some("id"),
            "must be a non-empty word like `xk.decision`".into(),
        );
    }
    if def.title.trim().is_empty() {
        cx.problem(Some("title"), "must not be empty".into());
    }
    if def.basis.trim().is_empty() {
        cx.problem(
            Some("basis"),
            "must cite the article the rule enforces".into(),
        );
    }
    let pack_share = meta.warn_share.unwrap_or(DEFAULT_WARN_SHARE);
    let fields = def.kind_fields();
    let values = cx.values(def.values);
    let kind = match def.kind {
        KindName::Deadline => {
            cx.takes_only(
                "deadline",
                &fields,
                &[
                    "start",
                    "stop",
                    "pause",
                    "resume",
                    "limit",
                    "variant",
                    "extend",
                    "warn",
                    "condition",
                ],
            );
            let start = cx.types("start", def.start, true);
            let stop = cx.types("stop", def.stop, true);
            let pause = cx.types("pause", def.pause, false);
            let resume = cx.types("resume", def.resume, false);
            if pause.is_empty() != resume.is_empty() {
                cx.problem(
                    Some(if pause.is_empty() { "pause" } else { "resume" }),
                    "pause and resume go together".into(),
                );
            }
            let when = cx.matcher("when", def.when);
            let condition = cx.condition("condition", def.condition);
            let limit = match def.limit {
                Some(l) => cx.limit("limit", l, true),
                None => {
                    cx.problem(Some("limit"), "required for a deadline rule".into());
                    None
                }
            };
            let mut variants = Vec::new();
            for (n, v) in def.variant.unwrap_or_default().into_iter().enumerate() {
                let field = format!("variant[{n}]");
                let when = cx.matcher(&format!("{field}.when"), Some(v.when));
                if when.0.is_empty() {
                    cx.problem(Some(&format!("{field}.when")), "must not be empty".into());
                }
                let limit = v
                    .limit
                    .and_then(|l| cx.limit(&format!("{field}.limit"), l, true));
                variants.push(Variant {
                    when,
                    limit,
                    extend_max: v.extend_max,
                });
            }
            let extend = def.extend.map(|e| {
                cx.check_type("extend.on", &e.on);
                cx.data_field("extend.field", &e.field);
                Extend {
                    on: e.on,
                    field: e.field,
                    max: e.max,
                }
            });
            if let Some(limit) = &limit {
                if extend.is_some() && limit.unit().is_none() {
                    cx.problem(
                        Some("extend"),
                        "a fixed-instant limit (same_workday, due_from) cannot be extended".into(),
                    );
                }
                for v in &variants {
                    if let Some(vl) = &v.limit
                        && vl.unit() != limit.unit()
                    {
                        cx.problem(
                            Some("variant.limit"),
                            "a variant's limit must count in the rule's unit".into(),
                        );
                    }
                }
            }
            let warn = match def.warn {
                None => Warn::Share(pack_share),
                Some(w) => match (w.share, w.before) {
                    (Some(s), None) => {
                        if !(s > 0.0 && s < 1.0) {
                            cx.problem(Some("warn.share"), "must be between 0 and 1".into());
                        }
                        Warn::Share(s)
                    }
                    (None, Some(b)) => match cx.limit("warn.before", b, false) {
                        Some(Limit::Span { unit, amount }) => {
                            if let Some(lu) = limit.as_ref().and_then(Limit::unit)
                                && lu != unit
                            {
                                cx.problem(
                                    Some("warn.before"),
                                    format!("must count in the limit's unit ({})", lu.name()),
                                );
                            }
                            Warn::Before { unit, amount }
                        }
                        _ => Warn::Share(pack_share),
                    },
                    _ => {
                        cx.problem(Some("warn"), "give exactly one of share, before".into());
                        Warn::Share(pack_share)
                    }
                },
            };
            RuleKind::Deadline(DeadlineRule {
                start,
                stop,
                pause,
                resume,
                when,
                condition,
                limit: limit.unwrap_or(Limit::SameWorkday),
                variants,
                extend,
                warn,
            })
        }
        KindName::Sequence => {
            cx.takes_only("sequence", &fields, &["stages"]);
            let stages = def.stages.unwrap_or_default();
            if stages.len() < 2 || stages.len() > 64 {
                cx.problem(Some("stages"), "list between 2 and 64 event types".into());
            }
            let mut uniq = HashSet::new();
            for s in &stages {
                cx.check_type("stages", s);
                if !uniq.insert(s) {
                    cx.problem(Some("stages"), format!("`{s}` is listed twice"));
                }
            }
            RuleKind::Sequence(SequenceRule {
                stages,
                when: cx.matcher("when", def.when),
            })
        }
        KindName::Check => {
            cx.takes_only("check", &fields, &["on", "condition", "message"]);
            let on = cx.types("on", def.on, true);
            let when = cx.matcher("when", def.when);
            let condition = match def.condition {
                Some(c) => cx.condition("condition", Some(c)),
                None => {
                    cx.problem(Some("condition"), "required for a check rule".into());
                    None
                }
            };
            RuleKind::Check(CheckRule {
                on,
                when,
                message: def.message,
                condition: condition.unwrap_or_else(|| Condition {
                    source: "false".into(),
                    program: Arc::new(cel::Program::compile("false").expect("literal")),
                    reads: Reads::default(),
                }),
            })
        }
        KindName::Periodic => {
            cx.takes_only(
                "periodic",
                &fields,
                &["start", "fulfil", "period", "period_field", "grace"],
            );
            let start = cx.types("start", def.start, true);
            let fulfil = match def.fulfil {
                Some(f) => {
                    cx.check_type("fulfil", &f);
                    f
                }
                None => {
                    cx.problem(Some("fulfil"), "required for a periodic rule".into());
                    String::new()
                }
            };
            let period = def.period.unwrap_or_else(|| {
                cx.problem(Some("period"), "required: month, quarter or year".into());
                Period::Quarter
            });
            let grace = def.grace.and_then(|g| cx.limit("grace", g, false));
            if let Some(f) = &def.period_field {
                cx.data_field("period_field", f);
            }
            if let Some(g) = &grace
                && g.unit().is_none()
            {
                cx.problem(
                    Some("grace"),
                    "must be a span (hours, days, workdays)".into(),
                );
            }
            RuleKind::Periodic(PeriodicRule {
                start,
                when: cx.matcher("when", def.when),
                fulfil,
                period,
                period_field: def.period_field,
                grace,
            })
        }
    };
    // A `when` that names a value its field is declared never to take can never match.
    for (field, when) in whens(&kind) {
        for (k, want) in &when.0 {
            if let Some((_, allowed)) = values.iter().find(|(f, _)| f == k)
                && !allowed.iter().any(|v| json_eq(v, want))
            {
                cx.problem(
                    Some(&format!("{field}.{k}")),
                    format!(
                        "{want} is none of the values `values.{k}` declares ({}): it can never \
                         match",
                        listed(allowed)
                    ),
                );
            }
        }
    }
    if cx.problems.len() > before {
        return None;
    }
    Some(Rule {
        id: def.id.into(),
        title: def.title.into(),
        basis: def.basis.into(),
        pack: meta.name.clone(),
        kind,
        values,
    })
}

/// A rule's `when` tables with where each is in the rule (`when`, `variant[0].when`, …).
fn whens(kind: &RuleKind) -> Vec<(String, &Matcher)> {
    match kind {
        RuleKind::Deadline(d) => std::iter::once(("when".to_string(), &d.when))
            .chain(
                d.variants
                    .iter()
                    .enumerate()
                    .map(|(n, v)| (format!("variant[{n}].when"), &v.when)),
            )
            .collect(),
        RuleKind::Sequence(s) => vec![("when".into(), &s.when)],
        RuleKind::Check(c) => vec![("when".into(), &c.when)],
        RuleKind::Periodic(p) => vec![("when".into(), &p.when)],
        RuleKind::Retired => Vec::new(),
    }
}

/// Values as a list for a message: `"immediate", "promised"`.
pub fn listed(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> Result<RuleSet, Vec<Problem>> {
        RuleSet::from_sources(&[(PathBuf::from("rules/test.toml"), text.to_string())])
    }

    const HEAD: &str = "[pack]\nname = \"t\"\ntitle = \"test\"\n";

    /// Two packs of deadline rules started by `approval.accepted`; `disabled` names rules
    /// written with `enabled = false`.
    fn packs(order: &[&str], disabled: &[&str]) -> RuleSet {
        let rule = |id: &str| {
            let enabled = if disabled.contains(&id) {
                "enabled = false\n"
            } else {
                ""
            };
            format!(
                "[[rule]]\nid = \"{id}\"\nkind = \"deadline\"\ntitle = \"t\"\nbasis = \"b\"\n\
                 {enabled}start = \"approval.accepted\"\nstop = \"approval.decided\"\n\
                 limit = {{ days = 1 }}\n"
            )
        };
        let pack = |name: &str| {
            let rules: String = order
                .iter()
                .filter(|id| id.starts_with(name))
                .map(|id| rule(id))
                .collect();
            (
                PathBuf::from(format!("rules/{name}.toml")),
                format!("[pack]\nname = \"{name}\"\ntitle = \"{name}\"\n{rules}"),
            )
        };
        let mut names: Vec<&str> = Vec::new();
        for id in order {
            let name = &id[..1];
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let sources: Vec<_> = names.iter().map(|n| pack(n)).collect();
        RuleSet::from_sources(&sources).expect("packs")
    }

    fn ids(set: &RuleSet) -> Vec<String> {
        set.rules.iter().map(|r| r.id.to_string()).collect()
    }

    /// The handlers of `approval.accepted` as the rule ids they start, in the order run.
    fn starts(set: &RuleSet) -> Vec<String> {
        set.handlers("approval.accepted")
            .iter()
            .map(|h| match h {
                Handler::Start(r) => set.rule(*r).id.to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_store_keeps_its_rule_numbers_whatever_order_the_packs_list_them_in() {
        let stored = ids(&packs(&["a1", "a2", "b1"], &[]));
        assert_eq!(stored, ["a1", "a2", "b1"]);

        // The packs listed the other way round, and a rule added before the others.
        let now = packs(&["b0", "b1", "a1", "a2"], &[]);
        assert_eq!(ids(&now), ["b0", "b1", "a1", "a2"]);
        let (kept, order) = now.with_rule_order(&stored).expect("kept");
        assert_eq!(
            ids(&kept),
            ["a1", "a2", "b1", "b0"],
            "stored numbers kept, the new after"
        );
        assert_eq!(order, ids(&kept));
        assert!(!kept.any_retired());
        assert_eq!(
            starts(&kept),
            starts(&now),
            "handlers run in pack order, not by number"
        );
        assert_eq!(starts(&now), ["b0", "b1", "a1", "a2"]);
        assert_eq!(
            (0..4).map(|i| kept.rank(i)).collect::<Vec<_>>(),
            [2, 3, 1, 0]
        );
        // Numbered as stored again: nothing moves.
        let (again, order2) = kept.with_rule_order(&order).expect("again");
        assert_eq!((ids(&again), order2), (ids(&kept), order.clone()));

        // Retired with `enabled = false`: its number stays, doing nothing.
        let retiring = packs(&["b0", "b1", "a1", "a2"], &["a2"]);
        let (retired, order) = retiring.with_rule_order(&order).expect("retired");
        assert_eq!(order, ["a1", "retired a2", "b1", "b0"]);
        assert!(retired.any_retired() && retired.is_retired(1) && !retired.is_retired(0));
        assert!(matches!(retired.rule(1).kind, RuleKind::Retired));
        assert_eq!(starts(&retired), ["b0", "b1", "a1"]);
        // Enabled again, it is numbered anew: what cases still hold under its old number
        // stays retired.
        let (back, order) = packs(&["b0", "b1", "a1", "a2"], &[])
            .with_rule_order(&order)
            .expect("back");
        assert_eq!(order, ["a1", "retired a2", "b1", "b0", "a2"]);
        assert!(back.is_retired(1) && !back.is_retired(4));
        assert_eq!(starts(&back), ["b0", "b1", "a1", "a2"]);
        // Once retired, the rule may leave its pack: its place stays retired.
        let without = packs(&["b0", "b1", "a1"], &[]);
        let (_, kept_order) = without
            .with_rule_order(&["a1".into(), "retired a2".into(), "b1".into(), "b0".into()])
            .expect("retired before, removed now");
        assert_eq!(kept_order, ["a1", "retired a2", "b1", "b0"]);

        // A stored rule no pack has (a pack left out) is refused, naming it.
        let e = packs(&["a1", "a2"], &[])
            .with_rule_order(&["a1".into(), "a2".into(), "b1".into(), "b0".into()])
            .expect_err("rules gone");
        assert!(
            e.contains("`b1`, `b0`") && e.contains("enabled = false"),
            "{e}"
        );
        let e = packs(&["a1", "b1"], &[])
            .with_rule_order(&["a1".into(), "a2".into(), "b1".into()])
            .expect_err("a rule gone");
        assert!(e.contains("of a rule that no rule pack has: `a2`"), "{e}");
    }

    #[test]
    fn a_deadline_rule_compiles_and_is_indexed_by_event_type() {
        let set = load(&format!(
            "{HEAD}
[[rule]]
id = \"t.decision\"
kind = \"deadline\"
title = \"决定期限\"
basis = \"第四十二条\"
start = \"approval.accepted\"
stop = [\"approval.decided\"]
pause = \"approval.suspended\"
resume = \"approval.resumed\"
limit = {{ workdays = 20 }}
extend = {{ on = \"approval.extended\", field = \"extra_workdays\", max = 10 }}
[[rule.variant]]
when = {{ joint = true }}
limit = {{ workdays = 45 }}
extend_max = 15
"
        ))
        .expect("compiles");
        assert_eq!(set.handlers("approval.accepted"), &[Handler::Start(0)]);
        assert_eq!(set.handlers("approval.decided"), &[Handler::Stop(0)]);
        assert_eq!(set.handlers("approval.extended"), &[Handler::Extend(0)]);
        let RuleKind::Deadline(d) = &set.rules[0].kind else {
            panic!("deadline")
        };
        assert_eq!(d.warn, Warn::Share(DEFAULT_WARN_SHARE));
        assert_eq!(d.variants[0].extend_max, Some(15));
    }

    #[test]
    fn every_problem_names_file_rule_and_field() {
        let errs = load(&format!(
            "{HEAD}
[[rule]]
id = \"t.a\"
kind = \"deadline\"
title = \"a\"
basis = \"b\"
start = \"approval.acepted\"
stop = \"approval.decided\"
limit = {{ workdays = 20, hours = 3 }}

[[rule]]
id = \"t.b\"
kind = \"check\"
title = \"b\"
basis = \"b\"
on = \"safety.accident_discovered\"
condition = \"data.x ==\"

[[rule]]
id = \"t.c\"
kind = \"deadline\"
title = \"c\"
basis = \"b\"
strat = \"approval.accepted\"

[[rule]]
id = \"t.d\"
kind = \"deadlin\"
title = \"d\"
basis = \"b\"

[[rule]]
id = \"t.e\"
kind = \"deadline\"
title = \"e\"
basis = \"b\"
start = \"approval.accepted\"
stop = \"approval.decided\"
limit = {{ hours = \"24\" }}

[[rule]]
id = \"t.f\"
kind = \"deadline\"
title = \"f\"
basis = \"b\"
start = \"approval.accepted\"
stop = \"approval.decided\"
limit = {{ hours = 24 }}
[[rule.variant]]
when = {{ joint = true }}
limit = {{ hours = 48, minuts = 5 }}
"
        ))
        .expect_err("bad");
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        let joined = text.join("\n");
        assert!(
            joined.contains(
                "rules/test.toml: rule `t.a`: field `start`: event type `approval.acepted` is \
                 not in the catalogue (SPEC §1) nor in a pack's `types` (did you mean \
                 `approval.accepted`?)"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("rule `t.a`: field `limit`: give exactly one"),
            "{joined}"
        );
        assert!(
            joined.contains("rule `t.b`: field `condition`: not valid CEL"),
            "{joined}"
        );
        assert!(
            joined.contains("rule `t.c`: field `strat`: unknown field `strat`"),
            "{joined}"
        );
        // A value serde refuses is named by its path, nested ones too.
        assert!(
            joined.contains("rule `t.d`: field `kind`: unknown variant `deadlin`"),
            "{joined}"
        );
        assert!(
            joined.contains("rule `t.e`: field `limit.hours`: invalid type: string \"24\""),
            "{joined}"
        );
        assert!(
            joined.contains("rule `t.f`: field `variant[0].limit.minuts`: unknown field `minuts`"),
            "{joined}"
        );
    }

    /// A field of another kind of rule (a `limit` on a check, `stages` on a deadline) is
    /// named as not applying to the rule's kind, each one, and nothing else is said of the
    /// fields each kind takes.
    #[test]
    fn a_field_of_another_kind_of_rule_is_named() {
        let rule = |id: &str, kind: &str, fields: &str| {
            format!(
                "\n[[rule]]\nid = \"{id}\"\nkind = \"{kind}\"\ntitle = \"t\"\nbasis = \"b\"\n{fields}\n"
            )
        };
        let deadline = "start = \"approval.accepted\"\nstop = \"approval.decided\"\n\
                        limit = { workdays = 20 }\ncondition = \"true\"";
        let check = "on = \"safety.accident_discovered\"\ncondition = \"true\"\nmessage = \"m\"";
        let sequence = "stages = [\"approval.accepted\", \"approval.decided\"]";
        let periodic = "start = \"market.registration_decided\"\n\
                        fulfil = \"market.report_submitted\"\nperiod = \"quarter\"\n\
                        grace = { days = 15 }";
        let good = [
            rule("t.d", "deadline", deadline),
            rule("t.c", "check", check),
            rule("t.s", "sequence", sequence),
            rule("t.p", "periodic", periodic),
        ];
        load(&format!("{HEAD}{}", good.concat())).expect("each kind with the fields it takes");
        let bad = [
            rule(
                "t.d",
                "deadline",
                &format!("{deadline}\nstages = [\"approval.accepted\"]"),
            ),
            rule("t.c", "check", &format!("{check}\nlimit = {{ hours = 1 }}")),
            rule(
                "t.s",
                "sequence",
                &format!("{sequence}\ncondition = \"true\""),
            ),
            rule(
                "t.p",
                "periodic",
                &format!("{periodic}\nstop = \"approval.decided\""),
            ),
        ];
        let errs = load(&format!("{HEAD}{}", bad.concat())).expect_err("bad");
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        for want in [
            "rule `t.d`: field `stages`: does not apply to a deadline rule",
            "rule `t.c`: field `limit`: does not apply to a check rule",
            "rule `t.s`: field `condition`: does not apply to a sequence rule",
            "rule `t.p`: field `stop`: does not apply to a periodic rule",
        ] {
            assert_eq!(
                text.iter().filter(|t| t.contains(want)).count(),
                1,
                "{want}: {text:#?}"
            );
        }
        assert_eq!(text.len(), 4, "{text:#?}");
    }

    /// Every place a rule names a field of events' data is checked against SPEC §1's
    /// fields and the packs' `fields`, with the nearest known name offered; a field a pack
    /// declares (in any pack) is accepted everywhere. A misspelt field would be absent from
    /// every case: the rule would never apply, count or warn, and nothing would say why.
    /// (A misspelt event type gets the same offer: `every_problem_names_file_rule_and_field`.)
    #[test]
    fn a_data_field_a_rule_names_is_one_the_catalogue_or_a_pack_knows() {
        let pack = |fields: &str, kidn: &str, promised: &str, extra: &str, period: &str| {
            format!(
                "[pack]
name = \"t\"
title = \"test\"
{fields}
[[rule]]
id = \"t.p\"
kind = \"deadline\"
title = \"p\"
basis = \"b\"
start = \"approval.accepted\"
stop = \"approval.completed\"
when = {{ {kidn} = \"promised\" }}
values = {{ {kidn} = [\"immediate\", \"promised\"] }}
limit = {{ workdays_from = \"{promised}\", max = 20 }}
extend = {{ on = \"approval.extended\", field = \"{extra}\", max = 10 }}
condition = 'has(data.fee_level)'

[[rule.variant]]
when = {{ {kidn} = \"promised\", joint = true }}
limit = {{ workdays_from = \"{promised}\", max = 45 }}

[[rule]]
id = \"t.q\"
kind = \"periodic\"
title = \"q\"
basis = \"b\"
start = \"market.registration_decided\"
fulfil = \"market.report_submitted\"
period = \"quarter\"
period_field = \"{period}\"

[[rule]]
id = \"t.h\"
kind = \"deadline\"
title = \"h\"
basis = \"b\"
start = \"safety.rectification_ordered\"
stop = \"safety.hazard_rectified\"
limit = {{ due_from = \"{period}\" }}
"
            )
        };
        let fields = "fields = [\"fee_level\"]";
        load(&pack(
            fields,
            "kind",
            "promised_workdays",
            "extra_workdays",
            "due",
        ))
        .expect("the catalogue's fields and the pack's own");
        let errs = load(&pack(
            "",
            "kidn",
            "promised_wrokdays",
            "extra_workday",
            "perod",
        ))
        .expect_err("misspelt fields");
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        let says = |rule: &str, at: &str, name: &str, hint: &str| {
            format!(
                "rules/test.toml: rule `{rule}`: field `{at}`: data field `{name}` is not in \
                 the catalogue (SPEC §1) nor in a pack's `fields`{hint}; declare a field of \
                 the producers' own in `[pack] fields`"
            )
        };
        let mean = |k: &str| format!(" (did you mean `{k}`?)");
        assert_eq!(
            text,
            [
                says("t.p", "values.kidn", "kidn", &mean("kind")),
                says("t.p", "when.kidn", "kidn", &mean("kind")),
                says("t.p", "condition", "fee_level", ""),
                says(
                    "t.p",
                    "limit.workdays_from",
                    "promised_wrokdays",
                    &mean("promised_workdays")
                ),
                says("t.p", "variant[0].when.kidn", "kidn", &mean("kind")),
                says(
                    "t.p",
                    "variant[0].limit.workdays_from",
                    "promised_wrokdays",
                    &mean("promised_workdays")
                ),
                says(
                    "t.p",
                    "extend.field",
                    "extra_workday",
                    &mean("extra_workdays")
                ),
                says("t.q", "period_field", "perod", &mean("period")),
                says("t.h", "limit.due_from", "perod", &mean("period")),
            ]
        );
        // A field one pack declares serves the rules of every pack, as `types` do.
        let other = "[pack]\nname = \"u\"\ntitle = \"u\"\nfields = [\"fee_level\"]\n";
        RuleSet::from_sources(&[
            (
                PathBuf::from("rules/test.toml"),
                pack("", "kind", "promised_workdays", "extra_workdays", "due"),
            ),
            (PathBuf::from("rules/u.toml"), other.to_string()),
        ])
        .expect("declared in the other pack");
    }

    /// `values` declares what a field may hold: `check` refuses a list that is empty or not
    /// of scalars, and a `when` (or a variant's) naming a value outside it, which could
    /// never match (a misspelt `"promissed"` in the pack).
    #[test]
    fn values_are_lists_of_scalars_and_every_when_names_one_of_them() {
        let rule = |values: &str, when: &str| {
            format!(
                "{HEAD}
[[rule]]
id = \"t.p\"
kind = \"deadline\"
title = \"p\"
basis = \"b\"
start = \"approval.accepted\"
stop = \"approval.completed\"
when = {when}
values = {values}
limit = {{ workdays = 20 }}

[[rule.variant]]
when = {{ kind = \"promised\", joint = \"yes\" }}
limit = {{ workdays = 45 }}
"
            )
        };
        let ok = load(&rule(
            r#"{ kind = ["immediate", "promised"], joint = [true, false] }"#,
            r#"{ kind = "promised" }"#,
        ))
        .expect_err("the variant's joint");
        let text: Vec<String> = ok.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "rules/test.toml: rule `t.p`: field `variant[0].when.joint`: \"yes\" is none of the \
                 values `values.joint` declares (true, false): it can never match"
            ]
        );
        let set = load(&rule(
            r#"{ kind = ["immediate", "promised"], joint = ["yes", "no"] }"#,
            r#"{ kind = "promised" }"#,
        ))
        .expect("valid");
        assert_eq!(
            set.rules[0].values,
            [
                ("joint".to_string(), vec![json!("yes"), json!("no")]),
                (
                    "kind".to_string(),
                    vec![json!("immediate"), json!("promised")]
                ),
            ]
        );
        for (values, when, field, message) in [
            (
                "{ kind = [] }",
                r#"{ kind = "promised" }"#,
                "values.kind",
                "non-empty list",
            ),
            (
                "{ kind = \"promised\" }",
                "{}",
                "values.kind",
                "non-empty list",
            ),
            (
                "{ kind = [{ a = 1 }] }",
                "{}",
                "values.kind",
                "non-empty list",
            ),
            (
                r#"{ kind = ["immediate", "promised"], joint = ["yes"] }"#,
                r#"{ kind = "promissed" }"#,
                "when.kind",
                "\"promissed\" is none of the values `values.kind` declares (\"immediate\", \"promised\")",
            ),
        ] {
            let errs = load(&rule(values, when)).expect_err(values);
            assert!(
                errs.iter()
                    .any(|p| p.field.as_deref() == Some(field) && p.message.contains(message)),
                "{values} {when}: {errs:?}"
            );
        }
    }

    /// CEL's standard macros bind their own variables: `check` accepts those inside the
    /// macro and still refuses them outside it; it refuses functions CEL does not know and
    /// fields `event` and `case` do not have; and a condition records which of `event`,
    /// `data` and `case` it reads (the engine builds only those).
    #[test]
    fn cel_names_are_checked_and_reads_are_recorded() {
        let check = |condition: &str| {
            format!(
                "{HEAD}fields = [\"items\", \"n\"]
[[rule]]
id = \"t.x\"
kind = \"check\"
title = \"x\"
basis = \"b\"
on = \"safety.accident_discovered\"
condition = '{condition}'
"
            )
        };
        let reads = |condition: &str| -> Reads {
            let set = load(&check(condition)).unwrap_or_else(|e| panic!("{condition}: {e:?}"));
            let RuleKind::Check(c) = &set.rules[0].kind else {
                panic!("check")
            };
            c.condition.reads
        };
        let r = |event, data, case| Reads { event, data, case };
        assert_eq!(
            reads(r#"data.items.exists(i, i == "b")"#),
            r(false, true, false)
        );
        assert_eq!(
            reads(r#"case.types.all(t, t != "safety.accident_reported") && event.type != """#),
            r(true, false, true)
        );
        assert_eq!(
            reads(r#"[1, 2].map(x, x * 2).filter(y, y > 2).size() == 1 && data.n > 0"#),
            r(false, true, false)
        );
        assert_eq!(
            reads(r#"data.items.exists(data, data == "b")"#),
            r(false, true, false),
            "a macro's variable may shadow `data` inside it; the range still reads it"
        );
        assert_eq!(reads("true"), r(false, false, false));
        assert_eq!(
            reads("data.items.exists(event, event.foo == 1)"),
            r(false, true, false),
            "a macro's `event` is its own: any field"
        );
        assert_eq!(
            reads("data.items.exists(data, data.foo == 1)"),
            r(false, true, false),
            "a macro's `data` is its own: any field"
        );
        // Functions of the standard library, timestamps and durations, type names.
        assert_eq!(
            reads(concat!(
                r#"size(data.items) > 0 && data.by.startsWith("in") && type(data.n) == int && "#,
                r#"timestamp(event.time) - timestamp("2026-06-01T10:00:00+08:00") "#,
                r#"< duration("1h") && int(string(1)) == 1"#
            )),
            r(true, true, false)
        );
        for (condition, message) in [
            (
                r#"data.items.exists(i, i == j)"#,
                "unknown variable `j` in CEL",
            ),
            (
                r#"data.items.exists(i, i == "b") && i == "b""#,
                "unknown variable `i` in CEL",
            ),
            (
                r#"[1].all(x, x > 0) || x > 0"#,
                "unknown variable `x` in CEL",
            ),
            // Known only when the rule runs, before: a rule that never applied.
            (
                r#"sizee(data.items) == 1"#,
                "unknown function `sizee` in CEL",
            ),
            (
                r#"data.by.startswith("in")"#,
                "unknown function `startswith` in CEL",
            ),
            (
                r#"data.by.matches("^in")"#,
                "unknown function `matches` in CEL",
            ),
            // `event` and `case` have fixed fields: a misspelt one is known as well.
            (r#"event.tyep == "x""#, "`event` has no field `tyep` in CEL"),
            ("has(case.type)", "`case` has no field `type` in CEL"),
            // So are the data's, against the catalogue and the packs' `fields`.
            (
                r#"has(data.deparment)"#,
                "data field `deparment` is not in the catalogue (SPEC §1) nor in a pack's \
                 `fields` (did you mean `department`?)",
            ),
            (
                r#"size(case.data.itmes) > 0"#,
                "data field `itmes` is not in the catalogue (SPEC §1) nor in a pack's \
                 `fields` (did you mean `items`?)",
            ),
            (
                r#"data.fee > 0"#,
                "data field `fee` is not in the catalogue",
            ),
            (
                r#"event.data.fee > 0"#,
                "data field `fee` is not in the catalogue",
            ),
        ] {
            let errs = load(&check(condition)).expect_err(condition);
            let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
            assert_eq!(text.len(), 1, "{condition}: {text:?}");
            assert!(text[0].contains(message), "{condition}: {text:?}");
        }
    }

    #[test]
    fn duplicate_ids_and_unknown_cel_variables_are_reported() {
        let rule = "
[[rule]]
id = \"t.x\"
kind = \"check\"
title = \"x\"
basis = \"b\"
on = \"approval.fee_charged\"
condition = \"dat.amount_yuan > 0\"
";
        let errs = load(&format!("{HEAD}{rule}{rule}")).expect_err("bad");
        let joined: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        assert!(joined.iter().any(|l| l.contains("unknown variable `dat`")));
        let dup =
            load(&format!("{HEAD}{}{}", rule, rule).replace("dat.", "data.")).expect_err("dup");
        assert!(
            dup[0].to_string().contains("duplicate rule id"),
            "{:?}",
            dup
        );
    }

    #[test]
    fn matcher_compares_numbers_by_value() {
        let m = Matcher(vec![("n".into(), Value::from(15))]);
        assert!(m.matches(|_, want| json_eq(&Value::from(15.0), want)));
        assert!(!m.matches(|_, want| json_eq(&Value::from("15"), want)));
        assert!(!m.matches(|_, _| false));
    }
}
