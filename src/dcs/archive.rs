//! The downloaded certificate archive, unpacked defensively: it comes from an object-storage link, so it is
//! treated as hostile. The whole archive is refused (nothing is extracted to disk, ever) when any entry has an
//! absolute or `..` path, is a symlink, or when the entries, their declared sizes or their actual decompressed
//! bytes exceed the bounds below; otherwise `ca.crt` is read into memory.

use std::io::Read as _;

/// The largest archive downloaded.
pub const MAX_ARCHIVE: u64 = 2 * 1024 * 1024;
/// The most entries an archive may have (DCS ships a handful of files).
pub const MAX_ENTRIES: usize = 32;
/// The largest decompressed entry read, and the largest sum of declared sizes.
pub const MAX_UNPACKED: u64 = 1024 * 1024;
/// The CA file inside the archive.
pub const CA_ENTRY: &str = "ca.crt";

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Not a zip archive the reader understands.
    #[error("the downloaded certificate archive is not a readable zip ({0})")]
    Unreadable(String),
    /// Too many entries.
    #[error(
        "the downloaded archive has {0} entries, more than the {MAX_ENTRIES} allowed; refusing it"
    )]
    TooManyEntries(usize),
    /// An entry would land outside the extraction directory.
    #[error(
        "the downloaded archive has an entry with an unsafe path `{0}` (absolute or ..); refusing it"
    )]
    UnsafePath(String),
    /// An entry is a symlink.
    #[error("the downloaded archive has a symlink entry `{0}`; refusing it")]
    Symlink(String),
    /// An entry (declared or actual) or the whole is larger than allowed.
    #[error(
        "the downloaded archive unpacks to more than {limit} KiB (entry `{0}`); refusing it as a likely zip bomb",
        limit = MAX_UNPACKED / 1024
    )]
    TooLarge(String),
    /// No `ca.crt`.
    #[error("the downloaded archive holds no {CA_ENTRY} (entries: {0})")]
    NoCa(String),
}

/// Returns true if and only if `name` stays inside the directory it would be extracted to.
fn safe_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.starts_with('\\')
        && !name.contains(':')
        && name
            .split(['/', '\\'])
            .all(|part| part != ".." && !part.contains('\0'))
}

/// Reads `ca.crt` from `bytes` after checking every entry.
///
/// # Errors
/// An [`ArchiveError`] for anything unsafe or missing; nothing is written anywhere.
pub fn ca_from_zip(bytes: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(ArchiveError::TooManyEntries(archive.len()));
    }
    let mut declared: u64 = 0;
    let mut ca_index = None;
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if !safe_path(&name) || entry.enclosed_name().is_none() {
            return Err(ArchiveError::UnsafePath(name));
        }
        if entry.is_symlink() {
            return Err(ArchiveError::Symlink(name));
        }
        declared = declared.saturating_add(entry.size());
        if entry.size() > MAX_UNPACKED || declared > MAX_UNPACKED {
            return Err(ArchiveError::TooLarge(name));
        }
        if name.rsplit('/').next() == Some(CA_ENTRY) && entry.is_file() {
            ca_index.get_or_insert(i);
        }
        names.push(name);
    }
    let Some(index) = ca_index else {
        return Err(ArchiveError::NoCa(names.join(", ")));
    };
    let entry = archive
        .by_index(index)
        .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
    let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
    // The declared size may lie: the bound is on the bytes the decompressor actually produces.
    let mut out = Vec::new();
    entry
        .take(MAX_UNPACKED + 1)
        .read_to_end(&mut out)
        .map_err(|e| ArchiveError::Unreadable(format!("{name}: {e}")))?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(ArchiveError::TooLarge(name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_recognised() {
        for bad in [
            "../ca.crt",
            "/etc/ca.crt",
            "a/../../ca.crt",
            "C:\\ca.crt",
            "..\\ca.crt",
            "",
        ] {
            assert!(!safe_path(bad), "{bad}");
        }
        for good in ["ca.crt", "ssl/ca.crt", "a..b/ca.crt"] {
            assert!(safe_path(good), "{good}");
        }
    }

    #[test]
    fn garbage_is_unreadable_not_a_panic() {
        assert!(matches!(
            ca_from_zip(b"PK\x03\x04garbage"),
            Err(ArchiveError::Unreadable(_))
        ));
        assert!(matches!(ca_from_zip(b""), Err(ArchiveError::Unreadable(_))));
    }
}
