//! Hazard photos, as bytes: the type is sniffed (JPEG, PNG, WebP; a
//! client's content type is not trusted) and everything that can carry a
//! location or a name (EXIF, XMP, comments, text chunks, whatever follows
//! the image) is stripped. Storing them is the daemon's.

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

/// JPEG: only what decoding needs is kept — quantisation and Huffman
/// tables, the frame header, restart interval, Adobe's colour transform
/// (APP14), and the scans — and the file ends at the first end-of-image.
/// Every APPn segment but APP14 (EXIF and GPS, XMP, MPF's second images,
/// Photoshop/IPTC, JFIF thumbnails), comments, and whatever follows the end
/// (a motion photo's video, an appended depth map or image) is dropped.
fn strip_jpeg(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0xFF, 0xD8];
    let mut i = 2;
    let mut frame = false;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        if *b.get(i)? != 0xFF {
            return None;
        }
        while b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                return frame.then_some(out);
            }
            0xD0..=0xD7 | 0x01 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
        if len < 2 {
            return None;
        }
        let end = i.checked_add(2)?.checked_add(len)?;
        let segment = b.get(i..end)?;
        let keep = match marker {
            // Frame headers (SOF0-15 but DHT, JPG and DAC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                frame = true;
                true
            }
            // Huffman and arithmetic tables, quantisation tables, restart
            // interval.
            0xC4 | 0xCC | 0xDB | 0xDD => true,
            // Adobe's colour transform: needed for CMYK/YCCK, no metadata.
            0xEE => segment.get(4..9) == Some(b"Adobe"),
            0xDA => {
                // A scan: its header, then entropy-coded data up to the next
                // marker that is neither a stuffed 0xFF00 nor a restart.
                out.extend_from_slice(segment);
                let mut j = end;
                loop {
                    match b.get(j) {
                        None => {
                            // Cut short: close it, as decoders do.
                            out.extend_from_slice(&b[end..]);
                            out.extend_from_slice(&[0xFF, 0xD9]);
                            return frame.then_some(out);
                        }
                        Some(0xFF) if matches!(b.get(j + 1), Some(0x00 | 0xD0..=0xD7)) => j += 2,
                        Some(0xFF) => break,
                        Some(_) => j += 1,
                    }
                }
                out.extend_from_slice(&b[end..j]);
                i = j;
                continue;
            }
            _ => false,
        };
        if keep {
            out.extend_from_slice(segment);
        }
        i = end;
    }
}

/// PNG: only the chunks that make the picture are kept (header, palette,
/// data, transparency and the colour facts); text, EXIF, ICC profiles,
/// times, animation and unknown chunks go, and nothing after `IEND`.
fn strip_png(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = b[..8].to_vec();
    let mut i = 8;
    while i < b.len() {
        let len = usize::try_from(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)).ok()?;
        let end = i.checked_add(12)?.checked_add(len)?;
        let chunk = b.get(i..end)?;
        let ty = &chunk[4..8];
        if matches!(
            ty,
            b"IHDR"
                | b"PLTE"
                | b"IDAT"
                | b"IEND"
                | b"tRNS"
                | b"gAMA"
                | b"cHRM"
                | b"sRGB"
                | b"sBIT"
                | b"bKGD"
                | b"pHYs"
        ) {
            out.extend_from_slice(chunk);
        }
        if ty == b"IEND" {
            return Some(out);
        }
        i = end;
    }
    None
}

/// WebP: the image and animation chunks are kept, EXIF, XMP and ICC
/// profiles dropped (and their flags cleared); nothing beyond the RIFF
/// length the file declares.
fn strip_webp(b: &[u8]) -> Option<Vec<u8>> {
    let declared = usize::try_from(u32::from_le_bytes(b.get(4..8)?.try_into().ok()?)).ok()?;
    let limit = declared.checked_add(8)?.min(b.len());
    let b = &b[..limit];
    let mut body = b"WEBP".to_vec();
    let mut i = 12;
    while i < b.len() {
        let len =
            usize::try_from(u32::from_le_bytes(b.get(i + 4..i + 8)?.try_into().ok()?)).ok()?;
        let padded = len + (len & 1);
        let end = i.checked_add(8)?.checked_add(padded)?.min(b.len());
        let mut chunk = b.get(i..end)?.to_vec();
        match &chunk[..4] {
            b"VP8 " | b"VP8L" | b"ALPH" | b"ANIM" | b"ANMF" => body.extend_from_slice(&chunk),
            b"VP8X" => {
                // Clear the "has ICC", "has EXIF" and "has XMP" flags.
                if let Some(flags) = chunk.get_mut(8) {
                    *flags &= !0x2C;
                }
                body.extend_from_slice(&chunk);
            }
            _ => {}
        }
        i = end;
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(marker: u8, data: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&u16::try_from(data.len() + 2).unwrap_or(0).to_be_bytes());
        s.extend_from_slice(data);
        s
    }

    /// The segments of a tiny JPEG's picture: a quantisation table, a 1×1
    /// frame, a Huffman table, a scan with stuffing and a restart, the end.
    fn picture() -> Vec<u8> {
        let mut b = segment(0xDB, &[0; 65]);
        b.extend(segment(0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
        b.extend(segment(0xC4, &[0; 17]));
        b.extend(segment(0xDA, &[1, 1, 0, 0, 0x3F, 0]));
        b.extend_from_slice(&[0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD0, 0x33, 0xFF, 0xD9]);
        b
    }

    /// A JPEG as phones write them: JFIF, EXIF with GPS, XMP, MPF naming a
    /// second image, a comment, the picture; then a motion photo's video
    /// and a second JPEG with its own GPS.
    fn jpeg_with_exif() -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        b.extend(segment(
            0xE0,
            b"JFIF\0\x01\x01\0\0\x01\0\x01\x02\x02GPSthumb",
        ));
        b.extend(segment(0xE1, b"Exif\0\0MM\0*GPSLatitude 39.9N"));
        b.extend(segment(
            0xE1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPS 39.9N</x:xmpmeta>",
        ));
        b.extend(segment(0xE2, b"MPF\0 second image, GPS inside"));
        b.extend(segment(0xFE, b"shot by badge 0042 at GPS 39.9N"));
        b.extend(segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"));
        b.extend(picture());
        b.extend_from_slice(b"....ftypmp42 MotionPhoto_Data GPS video....");
        b.extend_from_slice(&[0xFF, 0xD8]);
        b.extend(segment(0xE1, b"Exif\0\0MM\0*GPSLatitude 39.9N"));
        b.extend(picture());
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
    fn a_jpeg_keeps_its_picture_and_nothing_else() {
        let j = jpeg_with_exif();
        let (kind, out) = strip(&j).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(kind, Kind::Jpeg);
        for gone in [
            &b"GPS"[..],
            b"Exif",
            b"JFIF",
            b"xmpmeta",
            b"MPF",
            b"0042",
            b"MotionPhoto",
            b"ftyp",
        ] {
            assert!(
                !out.windows(gone.len()).any(|w| w == gone),
                "{}",
                String::from_utf8_lossy(gone)
            );
        }
        let mut want = vec![0xFF, 0xD8];
        want.extend(segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"));
        want.extend(picture());
        assert_eq!(
            out, want,
            "the picture, byte for byte, ending at the first end-of-image"
        );
        // A scan cut short is closed; a file without a frame is no picture.
        let cut = &j[..j.len() - 4];
        let mut no_frame = vec![0xFF, 0xD8];
        no_frame.extend(segment(0xDA, &[1, 1, 0, 0, 0x3F, 0]));
        no_frame.extend_from_slice(&[1, 2, 3, 0xFF, 0xD9]);
        assert!(strip(cut).is_ok());
        assert_eq!(strip(&no_frame).err(), Some(Refused::Malformed));
    }

    #[test]
    fn png_text_and_exif_chunks_are_removed() {
        let mut p = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        p.extend(png_chunk(b"IHDR", &[0; 13]));
        p.extend(png_chunk(b"eXIf", b"GPS here"));
        p.extend(png_chunk(b"tEXt", b"Location\0GPS"));
        p.extend(png_chunk(b"iTXt", b"XML:com.adobe.xmp\0GPS"));
        p.extend(png_chunk(b"iCCP", b"profile\0GPS"));
        p.extend(png_chunk(b"gpSx", b"GPS private"));
        p.extend(png_chunk(b"IDAT", b"pixels"));
        p.extend(png_chunk(b"IEND", b""));
        p.extend_from_slice(b"GPS trailer after the end");
        let (_, out) = strip(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(out.windows(6).any(|w| w == b"pixels"));
        assert!(out.ends_with(&png_chunk(b"IEND", b"")));
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
        // Beyond the declared length: a trailer of another program's.
        w.extend_from_slice(b"XMP \x04\0\0\0GPS!");
        let (_, out) = strip(&w).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!out.windows(3).any(|x| x == b"GPS"));
        assert_eq!(out[20], 0, "EXIF/XMP flags cleared");
        assert_eq!(
            u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as usize,
            out.len() - 8
        );
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(strip(b"GIF89a....").err(), Some(Refused::NotAnImage));
        assert_eq!(
            strip(b"<svg onload=alert(1)>").err(),
            Some(Refused::NotAnImage)
        );
        assert_eq!(
            strip(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]).err(),
            Some(Refused::Malformed)
        );
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
                // At most an end-of-image added to a scan cut short.
                proptest::prop_assert!(out.len() <= bytes.len() + 2);
            }
        }
    }
}
