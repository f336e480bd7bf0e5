//! Hazard photos: the type is sniffed from the bytes (JPEG, PNG, WebP; the
//! client's content type is not trusted), metadata that can carry a
//! location (EXIF, XMP, text chunks) is stripped, and the file is stored
//! under the data directory by the SHA-256 of what is kept, written and
//! synced before the report that names it is committed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use pithead_core::photo::{Kind, MAX_BYTES, Refused, strip};

/// Whether there is room for a photo of `bytes` bytes: the data
/// directory keeps `reserve_mb` free for check-ins and alarm events (photos
/// go first), and photos take at most `max_mb`. `Err` says why not.
pub fn room(data_dir: &Path, bytes: usize, reserve_mb: u32, max_mb: u32) -> Result<(), String> {
    let mib = 1024 * 1024;
    let st =
        rustix::fs::statvfs(data_dir).map_err(|e| format!("cannot see the free space: {e}"))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let reserve = u64::from(reserve_mb) * mib;
    if free < reserve + u64::try_from(bytes).unwrap_or(u64::MAX) {
        return Err(format!(
            "{} MiB free, {reserve_mb} MiB are kept for check-ins and alarms",
            free / mib
        ));
    }
    let used: u64 = std::fs::read_dir(dir(data_dir))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    if used + u64::try_from(bytes).unwrap_or(u64::MAX) > u64::from(max_mb) * mib {
        return Err(format!(
            "the photos take {} MiB, the most kept is {max_mb} MiB",
            used / mib
        ));
    }
    Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(path_of(Path::new("/d"), "../../etc/passwd").is_none());
        assert!(path_of(Path::new("/d"), &format!("{}.exe", "a".repeat(64))).is_none());
        assert!(path_of(Path::new("/d"), &format!("{}.jpg", "a".repeat(64))).is_some());
    }
}
