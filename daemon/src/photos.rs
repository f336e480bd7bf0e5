//! Hazard photos: the type is sniffed from the bytes (JPEG, PNG, WebP; the
//! client's content type is not trusted), metadata that can carry a
//! location (EXIF, XMP, text chunks) is stripped, and the file is stored
//! under the data directory by the SHA-256 of what is kept, written and
//! synced before the report that names it is committed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Largest photo accepted.
pub const MAX_BYTES: usize = 5 * 1024 * 1024;

/// A supported image type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
}

impl Kind {
    /// File extension.
    pub fn ext(self) -> &'static str {
        match self {
            Kind::Jpeg => "jpg",
            Kind::Png => "png",
            Kind::Webp => "webp",
        }
    }

    /// Content type to serve it with.
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Webp => "image/webp",
        }
    }
}

/// What the bytes are, from their magic numbers.
pub fn sniff(b: &[u8]) -> Option<Kind> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Kind::Jpeg)
    } else if b.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(Kind::Png)
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some(Kind::Webp)
    } else {
        None
    }
}

/// Why a photo was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not JPEG, PNG or WebP.
    NotAnImage,
    /// Its structure is broken.
    Malformed,
}

/// The photo without metadata that could give away where or by whom it
/// was taken.
pub fn strip(b: &[u8]) -> Result<(Kind, Vec<u8>), Refused> {
    let kind = sniff(b).ok_or(Refused::NotAnImage)?;
    let out = match kind {
        Kind::Jpeg => strip_jpeg(b),
        Kind::Png => strip_png(b),
        Kind::Webp => strip_webp(b),
    }
    .ok_or(Refused::Malformed)?;
    Ok((kind, out))
}

fn strip_jpeg(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0xFF, 0xD8];
    let mut i = 2;
    loop {
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        if marker == 0xDA {
            // Start of scan: the image data follows; keep the rest as is.
            out.extend_from_slice(&b[i..]);
            return Some(out);
        }
        if (0xD0..=0xD9).contains(&marker) || marker == 0x01 {
            out.extend_from_slice(&b[i..i + 2]);
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
        let end = i.checked_add(2)?.checked_add(len)?;
        let segment = b.get(i..end)?;
        // APP1 holds EXIF (with GPS) and XMP; APP13 holds Photoshop/IPTC.
        if marker != 0xE1 && marker != 0xED {
            out.extend_from_slice(segment);
        }
        i = end;
    }
}

fn strip_png(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = b[..8].to_vec();
    let mut i = 8;
    while i < b.len() {
        let len = usize::try_from(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)).ok()?;
        let end = i.checked_add(12)?.checked_add(len)?;
        let chunk = b.get(i..end)?;
        let ty = &chunk[4..8];
        if !matches!(ty, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt") {
            out.extend_from_slice(chunk);
        }
        if ty == b"IEND" {
            return Some(out);
        }
        i = end;
    }
    None
}

fn strip_webp(b: &[u8]) -> Option<Vec<u8>> {
    let mut body = b"WEBP".to_vec();
    let mut i = 12;
    while i < b.len() {
        let len =
            usize::try_from(u32::from_le_bytes(b.get(i + 4..i + 8)?.try_into().ok()?)).ok()?;
        let padded = len + (len & 1);
        let end = i.checked_add(8)?.checked_add(padded)?.min(b.len());
        let mut chunk = b.get(i..end)?.to_vec();
        match &chunk[..4] {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                // Clear the "has EXIF" and "has XMP" flags.
                if let Some(flags) = chunk.get_mut(8) {
                    *flags &= !0x0C;
                }
                body.extend_from_slice(&chunk);
            }
            _ => body.extend_from_slice(&chunk),
        }
        chunk.clear();
        i = end;
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// Where photos live.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("photos")
}

/// Stores the stripped photo by its SHA-256 (atomically, synced); returns
/// the hash and the file.
pub fn store(data_dir: &Path, kind: Kind, bytes: &[u8]) -> std::io::Result<(String, PathBuf)> {
    let hash: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{hash}.{}", kind.ext()));
    if !path.exists() {
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok((format!("{hash}.{}", kind.ext()), path))
}

/// The stored file for a name from the database, if the name is one this
/// module made (hex hash and a known extension): never a path from outside.
pub fn path_of(data_dir: &Path, name: &str) -> Option<(PathBuf, Kind)> {
    let (hash, ext) = name.split_once('.')?;
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let kind = match ext {
        "jpg" => Kind::Jpeg,
        "png" => Kind::Png,
        "webp" => Kind::Webp,
        _ => return None,
    };
    Some((dir(data_dir).join(name), kind))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal JPEG with an EXIF segment holding "GPS".
    pub fn jpeg_with_exif() -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        b.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
        b.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        let exif = b"Exif\0\0MM\0*GPSLatitude 39.9N";
        b.extend_from_slice(&[0xFF, 0xE1]);
        b.extend_from_slice(&u16::try_from(exif.len() + 2).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(exif);
        b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x11, 0x22, 0x33, 0xFF, 0xD9]);
        b
    }

    fn png_chunk(ty: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = u32::try_from(data.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        c.extend_from_slice(ty);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0, 0, 0, 0]);
        c
    }

    #[test]
    fn jpeg_exif_is_removed_and_the_image_kept() {
        let j = jpeg_with_exif();
        let (kind, out) = strip(&j).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(kind, Kind::Jpeg);
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(out.windows(4).any(|w| w == b"JFIF"));
        assert!(out.ends_with(&[0x11, 0x22, 0x33, 0xFF, 0xD9]));
    }

    #[test]
    fn png_text_and_exif_chunks_are_removed() {
        let mut p = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        p.extend(png_chunk(b"IHDR", &[0; 13]));
        p.extend(png_chunk(b"eXIf", b"GPS here"));
        p.extend(png_chunk(b"tEXt", b"Location\0GPS"));
        p.extend(png_chunk(b"IDAT", b"pixels"));
        p.extend(png_chunk(b"IEND", b""));
        let (_, out) = strip(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(out.windows(6).any(|w| w == b"pixels"));
    }

    #[test]
    fn webp_exif_is_removed_and_flags_cleared() {
        let mut body = b"WEBP".to_vec();
        body.extend_from_slice(b"VP8X");
        body.extend_from_slice(&10u32.to_le_bytes());
        body.extend_from_slice(&[0x0C, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(b"EXIF");
        body.extend_from_slice(&4u32.to_le_bytes());
        body.extend_from_slice(b"GPS!");
        body.extend_from_slice(b"VP8L");
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc\0");
        let mut w = b"RIFF".to_vec();
        w.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_le_bytes());
        w.extend_from_slice(&body);
        let (_, out) = strip(&w).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!out.windows(3).any(|x| x == b"GPS"));
        assert_eq!(out[20], 0, "EXIF/XMP flags cleared");
        assert_eq!(
            u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as usize,
            out.len() - 8
        );
    }

    #[test]
    fn anything_else_is_refused_and_names_are_checked() {
        assert_eq!(strip(b"GIF89a....").err(), Some(Refused::NotAnImage));
        assert_eq!(
            strip(b"<svg onload=alert(1)>").err(),
            Some(Refused::NotAnImage)
        );
        assert_eq!(
            strip(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]).err(),
            Some(Refused::Malformed)
        );
        assert!(path_of(Path::new("/d"), "../../etc/passwd").is_none());
        assert!(path_of(Path::new("/d"), &format!("{}.exe", "a".repeat(64))).is_none());
        assert!(path_of(Path::new("/d"), &format!("{}.jpg", "a".repeat(64))).is_some());
    }

    fn png_sample() -> Vec<u8> {
        let mut p = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        p.extend(png_chunk(b"IHDR", &[0; 13]));
        p.extend(png_chunk(b"tEXt", b"GPS\x0039.9N"));
        p.extend(png_chunk(b"IDAT", &[1, 2, 3]));
        p.extend(png_chunk(b"IEND", &[]));
        p
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// A damaged or hostile upload is refused or cleaned, never a panic
        /// and never a file that claims another type or grew.
        #[test]
        fn a_damaged_photo_is_refused_or_cleaned_never_a_panic(
            bytes in proptest::prop_oneof![
                crate::testing::mutated(jpeg_with_exif()),
                crate::testing::mutated(png_sample()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            ]
        ) {
            if let Ok((kind, out)) = strip(&bytes) {
                proptest::prop_assert_eq!(sniff(&out), Some(kind));
                proptest::prop_assert!(out.len() <= bytes.len());
            }
        }
    }
}
