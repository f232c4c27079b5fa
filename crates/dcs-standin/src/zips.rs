//! The certificate archive DCS hands out, honest or hostile: the test bed asks for path traversal, a symlink
//! entry, a zip bomb (1 GiB of zeros), no `ca.crt`, or a leaf instead of a CA.

use std::io::{Cursor, Write as _};

use anyhow::Context as _;
use zip::write::SimpleFileOptions;

/// The shapes of archive the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// `ca.crt` and a README, as DCS ships them.
    Honest,
    /// `../ca.crt`.
    Traversal,
    /// `ca.crt` is a symlink to `/etc/passwd`.
    Symlink,
    /// `ca.crt` inflates to 1 GiB of zeros.
    Bomb,
    /// Only a README.
    NoCa,
    /// `ca.crt` holds the server certificate.
    Leaf,
}

/// Builds the archive of `shape` for a CA and its server certificate.
///
/// # Errors
/// The zip writer failed.
pub fn build(shape: Shape, ca_pem: &str, server_pem: &str) -> anyhow::Result<Vec<u8>> {
    if shape == Shape::Bomb {
        return Ok(bomb());
    }
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let file = |writer: &mut zip::ZipWriter<Cursor<Vec<u8>>>, name: &str, text: &str| {
        writer.start_file(name, options).context("zip entry")?;
        writer.write_all(text.as_bytes()).context("zip write")
    };
    file(
        &mut writer,
        "README.txt",
        "Certificate of the DCS Redis instance (stand-in).\n",
    )?;
    match shape {
        Shape::Honest => file(&mut writer, "ca.crt", ca_pem)?,
        Shape::Traversal => file(&mut writer, "../ca.crt", ca_pem)?,
        Shape::Symlink => writer
            .add_symlink("ca.crt", "/etc/passwd", options)
            .context("zip symlink")?,
        Shape::Leaf => file(&mut writer, "ca.crt", server_pem)?,
        Shape::NoCa | Shape::Bomb => {}
    }
    Ok(writer.finish().context("zip finish")?.into_inner())
}

/// A zip whose `ca.crt` inflates to 1 GiB of zeros, with honest sizes and CRC. Built without deflating a
/// gigabyte: 1 MiB of zeros is deflated once with a sync flush (byte-aligned, no back-reference outside
/// itself), repeated 1024 times, and closed with an empty final block.
fn bomb() -> Vec<u8> {
    const CHUNK: usize = 1024 * 1024;
    const COPIES: u32 = 1024;
    let zeros = vec![0u8; CHUNK];
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    let mut chunk = Vec::with_capacity(8 * 1024);
    // The output of 1 MiB of zeros is a few KiB: one call with enough room finishes it.
    let _ = compress.compress_vec(&zeros, &mut chunk, flate2::FlushCompress::Sync);
    let mut data = Vec::with_capacity(chunk.len() * COPIES as usize + 2);
    for _ in 0..COPIES {
        data.extend_from_slice(&chunk);
    }
    data.extend_from_slice(&[0x03, 0x00]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&zeros);
    for _ in 0..10 {
        let copy = crc.clone();
        crc.combine(&copy);
    }
    let crc = crc.finalize();
    let size = CHUNK as u32 * COPIES;
    let name = b"ca.crt";
    let mut out = Vec::new();
    let local = |out: &mut Vec<u8>, signature: u32| {
        out.extend_from_slice(&signature.to_le_bytes());
    };
    // Local file header.
    local(&mut out, 0x0403_4b50);
    for v in [20u16, 0, 8, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, data.len() as u32, size] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    // Central directory.
    let directory_at = out.len() as u32;
    local(&mut out, 0x0201_4b50);
    for v in [20u16, 20, 0, 8, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, data.len() as u32, size] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [name.len() as u16, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&0o100_644u32.wrapping_shl(16).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name);
    let directory_len = out.len() as u32 - directory_at;
    // End of central directory.
    local(&mut out, 0x0605_4b50);
    for v in [0u16, 0, 1, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&directory_len.to_le_bytes());
    out.extend_from_slice(&directory_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn the_bomb_is_a_valid_zip_of_one_gibibyte() {
        let bytes = bomb();
        assert!(bytes.len() < 2 * 1024 * 1024, "{}", bytes.len());
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let entry = archive.by_index(0).unwrap();
        assert_eq!(entry.size(), 1 << 30);
        let mut head = vec![0u8; 4 * 1024 * 1024];
        let mut taken = entry.take(head.len() as u64);
        taken.read_exact(&mut head).unwrap();
        assert!(head.iter().all(|&b| b == 0));
    }
}
