//! Kiosks other than the box's own screen: `[kiosk] keys_file`, one
//! `NAME KEY` per line (`#` comments). A client presenting a key in
//! `X-Kiosk-Key` acts as that kiosk: it may check miners in and out, and
//! each record says which kiosk made it.

/// The configured kiosks: (name, key).
#[derive(Clone, Default)]
pub struct KioskKeys(Vec<(String, String)>);

impl std::fmt::Debug for KioskKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// The name recorded for the box's own screen (a client on loopback).
pub const LOCAL: &str = "local";

/// Parses a keys file; every problem names its line.
pub fn parse(text: &str) -> Result<KioskKeys, String> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let mut parts = line.split_whitespace();
        let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {n}: expected `NAME KEY`"));
        };
        if name.len() > 32
            || name == LOCAL
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "line {n}: `{name}` is not a kiosk name (letters, digits, - and _, up to 32; not `{LOCAL}`)"
            ));
        }
        if key.len() < 16 {
            return Err(format!(
                "line {n}: the key of `{name}` is shorter than 16 characters"
            ));
        }
        if keys.iter().any(|(k, v)| k == name || v == key) {
            return Err(format!("line {n}: `{name}` or its key is there twice"));
        }
        keys.push((name.to_owned(), key.to_owned()));
    }
    Ok(KioskKeys(keys))
}

impl KioskKeys {
    /// The kiosk whose key `given` is (compared in constant time).
    pub fn kiosk(&self, given: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, k)| constant_time_eq(k.as_bytes(), given.as_bytes()))
            .map(|(n, _)| n.as_str())
    }
}

/// Equality that takes as long whatever differs.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_checked_and_found() {
        let k =
            parse("# lamp room\nlamp-room 0123456789abcdef0123\n\ngate  fedcba9876543210aaaa\n")
                .unwrap_or_default();
        assert_eq!(k.kiosk("0123456789abcdef0123"), Some("lamp-room"));
        assert_eq!(k.kiosk("fedcba9876543210aaaa"), Some("gate"));
        assert_eq!(k.kiosk("0123456789abcdef012"), None);
        assert!(format!("{k:?}").contains("lamp-room") && !format!("{k:?}").contains("0123"));
        for bad in [
            "x short",
            "local 0123456789abcdef0123",
            "a b c",
            "a 0123456789abcdef\nb 0123456789abcdef",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(
            parse("x 0123456789abcdef\n\nyy")
                .err()
                .unwrap_or_default()
                .starts_with("line 3")
        );
    }
}
