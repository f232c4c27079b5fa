//! Secrets in the config: inline, in a file (also under systemd's `$CREDENTIALS_DIRECTORY`), or in an
//! environment variable — exactly one of the three — and the bounded file reads every path setting uses.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{ConfigError, Loader, MAX_FILE};

/// Environment variable systemd sets for `LoadCredential=`; `secret_file` paths may start with it.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

impl Loader<'_> {
    /// Reads a secret given inline, in a file, or in an environment variable: exactly one of the three.
    pub(crate) fn secret(
        &self,
        what: &str,
        section: &str,
        at: std::ops::Range<usize>,
        inline: &Option<String>,
        file: &Option<Spanned<String>>,
        env: &Option<Spanned<String>>,
    ) -> Result<String, ConfigError> {
        let given = inline.is_some() as u8 + file.is_some() as u8 + env.is_some() as u8;
        if given != 1 {
            return Err(self.err_at(
                at,
                format!("[{section}] needs exactly one of `{what}`, `{what}_file` or `{what}_env`"),
            ));
        }
        if !self.read_secrets {
            return Ok(String::new());
        }
        if let Some(value) = inline {
            if value.trim().is_empty() {
                return Err(self.err_at(
                    at,
                    format!("[{section}] `{what}` is empty; set the secret, or use `{what}_file`"),
                ));
            }
            return Ok(value.trim().to_owned());
        }
        if let Some(file) = file {
            let path =
                expand_credentials_dir(file.get_ref()).map_err(|m| self.err_at(file.span(), m))?;
            if readable_by_others(&path) {
                self.warnings.borrow_mut().push(format!(
                    "[{section}] {what}_file {} is readable by group or others; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ));
            }
            let text = read_bounded_text(&path).map_err(|e| {
                self.err_at(
                    file.span(),
                    format!("cannot read {what}_file {}: {e}", path.display()),
                )
            })?;
            let value = text.trim().to_owned();
            if value.is_empty() {
                return Err(self.err_at(
                    file.span(),
                    format!("{what}_file {} is empty", path.display()),
                ));
            }
            return Ok(value);
        }
        let var = env
            .as_ref()
            .expect("exactly one of three is set, checked above");
        match std::env::var(var.get_ref()) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(self.err_at(
                var.span(),
                format!(
                    "environment variable {} (from {what}_env) is not set or empty",
                    var.get_ref()
                ),
            )),
        }
    }
}

/// Reads at most [`MAX_FILE`] bytes of `path`; a larger file is an error naming the limit.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB", MAX_FILE / 1024),
        ));
    }
    Ok(bytes)
}

pub(crate) fn read_bounded_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Expands a leading `${CREDENTIALS_DIRECTORY}` (or `$CREDENTIALS_DIRECTORY`), as systemd's `LoadCredential=` needs.
pub(crate) fn expand_credentials_dir(path: &str) -> Result<PathBuf, String> {
    for prefix in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let dir = std::env::var(CREDENTIALS_DIRECTORY).map_err(|_| {
                format!("`{path}` uses {CREDENTIALS_DIRECTORY}, which is not set (it is set by systemd's LoadCredential=)")
            })?;
            return Ok(PathBuf::from(format!("{dir}{rest}")));
        }
    }
    Ok(PathBuf::from(path))
}

pub(crate) fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}
