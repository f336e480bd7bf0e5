//! Badge readers that act as keyboards: a burst of key presses ending in
//! Enter is one badge. Read from the Linux input device (evdev) with an
//! exclusive grab, nothing reaches a focused field or a Chinese input
//! method, and nothing typed by hand is taken for a badge: a reader types a
//! whole badge in a few tens of milliseconds, a person does not.
//!
//! Key codes are Linux's (`input-event-codes.h`); only presses (value 1)
//! count.

use std::time::{Duration, Instant};

/// Longest badge taken.
pub const MAX_LEN: usize = 32;

/// The longest pause between two keys of one badge.
pub const GAP: Duration = Duration::from_millis(250);

/// Linux key codes of Enter and keypad Enter.
const ENTER: u16 = 28;
const KP_ENTER: u16 = 96;

/// The character a key types, for the keys a badge is made of.
pub fn char_of(code: u16) -> Option<char> {
    const ROW1: &[u8] = b"1234567890"; // KEY_1 = 2 .. KEY_0 = 11
    const QWERTY: &[u8] = b"QWERTYUIOP"; // 16..25
    const ASDF: &[u8] = b"ASDFGHJKL"; // 30..38
    const ZXCV: &[u8] = b"ZXCVBNM"; // 44..50
    let at = |row: &[u8], first: u16| {
        code.checked_sub(first)
            .and_then(|i| row.get(usize::from(i)))
            .map(|b| char::from(*b))
    };
    match code {
        2..=11 => at(ROW1, 2),
        16..=25 => at(QWERTY, 16),
        30..=38 => at(ASDF, 30),
        44..=50 => at(ZXCV, 44),
        // The keypad: 7 8 9 - 4 5 6 + 1 2 3 0.
        71 => Some('7'),
        72 => Some('8'),
        73 => Some('9'),
        75 => Some('4'),
        76 => Some('5'),
        77 => Some('6'),
        79 => Some('1'),
        80 => Some('2'),
        81 => Some('3'),
        82 => Some('0'),
        _ => None,
    }
}

/// What one key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing yet.
    Nothing,
    /// A badge, complete.
    Badge(String),
    /// Enter after keys too slow or too many to be a reader's: thrown away.
    Refused(&'static str),
}

/// Collects one burst.
#[derive(Debug, Default)]
pub struct Burst {
    text: String,
    last: Option<Instant>,
    broken: Option<&'static str>,
}

impl Burst {
    /// Takes key event `code`/`value` at `at` (monotonic).
    pub fn key(&mut self, code: u16, value: i32, at: Instant) -> Outcome {
        if value != 1 {
            return Outcome::Nothing;
        }
        let slow = self
            .last
            .is_some_and(|l| at.saturating_duration_since(l) > GAP);
        if slow {
            // A pause: whatever came before is not this badge.
            self.text.clear();
            self.broken = None;
        }
        self.last = Some(at);
        if code == ENTER || code == KP_ENTER {
            let text = std::mem::take(&mut self.text);
            let broken = self.broken.take();
            self.last = None;
            return match (broken, text.is_empty()) {
                (Some(why), _) => Outcome::Refused(why),
                (None, true) => Outcome::Nothing,
                (None, false) => Outcome::Badge(text),
            };
        }
        match char_of(code) {
            Some(c) if self.text.len() < MAX_LEN => self.text.push(c),
            Some(_) => self.broken = Some("too long for a badge"),
            // Shift, Tab and the like: not part of a badge, not a reason to
            // refuse one.
            None => {}
        }
        Outcome::Nothing
    }
}

/// Parses a stream of raw `struct input_event` records (as read from
/// `/dev/input/event*`, `record` bytes each — 24 on 64-bit Linux, 16 on
/// 32-bit) into `(type, code, value)`; a trailing partial record is left.
pub fn records(bytes: &[u8], record: usize) -> impl Iterator<Item = (u16, u16, i32)> + '_ {
    bytes.chunks_exact(record).map(move |r| {
        let t = record - 8;
        let ty = u16::from_ne_bytes([r[t], r[t + 1]]);
        let code = u16::from_ne_bytes([r[t + 2], r[t + 3]]);
        let value = i32::from_ne_bytes([r[t + 4], r[t + 5], r[t + 6], r[t + 7]]);
        (ty, code, value)
    })
}

/// `EV_KEY`.
pub const EV_KEY: u16 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as the kernel writes them (64-bit layout): press and release
    /// of each key, with SYN reports between.
    fn recorded(keys: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |ty: u16, code: u16, value: i32| {
            out.extend_from_slice(&[0u8; 16]);
            out.extend_from_slice(&ty.to_ne_bytes());
            out.extend_from_slice(&code.to_ne_bytes());
            out.extend_from_slice(&value.to_ne_bytes());
        };
        for &k in keys {
            push(EV_KEY, k, 1);
            push(0, 0, 0);
            push(EV_KEY, k, 0);
            push(0, 0, 0);
        }
        out
    }

    #[test]
    fn a_recorded_burst_is_one_badge_and_slow_typing_is_none() {
        // "0042" then Enter, from the main row, as a reader types it.
        let bytes = recorded(&[11, 11, 5, 3, ENTER]);
        let t0 = Instant::now();
        let mut b = Burst::default();
        let mut got = Vec::new();
        for (i, (ty, code, value)) in records(&bytes, 24).enumerate() {
            if ty == EV_KEY {
                let at = t0 + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 2);
                if let Outcome::Badge(s) = b.key(code, value, at) {
                    got.push(s);
                }
            }
        }
        assert_eq!(got, ["0042"]);
        // The keypad and letters too.
        let mut b = Burst::default();
        for code in [82, 79, 30, 44] {
            b.key(code, 1, t0);
        }
        assert_eq!(b.key(KP_ENTER, 1, t0), Outcome::Badge("01AZ".into()));
        // A person typing, a key per second: the pause breaks it.
        let mut b = Burst::default();
        for (i, code) in [2u16, 3, 4].into_iter().enumerate() {
            b.key(
                code,
                1,
                t0 + Duration::from_secs(u64::try_from(i).unwrap_or(0)),
            );
        }
        assert_eq!(
            b.key(ENTER, 1, t0 + Duration::from_secs(3)),
            Outcome::Nothing
        );
        // Repeats and releases are not keys; too long is refused.
        let mut b = Burst::default();
        assert_eq!(b.key(2, 2, t0), Outcome::Nothing);
        for _ in 0..40 {
            b.key(2, 1, t0);
        }
        assert!(matches!(b.key(ENTER, 1, t0), Outcome::Refused(_)));
        assert_eq!(b.key(ENTER, 1, t0), Outcome::Nothing, "starts afresh");
    }

    #[test]
    fn the_32_bit_layout_reads_too() {
        let mut r = vec![0u8; 8];
        r.extend_from_slice(&EV_KEY.to_ne_bytes());
        r.extend_from_slice(&28u16.to_ne_bytes());
        r.extend_from_slice(&1i32.to_ne_bytes());
        assert_eq!(records(&r, 16).collect::<Vec<_>>(), [(EV_KEY, 28, 1)]);
    }
}
