//! For property tests here and in the daemon: inputs from outside (a
//! config file, a roster CSV, a photo, a county command) made hostile by
//! mutating a valid one, the way a fuzzer would. Built only for tests
//! (the `testing` feature).

use proptest::prelude::*;

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Edit {
    /// Drop `len` bytes at a position (as a fraction of the length).
    Delete(f64, usize),
    /// Insert bytes.
    Insert(f64, Vec<u8>),
    /// Flip bits of one byte.
    Flip(f64, u8),
    /// Copy a slice to another place (repeated keys, sections, segments).
    Duplicate(f64, usize, f64),
    /// Cut the rest off (a half-written file, a half-sent frame).
    Truncate(f64),
}

fn at(len: usize, f: f64) -> usize {
    // `f` is in 0..1: a position inside (or at the end of) the input.
    ((len as f64) * f) as usize % (len + 1)
}

fn apply(mut b: Vec<u8>, edit: &Edit) -> Vec<u8> {
    match edit {
        Edit::Delete(f, n) => {
            let i = at(b.len(), *f);
            let end = (i + n).min(b.len());
            b.drain(i..end);
        }
        Edit::Insert(f, bytes) => {
            let i = at(b.len(), *f);
            b.splice(i..i, bytes.iter().copied());
        }
        Edit::Flip(f, mask) => {
            if !b.is_empty() {
                let i = at(b.len() - 1, *f);
                b[i] ^= mask;
            }
        }
        Edit::Duplicate(f, n, to) => {
            let i = at(b.len(), *f);
            let piece: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
            let j = at(b.len(), *to);
            b.splice(j..j, piece);
        }
        Edit::Truncate(f) => {
            let i = at(b.len(), *f);
            b.truncate(i);
        }
    }
    b
}

/// Bytes that often mean something to a parser.
fn interesting() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..12),
        proptest::sample::select(vec![
            b"\n".to_vec(),
            b"\r\n".to_vec(),
            b"\"".to_vec(),
            b",".to_vec(),
            b"=".to_vec(),
            b"[".to_vec(),
            b"]]".to_vec(),
            b"\0".to_vec(),
            b"\xff\xd8".to_vec(),
            b"\xff\xe1\xff\xff".to_vec(),
            "矿".as_bytes().to_vec(),
            b"\xe7\x9f".to_vec(), // half a character
            b"{}".to_vec(),
            b"null".to_vec(),
            b"-1".to_vec(),
            b"99999999999999999999".to_vec(),
            b"1e309".to_vec(),
            b"'; DROP TABLE checkins; --".to_vec(),
            b"<script>alert(1)</script>".to_vec(),
            b"../../etc/passwd".to_vec(),
        ]),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0.0..1.0f64, 1usize..64).prop_map(|(f, n)| Edit::Delete(f, n)),
        (0.0..1.0f64, interesting()).prop_map(|(f, b)| Edit::Insert(f, b)),
        (0.0..1.0f64, 1u8..=255).prop_map(|(f, m)| Edit::Flip(f, m)),
        (0.0..1.0f64, 1usize..200, 0.0..1.0f64).prop_map(|(f, n, t)| Edit::Duplicate(f, n, t)),
        (0.0..1.0f64).prop_map(Edit::Truncate),
    ]
}

/// `base` with one to eight random edits.
pub fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(edit(), 1..8)
        .prop_map(move |edits| edits.iter().fold(base.clone(), apply))
}
