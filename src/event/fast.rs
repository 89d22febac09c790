//! The way through a well-formed message without serde: a scanner for the shape nearly
//! every message has, giving what `serde_json::from_str::<Borrowed>` gives, or `None`
//! for anything else, which then takes serde's way as before.
//!
//! Why: serde_json's generic path took about 7,300 instructions for the daemon
//! benchmark's messages (a visitor call, an `Option` and a field-name match per
//! attribute, a `Value` built through a visitor per data member), the largest part of
//! the consumer's work per message after the engine's own.
//!
//! What it takes: one JSON object whose members are
//! - the CloudEvents attributes `Borrowed` reads, each a string without escapes or null,
//!   each at most once;
//! - `data`: null, or an object of members named by strings without escapes whose values
//!   are strings without escapes, integers from 0 to 10^19 - 1 without a sign, fraction
//!   or exponent, `true`, `false` or `null` (a name given twice keeps its last value, as
//!   [`Data`] does);
//! - any other attribute, with a value of those kinds;
//!
//! with JSON whitespace around the tokens and nothing after the object. Anything else —
//! an escape, a control character in a string, a nested value, a negative or fractional
//! number, a repeated attribute, a syntax error — gives `None`. A test compares the
//! scanner with serde on generated messages, and that every message it takes serde
//! reads the same.

use super::{Borrowed, Data};
use serde_json::Value;

/// The message's attributes, as `serde_json::from_str::<Borrowed>` would read them, when
/// it has the shape described above.
pub(super) fn borrowed(text: &str) -> Option<Borrowed<'_>> {
    let mut s = Scanner { text, at: 0 };
    let mut out = Borrowed::default();
    let mut seen = 0u8;
    s.ws();
    s.object(|s, name| {
        let field = match name {
            "specversion" => 0,
            "id" => 1,
            "source" => 2,
            "type" => 3,
            "subject" => 4,
            "time" => 5,
            "datacontenttype" => 6,
            "data" => 7,
            _ => 8,
        };
        if field < 8 {
            // serde rejects an attribute it reads given twice.
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
        }
        match field {
            7 => out.data = s.data()?,
            8 => {
                s.scalar()?;
            }
            _ => {
                let value = s.string_or_null()?;
                match field {
                    0 => out.specversion = value,
                    1 => out.id = value,
                    2 => out.source = value,
                    3 => out.kind = value,
                    4 => out.subject = value,
                    5 => out.time = value,
                    _ => out.datacontenttype = value,
                }
            }
        }
        Some(())
    })?;
    s.ws();
    (s.at == s.text.len()).then_some(out)
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `w` that may end a string scan: a quote, a backslash or a
/// control character (exact for the lowest flagged byte).
fn stops(w: u64) -> u64 {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & (ONES << 7)
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.eat_if(b).then_some(())
    }

    fn eat_if(&mut self, b: u8) -> bool {
        let here = self.peek() == Some(b);
        if here {
            self.at += 1;
        }
        here
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// A string without escapes or control characters, its quotes taken off.
    ///
    /// Eight bytes at a time, as serde_json scans (`SliceRead::skip_to_escape`): a byte
    /// at a time this was 3,000 of the scanner's 5,400 instructions per message.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        while let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let stop = stops(u64::from_le_bytes(word));
            if stop != 0 {
                // The lowest flag is exact (only bytes after a flagged one can be flagged
                // wrongly), and it is byte `trailing_zeros / 8` in memory order.
                i += stop.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => i += 1,
            }
        }
        self.at = i + 1;
        // Both ends are ASCII quotes, so on character boundaries.
        self.text.get(start..i)
    }

    fn string_or_null(&mut self) -> Option<Option<&'a str>> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            return Some(None);
        }
        self.string().map(Some)
    }

    /// An unsigned integer as serde_json reads it: `0`, or up to 19 digits not starting
    /// with `0` (always within a `u64`); a fraction or an exponent after it gives `None`.
    fn integer(&mut self) -> Option<u64> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = bytes.get(i).copied() {
            if i - start == 19 {
                return None;
            }
            n = n * 10 + u64::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = bytes.get(i) {
            return None;
        }
        self.at = i;
        Some(n)
    }

    /// A value of the kinds taken: string, unsigned integer, `true`, `false`, `null`.
    fn scalar(&mut self) -> Option<Value> {
        Some(match self.peek()? {
            b'"' => Value::String(self.string()?.to_string()),
            b'0'..=b'9' => Value::from(self.integer()?),
            b't' => {
                self.literal("true")?;
                Value::Bool(true)
            }
            b'f' => {
                self.literal("false")?;
                Value::Bool(false)
            }
            b'n' => {
                self.literal("null")?;
                Value::Null
            }
            _ => return None,
        })
    }

    /// An object: `member` reads each member's value (the scanner at it), given its name.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat_if(b'}') {
            return Some(());
        }
        loop {
            self.ws();
            let name = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, name)?;
            self.ws();
            if !self.eat_if(b',') {
                return self.eat(b'}');
            }
        }
    }

    /// `data`: null (none), or an object of scalar members.
    fn data(&mut self) -> Option<Option<Data>> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            return Some(None);
        }
        // As serde's visitor: room for eight members, grown when there are more, put in
        // name order once they are all read (of a name given twice, the last value).
        let mut members = Vec::with_capacity(8);
        self.object(|s, name| {
            members.push((compact_str::CompactString::from(name), s.scalar()?));
            Some(())
        })?;
        Some(Some(Data::from_members(members)))
    }
}
