//! CloudEvents 1.0 in structured JSON mode (SPEC §1), parsed into a typed [`Event`].
//!
//! Parsing is strict about what the engine relies on and lenient about the rest: the
//! required attributes (`specversion`, `id`, `source`, `type`, `subject`, `time`) must be
//! present and well-formed, `data` must be an object when present, and any other attribute
//! (CloudEvents extensions) is accepted and ignored. Every rejection names the attribute.

use chrono::{DateTime, FixedOffset};
use compact_str::CompactString;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

mod fast;

/// One case event, valid by construction: a value of this type has every attribute the
/// engine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique per event; a repeated id within a case is a duplicate and changes nothing.
    pub id: CompactString,
    /// Which system produced the event (kept for the record, not interpreted).
    pub source: CompactString,
    /// The catalogue type, e.g. `approval.accepted`.
    pub kind: CompactString,
    /// Event time, with the offset the producer gave. All deadline arithmetic uses it.
    pub time: DateTime<FixedOffset>,
    /// The case id: an approval case, a market, a hazard, an accident, a department.
    pub subject: CompactString,
    /// The event's data object; fields beyond the catalogue's are kept for rule conditions.
    pub data: Data,
}

/// An event's `data` object: its members sorted by name, each name once (the last one
/// given wins, as when serde_json reads an object into a map).
///
/// One allocation holds the members (parsed: room for eight, 448 bytes, more when there
/// are more), their names inline (up to 24 bytes, which every catalogue field name fits),
/// where a `serde_json::Map` takes a B-tree node of eleven slots (about 640 bytes) and an
/// allocation per name. Every message the daemon reads is parsed into one and dropped
/// after it is applied, on the consumer loop's thread.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Data(Vec<(CompactString, Value)>);

impl Data {
    pub fn new() -> Data {
        Data(Vec::new())
    }

    /// The members given, sorted by name; of a name given twice, the last value.
    fn from_members(mut members: Vec<(CompactString, Value)>) -> Data {
        if !members.is_sorted_by(|a, b| a.0 < b.0) {
            members.sort_by(|a, b| a.0.cmp(&b.0)); // stable: equal names keep their order
            members.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                same
            });
        }
        Data(members)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets a member, returning the value it replaced.
    pub fn insert(&mut self, name: &str, value: Value) -> Option<Value> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (CompactString::from(name), value));
                None
            }
        }
    }

    /// The members in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The object as a `serde_json` map.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl From<Map<String, Value>> for Data {
    fn from(map: Map<String, Value>) -> Data {
        // Sorted by `from_members`, not assumed: a map keeps insertion order instead once
        // any crate in the build turns on serde_json's `preserve_order`.
        Data::from_members(
            map.into_iter()
                .map(|(k, v)| (CompactString::from(k), v))
                .collect(),
        )
    }
}

impl<'a> FromIterator<(&'a str, Value)> for Data {
    fn from_iter<I: IntoIterator<Item = (&'a str, Value)>>(iter: I) -> Data {
        Data::from_members(
            iter.into_iter()
                .map(|(k, v)| (CompactString::from(k), v))
                .collect(),
        )
    }
}

/// `data["name"]`: the member's value, or null when there is none (as indexing a
/// `serde_json::Value` gives).
impl std::ops::Index<&str> for Data {
    type Output = Value;
    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Data, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Data;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
                // serde_json gives no size: room for eight members, grown only when there
                // are more (an event lives until it is applied; no shrinking copy).
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(name) = map.next_key_seed(Name)? {
                    members.push((name, map.next_value::<Value>()?));
                }
                Ok(Data::from_members(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// A member name read straight into its inline form, without a `String` first.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = CompactString;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<CompactString, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = CompactString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CompactString, E> {
                Ok(CompactString::from(s))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<CompactString, E> {
                Ok(CompactString::from(s))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// Why a message is not an event. Each variant names the attribute at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("the message is not a JSON object")]
    NotObject,
    /// The message names an attribute twice (serde's message names which and where).
    #[error("an attribute appears more than once: {0}")]
    Repeated(String),
    #[error("missing required attribute `{0}`")]
    Missing(&'static str),
    #[error("attribute `{attribute}` must be a non-empty string")]
    NotString { attribute: &'static str },
    #[error("attribute `specversion` is {0:?}, only \"1.0\" is supported")]
    SpecVersion(String),
    #[error("attribute `time` is {value:?}, not an RFC 3339 time with an offset: {reason}")]
    BadTime { value: String, reason: String },
    #[error(
        "attribute `time` is {value}, {ahead_s} s ahead of this daemon's clock \
         ({now}); events from the future are refused beyond `kafka.future_tolerance_ms` \
         ({tolerance_ms} ms): the producer's clock or time zone is wrong, or this host's clock"
    )]
    InFuture {
        value: String,
        now: String,
        ahead_s: i64,
        tolerance_ms: u64,
    },
    #[error(
        "attribute `subject` is {0:?}, which an address cannot hold as one path segment \
         (a browser or proxy takes it for the directory itself or its parent): the case \
         could be neither opened on the board nor asked of the API"
    )]
    DotSubject(String),
    #[error("attribute `data` must be a JSON object, found {0}")]
    DataNotObject(&'static str),
    #[error("attribute `datacontenttype` is {0:?}; structured mode needs JSON data")]
    ContentType(String),
    /// A Kafka message whose `ce_` headers carry the attributes (the binary content mode
    /// of the CloudEvents Kafka binding): its body is the data alone.
    #[error(
        "a CloudEvent in binary content mode (attributes in `ce_` headers, the data as the \
         body); redlight reads structured mode, the whole event as the JSON body (SPEC §1): \
         produce it so (with the CloudEvents SDKs, their structured mode)"
    )]
    BinaryMode,
}

impl EventError {
    /// A short, stable label for metrics and dead-letter headers.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EventError::NotJson(_) => "not_json",
            EventError::NotObject => "not_object",
            EventError::Repeated(_) => "repeated_attribute",
            EventError::Missing(_) => "missing_attribute",
            EventError::NotString { .. } => "bad_attribute",
            EventError::SpecVersion(_) => "bad_specversion",
            EventError::BadTime { .. } => "bad_time",
            EventError::InFuture { .. } => "time_in_future",
            EventError::DotSubject(_) => "bad_subject",
            EventError::DataNotObject(_) => "data_not_object",
            EventError::ContentType(_) => "bad_datacontenttype",
            EventError::BinaryMode => "binary_content_mode",
        }
    }
}

/// The wire shape before validation: every attribute optional and untyped, so a wrong type
/// becomes our own error naming the attribute rather than a serde message.
#[derive(Deserialize)]
struct Wire {
    specversion: Option<Value>,
    id: Option<Value>,
    source: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    subject: Option<Value>,
    time: Option<Value>,
    datacontenttype: Option<Value>,
    data: Option<Value>,
}

/// The wire shape of a well-formed event, borrowing its attributes from the input: what
/// nearly every message is, parsed without building a `Value` per attribute. Anything it
/// does not take (an attribute that is not a string or has escapes, a rejection of any
/// kind) goes to the general path, which gives the same result and names the attribute.
#[derive(Deserialize, Default, Debug, PartialEq)]
struct Borrowed<'a> {
    #[serde(default)]
    specversion: Option<&'a str>,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default)]
    source: Option<&'a str>,
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(default)]
    subject: Option<&'a str>,
    #[serde(default)]
    time: Option<&'a str>,
    #[serde(default)]
    datacontenttype: Option<&'a str>,
    #[serde(default)]
    data: Option<Data>,
}

fn json_content_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

impl Borrowed<'_> {
    /// The event, when this message is one; `None` sends it to the general path.
    fn event(self) -> Option<Event> {
        let present = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(CompactString::from);
        if self.specversion != Some("1.0") {
            return None;
        }
        let time = DateTime::parse_from_rfc3339(self.time?).ok()?;
        if self
            .datacontenttype
            .is_some_and(|ct| !json_content_type(ct))
        {
            return None;
        }
        Some(Event {
            id: present(self.id)?,
            source: present(self.source)?,
            kind: present(self.kind)?,
            time,
            subject: present(self.subject).filter(|s| !dot_segment(s))?,
            data: self.data.unwrap_or_default(),
        })
    }
}

/// `.` or `..`: a case id that a URL cannot carry as a path segment (WHATWG's URL parser,
/// as browsers, curl and proxies resolve it, takes it, or its `%2E` spelling, for the
/// directory itself or its parent), so `/case/{id}` and `/api/v1/cases/{id}` could never
/// show that case. No case number is one; such a subject is refused as bad input.
fn dot_segment(subject: &str) -> bool {
    subject == "." || subject == ".."
}

fn required(value: Option<Value>, attribute: &'static str) -> Result<String, EventError> {
    match value {
        None | Some(Value::Null) => Err(EventError::Missing(attribute)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(EventError::NotString { attribute }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Event {
    /// Parses one message (a Kafka value or a JSON Lines line).
    pub fn parse(bytes: &[u8]) -> Result<Event, EventError> {
        // A UTF-8 byte order mark before the JSON is ignored, as RFC 8259 §8.1 lets a parser
        // do: Windows tools write one at the start of a file ("UTF-8 with BOM"), and its
        // first line was refused as not JSON at column 1, though it looks whole.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        // UTF-8 checked once for the whole message, then parsed as text: parsed from bytes,
        // serde_json checks each string on its own, a call per string (an event has about
        // thirty-five, names included), which was a tenth of the daemon loop's parsing.
        // `simdutf8` rather than `std::str::from_utf8`: the standard check runs a byte at a
        // time through non-ASCII text, and an event's data is mostly Chinese (about 900
        // against 100 instructions for the benchmark's messages). Only the answer is used:
        // an invalid message goes the general way, which names the position.
        //
        // The scanner of `fast` reads nearly every message; what it does not take, serde
        // reads as before.
        if let Ok(text) = simdutf8::basic::from_utf8(bytes)
            && let Some(ev) = fast::borrowed(text)
                .or_else(|| serde_json::from_str::<Borrowed>(text).ok())
                .and_then(Borrowed::event)
        {
            return Ok(ev);
        }
        Self::parse_general(bytes)
    }

    /// [`Event::parse`] for any message: every attribute taken as a JSON value, so that a
    /// wrong one is named in the rejection.
    fn parse_general(bytes: &[u8]) -> Result<Event, EventError> {
        let wire: Wire = match serde_json::from_slice(bytes) {
            Ok(w) => w,
            // `Wire` takes any value for every attribute, so an object fails it only by
            // naming one twice.
            Err(e) if e.is_data() => {
                let object = serde_json::from_slice::<serde_json::Map<String, Value>>(bytes);
                return Err(if object.is_ok() {
                    EventError::Repeated(e.to_string())
                } else {
                    EventError::NotObject
                });
            }
            Err(e) => return Err(EventError::NotJson(e.to_string())),
        };
        let specversion = required(wire.specversion, "specversion")?;
        if specversion != "1.0" {
            return Err(EventError::SpecVersion(specversion));
        }
        let id = required(wire.id, "id")?;
        let source = required(wire.source, "source")?;
        let kind = required(wire.kind, "type")?;
        let subject = required(wire.subject, "subject")?;
        if dot_segment(&subject) {
            return Err(EventError::DotSubject(subject));
        }
        let time_text = required(wire.time, "time")?;
        let time = DateTime::parse_from_rfc3339(&time_text).map_err(|e| EventError::BadTime {
            value: time_text.clone(),
            reason: e.to_string(),
        })?;
        match wire.datacontenttype {
            None | Some(Value::Null) => {}
            Some(Value::String(ct)) => {
                if !json_content_type(&ct) {
                    return Err(EventError::ContentType(ct));
                }
            }
            Some(_) => {
                return Err(EventError::NotString {
                    attribute: "datacontenttype",
                });
            }
        }
        let data = match wire.data {
            None | Some(Value::Null) => Data::new(),
            Some(Value::Object(m)) => Data::from(m),
            Some(other) => return Err(EventError::DataNotObject(json_kind(&other))),
        };
        Ok(Event {
            id: id.into(),
            source: source.into(),
            kind: kind.into(),
            time,
            subject: subject.into(),
            data,
        })
    }

    /// Event time in milliseconds since the Unix epoch, the engine's unit of time.
    pub fn time_ms(&self) -> i64 {
        self.time.timestamp_millis()
    }

    /// Refuses an event whose time is more than `tolerance_ms` after `now_ms` (the daemon's
    /// wall clock): nothing happens in the future, so such a time is a producer's clock or
    /// time zone gone wrong, and applied it would move the engine's clock ahead with it.
    pub fn not_ahead_of(&self, now_ms: i64, tolerance_ms: u64) -> Result<(), EventError> {
        let t = self.time_ms();
        let limit = now_ms.saturating_add(i64::try_from(tolerance_ms).unwrap_or(i64::MAX));
        if t <= limit {
            return Ok(());
        }
        let now = DateTime::from_timestamp_millis(now_ms).map_or_else(
            || now_ms.to_string(),
            |n| {
                n.with_timezone(self.time.offset())
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            },
        );
        Err(EventError::InFuture {
            value: self.time.to_rfc3339(),
            now,
            ahead_s: t.saturating_sub(now_ms) / 1000,
            tolerance_ms,
        })
    }

    /// The type as logs and reports name it: its first 200 characters at most (a type no
    /// rule pack names may be anything a producer sent).
    pub fn kind_shown(&self) -> &str {
        let kind = self.kind.as_str();
        kind.char_indices()
            .nth(200)
            .map_or(kind, |(i, _)| &kind[..i])
    }

    /// A string field of `data`, if present and a string.
    pub fn data_str(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }
}

/// The event types of SPEC §1. Unknown types are counted and otherwise ignored; rule packs
/// may declare further types of their own.
pub const CATALOGUE: &[&str] = &[
    "approval.submitted",
    "approval.material_incomplete",
    "approval.accepted",
    "approval.reviewed",
    "approval.suspended",
    "approval.resumed",
    "approval.extended",
    "approval.decided",
    "approval.certificate_issued",
    "approval.completed",
    "approval.withdrawn",
    "approval.fee_charged",
    "market.registration_accepted",
    "market.registration_decided",
    "market.change_decided",
    "market.change_registered",
    "market.report_submitted",
    "market.reconsideration_requested",
    "market.reconsideration_decided",
    "safety.hazard_reported",
    "safety.hazard_investigation_started",
    "safety.rectification_ordered",
    "safety.hazard_rectified",
    "safety.accident_occurred",
    "safety.accident_reported",
    "safety.accident_relayed",
    "safety.accident_discovered",
    "safety.meeting_held",
];

/// The fields of `data` SPEC §1's catalogue names, of every type. A rule pack that names
/// another field (in a `when`, a `values`, a limit or extension taken from the event, a
/// period label, a CEL condition's `data.x`) must declare it in its `[pack] fields`: the
/// producers' own fields are welcome, a misspelt one would match nothing, for ever.
pub const DATA_FIELDS: &[&str] = &[
    "amount_yuan",
    "approved_by",
    "by",
    "change",
    "deaths",
    "department",
    "due",
    "extra_workdays",
    "fee_code",
    "grade",
    "handler",
    "injuries",
    "item",
    "joint",
    "kind",
    "location",
    "major",
    "market",
    "missing",
    "outcome",
    "period",
    "procedure",
    "promised_workdays",
    "reason",
    "reporter",
    "to",
    "unit",
];

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"specversion":"1.0","id":"evt-000123","source":"/xinzhou/approval-hall",
 "type":"approval.accepted","time":"2026-09-28T10:00:00+08:00","subject":"XZ-2026-0001",
 "datacontenttype":"application/json",
 "data":{"department":"市住建局","item":"建筑工程施工许可","handler":"张三","kind":"promised","promised_workdays":15}}"#;

    #[test]
    fn parses_the_spec_example() {
        let e = Event::parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(e.id, "evt-000123");
        assert_eq!(e.kind, "approval.accepted");
        assert_eq!(e.subject, "XZ-2026-0001");
        assert_eq!(e.time.to_rfc3339(), "2026-09-28T10:00:00+08:00");
        assert_eq!(e.data_str("handler"), Some("张三"));
        assert_eq!(e.data["promised_workdays"], 15);
    }

    /// A file saved as "UTF-8 with BOM" (or a producer that writes one) starts its first
    /// line with U+FEFF: the event is read as without it. Anywhere else it is not JSON.
    #[test]
    fn a_byte_order_mark_before_the_json_is_ignored() {
        let bom = [b"\xEF\xBB\xBF".as_slice(), GOOD.as_bytes()].concat();
        assert_eq!(
            Event::parse(&bom).expect("valid with a BOM"),
            Event::parse(GOOD.as_bytes()).expect("valid")
        );
        let inside = GOOD.replacen('{', "{\u{feff}", 1);
        assert!(matches!(
            Event::parse(inside.as_bytes()),
            Err(EventError::NotJson(_))
        ));
        let twice = [b"\xEF\xBB\xBF\xEF\xBB\xBF".as_slice(), GOOD.as_bytes()].concat();
        assert!(Event::parse(&twice).is_err());
    }

    fn with(field: &str, value: Option<&str>) -> String {
        let mut v: Value = serde_json::from_str(GOOD).expect("fixture");
        let obj = v.as_object_mut().expect("object");
        match value {
            None => {
                obj.remove(field);
            }
            Some(raw) => {
                obj.insert(field.into(), serde_json::from_str(raw).expect("raw json"));
            }
        }
        v.to_string()
    }

    #[test]
    fn a_time_ahead_of_the_clock_is_refused_beyond_the_tolerance() {
        // Local time labelled UTC, the usual mistake: 10:00 in Shanghai sent as 10:00Z,
        // eight hours ahead of a daemon whose clock reads 10:00 +08:00.
        let now = DateTime::parse_from_rfc3339("2026-09-28T10:00:00+08:00")
            .expect("now")
            .timestamp_millis();
        let utc = with("time", Some(r#""2026-09-28T10:00:00Z""#));
        let e = Event::parse(utc.as_bytes()).expect("valid");
        let err = e.not_ahead_of(now, 300_000).expect_err("eight hours ahead");
        assert_eq!(err.reason_code(), "time_in_future");
        let text = err.to_string();
        for part in [
            "`time` is 2026-09-28T10:00:00+00:00",
            "28800 s ahead",
            "(2026-09-28T02:00:00Z)",
            "kafka.future_tolerance_ms",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        // Within the tolerance, at it, and in the past: accepted.
        let good = Event::parse(GOOD.as_bytes()).expect("valid");
        let t = good.time_ms();
        assert_eq!(good.not_ahead_of(t - 300_000, 300_000), Ok(()));
        assert_eq!(good.not_ahead_of(t - 1, 300_000), Ok(()));
        assert_eq!(good.not_ahead_of(t + 86_400_000, 0), Ok(()));
        assert!(good.not_ahead_of(t - 300_001, 300_000).is_err());
        assert!(good.not_ahead_of(t - 1, 0).is_err());
        // A tolerance past the range of instants accepts anything.
        assert_eq!(good.not_ahead_of(0, u64::MAX), Ok(()));
        assert!(good.not_ahead_of(i64::MIN, 0).is_err());
    }

    #[test]
    fn the_borrowing_and_the_general_parse_agree() {
        let fast = Event::parse(GOOD.as_bytes()).expect("valid");
        let general = Event::parse_general(GOOD.as_bytes()).expect("valid");
        assert_eq!(fast, general);
        // An escaped attribute cannot be borrowed: the general path takes it.
        let escaped = GOOD.replace("evt-000123", "evt-\\u0030");
        assert_eq!(Event::parse(escaped.as_bytes()).expect("valid").id, "evt-0");
        let null_data = with("data", Some("null"));
        assert!(
            Event::parse(null_data.as_bytes())
                .expect("valid")
                .data
                .is_empty()
        );
    }

    #[test]
    fn every_rejection_names_the_attribute() {
        for attr in ["specversion", "id", "source", "type", "subject", "time"] {
            let err = Event::parse(with(attr, None).as_bytes()).expect_err(attr);
            assert_eq!(err, EventError::Missing(attr));
            assert!(err.to_string().contains(attr));
        }
        let err = Event::parse(with("subject", Some("42")).as_bytes()).expect_err("number");
        assert_eq!(
            err,
            EventError::NotString {
                attribute: "subject"
            }
        );
        let err = Event::parse(with("id", Some("\"\"")).as_bytes()).expect_err("empty");
        assert_eq!(err, EventError::NotString { attribute: "id" });
        // A subject that no address can carry as a path segment, plain or escaped (which
        // takes the general path); one with more dots than two, or other text, is a case id.
        let escaped = GOOD.replace("\"XZ-2026-0001\"", "\"\\u002e.\"");
        assert_ne!(escaped, GOOD);
        for text in [
            with("subject", Some("\".\"")),
            with("subject", Some("\"..\"")),
            escaped,
        ] {
            let err = Event::parse(text.as_bytes()).expect_err(&text);
            assert!(matches!(err, EventError::DotSubject(_)), "{text}: {err}");
            assert!(err.to_string().contains("`subject`"), "{err}");
            assert_eq!(err.reason_code(), "bad_subject");
        }
        for fine in ["\"...\"", "\".a\"", "\"a/..\""] {
            Event::parse(with("subject", Some(fine)).as_bytes()).expect(fine);
        }
    }

    #[test]
    fn rejects_bad_time_bad_data_and_non_json() {
        let err =
            Event::parse(with("time", Some("\"2026-09-28 10:00\"")).as_bytes()).expect_err("time");
        assert!(matches!(err, EventError::BadTime { .. }), "{err}");
        assert!(err.to_string().contains("2026-09-28 10:00"));
        // RFC 3339 requires an offset: a naive local time is ambiguous.
        let err = Event::parse(with("time", Some("\"2026-09-28T10:00:00\"")).as_bytes())
            .expect_err("no offset");
        assert!(matches!(err, EventError::BadTime { .. }));
        let err = Event::parse(with("data", Some("[1,2]")).as_bytes()).expect_err("data");
        assert_eq!(err, EventError::DataNotObject("an array"));
        let err = Event::parse(b"{not json").expect_err("json");
        assert!(matches!(err, EventError::NotJson(_)));
        // Bytes that are not UTF-8, inside a string: not JSON, with where they are.
        let mut bad = GOOD.as_bytes().to_vec();
        let at = GOOD.find("evt-000123").expect("the id") + 4;
        bad[at] = 0xff;
        match Event::parse(&bad).expect_err("not UTF-8") {
            EventError::NotJson(reason) => {
                assert!(reason.contains("invalid unicode"), "{reason}");
                assert!(reason.contains("column"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Event::parse(b"[1]").expect_err("array"),
            EventError::NotObject
        );
        // An object that names an attribute twice is one, and the rejection says which.
        let twice = GOOD.replacen(
            "{\"specversion\"",
            "{\"subject\":\"XZ-2\",\"specversion\"",
            1,
        );
        match Event::parse(twice.as_bytes()).expect_err("twice") {
            err @ EventError::Repeated(_) => {
                assert_eq!(err.reason_code(), "repeated_attribute");
                assert!(
                    err.to_string().starts_with(
                        "an attribute appears more than once: duplicate field `subject`"
                    ),
                    "{err}"
                );
            }
            other => panic!("{other:?}"),
        }
        let err = Event::parse(with("specversion", Some("\"0.3\"")).as_bytes()).expect_err("v");
        assert_eq!(err, EventError::SpecVersion("0.3".into()));
        let err =
            Event::parse(with("datacontenttype", Some("\"text/xml\"")).as_bytes()).expect_err("ct");
        assert_eq!(err, EventError::ContentType("text/xml".into()));
    }

    #[test]
    fn data_may_be_absent_and_extensions_are_ignored() {
        let text = with("data", None);
        let mut v: Value = serde_json::from_str(&text).expect("json");
        v["traceparent"] = Value::from("00-abc");
        let e = Event::parse(v.to_string().as_bytes()).expect("valid");
        assert!(e.data.is_empty());
    }

    /// `data` read into [`Data`] holds what serde_json's map holds for the same object: the
    /// members sorted by name, a repeated name's last value, names with escapes and long
    /// names, nested values as they came; on both parsing paths (a well-formed event, and
    /// one with an attribute that sends it to the general path).
    #[test]
    fn data_holds_what_a_json_object_holds() {
        let objects = [
            r#"{}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"kind":"promised","kind":"immediate","a":null}"#,
            r#"{"x":1,"y":2,"x":3,"y":4,"x":5}"#,
            r#"{"na\u006de":"v","a very long member name, longer than twenty-four bytes":[1,{"z":true}]}"#,
            r#"{"部门":"市住建局","promised_workdays":15,"item":"建筑工程施工许可","z":{"b":1,"a":2}}"#,
        ];
        for object in objects {
            let want: Map<String, Value> = serde_json::from_str(object).expect("object");
            // `e\u0031`: an escaped attribute, which the borrowing parse leaves to the
            // general one.
            for id in ["e1", r"e\u0031"] {
                let text = format!(
                    r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"approval.accepted","subject":"C1","time":"2026-10-12T09:00:00+08:00","traceparent":7,"data":{object}}}"#
                );
                let parsed = Event::parse(text.as_bytes());
                let e = parsed.expect("valid event");
                assert_eq!(e.id, "e1");
                assert_eq!(e.data.to_map(), want, "{text}");
                assert_eq!(e.data.len(), want.len());
                let keys: Vec<&str> = e.data.keys().collect();
                let want_keys: Vec<&str> = want.keys().map(String::as_str).collect();
                assert_eq!(keys, want_keys, "{text}");
                for (k, v) in &want {
                    assert_eq!(e.data.get(k), Some(v));
                    assert_eq!(&e.data[k.as_str()], v);
                }
                assert_eq!(e.data.get("absent"), None);
                assert_eq!(e.data["absent"], Value::Null);
                assert_eq!(
                    serde_json::to_value(&e.data).expect("json"),
                    Value::Object(want.clone())
                );
            }
        }
    }

    #[test]
    fn data_built_by_hand_stays_sorted_with_each_name_once() {
        let mut d = Data::new();
        assert_eq!(d.insert("b", Value::from(1)), None);
        assert_eq!(d.insert("a", Value::from(2)), None);
        assert_eq!(d.insert("b", Value::from(3)), Some(Value::from(1)));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(d["b"], 3);
        let collected: Data = [
            ("y", Value::from(1)),
            ("x", Value::from(2)),
            ("y", Value::from(3)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            collected.iter().collect::<Vec<_>>(),
            [("x", &Value::from(2)), ("y", &Value::from(3))]
        );
    }

    /// The scanner of `fast` takes the usual messages, and reads them as serde does.
    #[test]
    fn the_scanner_takes_usual_messages_as_serde_reads_them() {
        let bench = r#"{"specversion":"1.0","id":"b-7","source":"/bench","type":"approval.accepted","time":"2026-11-02T09:00:00+08:00","subject":"BENCH-00000007","datacontenttype":"application/json","data":{"department":"市场监督管理局","item":"建筑工程施工许可","handler":"张7","kind":"promised","promised_workdays":12}}"#;
        let spaced = "{ \"specversion\" : \"1.0\" ,\n\t\"id\":\"e\", \"source\":\"/s\",\r\n \"type\":\"t\",\"subject\":\"c\",\"time\":\"2026-01-05T09:00:00Z\",\"traceparent\":\"00-ab\",\"n\":null,\"data\":{ \"b\":true,\"a\":0,\"b\":false,\"c\":null } }  ";
        for text in [GOOD, bench, spaced] {
            let fast = fast::borrowed(text).expect("the scanner takes it");
            let serde = serde_json::from_str::<Borrowed>(text).expect("serde reads it");
            assert_eq!(fast, serde, "{text}");
        }
    }

    /// Messages the scanner leaves to serde: what it does not take, it must not take.
    #[test]
    fn the_scanner_leaves_the_unusual_to_serde() {
        for text in [
            r#"{"id":"a\"b"}"#,                       // an escape
            r#"{"id":"a","id":"b"}"#,                 // an attribute twice
            r#"{"data":{"a":1.5}}"#,                  // a fraction
            r#"{"data":{"a":-1}}"#,                   // a sign
            r#"{"data":{"a":1e3}}"#,                  // an exponent
            r#"{"data":{"a":01}}"#,                   // a leading zero
            r#"{"data":{"a":12345678901234567890}}"#, // beyond 19 digits
            r#"{"data":{"a":[1]}}"#,                  // a nested value
            r#"{"data":{"a":{}}}"#,
            r#"{"data":[]}"#,
            r#"{"ext":{"a":1}}"#,
            "{\"id\":\"a\tb\"}", // a control character
            r#"{"id":5}"#,
            r#"{"id":"a"} x"#, // after the object
            r#"{"id":"a",}"#,
            r#"["id"]"#,
            r#"{"id":nul}"#,
        ] {
            assert_eq!(fast::borrowed(text), None, "{text}");
        }
    }

    /// A JSON value: mostly of the kinds the scanner takes, so that whole messages of them
    /// come often, with every kind it must leave to serde among them.
    fn piece() -> impl Strategy<Value = String> {
        let taken = prop_oneof![
            Just(r#""1.0""#.to_string()),
            Just(r#""x""#.to_string()),
            Just(r#""张三，市场监督管理局""#.to_string()),
            Just(r#""2026-11-02T09:00:00+08:00""#.to_string()),
            Just(r#""application/json""#.to_string()),
            Just(r#""text/plain""#.to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("0".to_string()),
            Just("5".to_string()),
            Just("9999999999999999999".to_string()),
            "[a-z 0-9.]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ];
        let left = prop_oneof![
            Just(r#""a\"b""#.to_string()),
            Just(r#""\u00e9""#.to_string()),
            Just("\"a\tb\"".to_string()),
            Just("nul".to_string()),
            Just("05".to_string()),
            Just("00".to_string()),
            Just("-3".to_string()),
            Just("-0".to_string()),
            Just("1.5".to_string()),
            Just("1e2".to_string()),
            Just("10000000000000000000".to_string()),
            Just("18446744073709551616".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just(r#"{"a":1}"#.to_string()),
            "[a-z\"\\\\ 0-9.]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ];
        prop_oneof![12 => taken, 1 => left]
    }

    fn members(
        names: &'static [&'static str],
        value: BoxedStrategy<String>,
    ) -> impl Strategy<Value = String> {
        let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r ")];
        prop::collection::vec((prop::sample::select(names), ws, value), 0..7).prop_map(|ms| {
            let body: Vec<String> = ms
                .into_iter()
                .map(|(n, w, v)| format!("{w}\"{n}\"{w}:{w}{v}{w}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    fn message() -> impl Strategy<Value = String> {
        const DATA: &[&str] = &["a", "b", "handler", "promised_workdays", "张"];
        const TOP: &[&str] = &[
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "data",
            "data",
            "data",
            "ext",
            "traceparent",
        ];
        let data = members(DATA, piece().boxed()).boxed();
        let value = prop_oneof![4 => piece(), 1 => data].boxed();
        (
            members(TOP, value),
            0..6u8,
            any::<prop::sample::Index>(),
            prop::sample::select(
                &['{', '}', '[', ',', ':', '"', '\\', ' ', '0', 'x', '.', '\n'][..],
            ),
        )
            .prop_map(|(text, mutation, at, c)| {
                let cut = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(at.index(text.chars().count().max(1)))
                    .unwrap_or(text.len());
                match mutation {
                    0..=3 => text,
                    4 => text[..cut].to_string(),
                    _ => format!("{}{c}{}", &text[..cut], &text[cut..]),
                }
            })
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Whatever the scanner takes, serde reads the same (the other way round is not
        /// required: what the scanner leaves, serde reads as before).
        #[test]
        fn the_scanner_agrees_with_serde(text in message()) {
            if let Some(fast) = fast::borrowed(&text) {
                let serde = serde_json::from_str::<Borrowed>(&text);
                prop_assert!(serde.is_ok(), "the scanner took what serde refuses: {text}\n{serde:?}");
                prop_assert_eq!(Some(fast), serde.ok(), "{}", text);
            }
        }
    }
}
