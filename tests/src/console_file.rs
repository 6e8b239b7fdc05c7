//! Files a scenario sends to L0 over the serial console (`rig_send_file` in resources/rig/lib.sh):
//!
//! ```text
//! RIG-FILE-BEGIN scenario=<s> name=<name> size=<bytes> sha256=<hex>
//! <base64 lines>
//! RIG-FILE-END scenario=<s> name=<name>
//! ```
//!
//! The harness decodes each into `target/rig/logs/<scenario>/<name>` after checking size and SHA-256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

const BEGIN: &str = "RIG-FILE-BEGIN";
const END: &str = "RIG-FILE-END";
/// Largest file accepted from the console (the L1 side refuses more than 8 MiB by default).
const MAX_FILE: usize = 64 << 20;

/// A file received intact over the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleFile {
    /// The `name=` the scenario gave it.
    pub name: String,
    /// Where the harness wrote it.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

struct Open {
    name: String,
    size: usize,
    sha256: String,
    text: String,
}

/// A file name from the console is used as one path component only.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split(' ').filter_map(|w| w.split_once('=')).collect()
}

/// Finds the files `scenario` sent in `console`, checks them and returns them (in order) with one
/// message per file that was truncated, malformed or corrupted. Nothing is written.
pub fn parse_files(console: &str, scenario: &str) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut open: Option<Open> = None;
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(BEGIN) {
            let f = fields(rest);
            if f.get("scenario") != Some(&scenario) {
                continue;
            }
            if let Some(o) = open.take() {
                errors.push(format!("{}: no {END} line before the next file", o.name));
            }
            let name = f.get("name").copied().unwrap_or_default();
            let size = f.get("size").and_then(|s| s.parse::<usize>().ok());
            match (safe_name(name), size) {
                (true, Some(size)) if size <= MAX_FILE => {
                    open = Some(Open {
                        name: name.to_string(),
                        size,
                        sha256: f.get("sha256").copied().unwrap_or_default().to_string(),
                        text: String::new(),
                    })
                }
                _ => errors.push(format!("malformed {BEGIN} line: {line}")),
            }
        } else if let Some(rest) = line.strip_prefix(END) {
            if fields(rest).get("scenario") != Some(&scenario) {
                continue;
            }
            if let Some(o) = open.take() {
                match check(&o) {
                    Ok(bytes) => files.push((o.name, bytes)),
                    Err(e) => errors.push(format!("{}: {e}", o.name)),
                }
            }
        } else if let Some(o) = open.as_mut() {
            if o.text.len() <= MAX_FILE * 2 {
                o.text.push_str(line.trim());
            }
        }
    }
    if let Some(o) = open {
        errors.push(format!("{}: no {END} line (run cut short?)", o.name));
    }
    (files, errors)
}

fn check(o: &Open) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(o.text.as_bytes())
        .map_err(|e| format!("bad base64 ({e}): console line garbled?"))?;
    if bytes.len() != o.size {
        return Err(format!("{} bytes decoded, {} sent", bytes.len(), o.size));
    }
    let sum: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sum != o.sha256 {
        return Err(format!("sha256 {sum}, sent {}", o.sha256));
    }
    Ok(bytes)
}

/// Writes the files of [`parse_files`] into `dir` (created; files of an earlier run are removed).
pub(crate) fn save_files(
    files: Vec<(String, Vec<u8>)>,
    dir: &Path,
) -> std::io::Result<Vec<ConsoleFile>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if files.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir)?;
    files
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(&name);
            std::fs::write(&path, &bytes)?;
            Ok(ConsoleFile { name, path, bytes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    fn sent(name: &str, body: &str, sha: &str) -> String {
        format!(
            "RIG-FILE-BEGIN scenario=s name={name} size=6 sha256={sha}\r\n{body}\r\nRIG-FILE-END scenario=s name={name}\r\n"
        )
    }

    #[test]
    fn a_sent_file_is_decoded_and_checked() {
        let console = format!(
            "noise\r\n{}tail\r\n",
            sent("a.png", "aGVs\r\nbG8K", HELLO_SHA)
        );
        let (files, errors) = parse_files(&console, "s");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(files, vec![("a.png".to_string(), b"hello\n".to_vec())]);
        // Another scenario's files are not ours.
        assert!(parse_files(&console, "other").0.is_empty());
    }

    #[test]
    fn garbled_truncated_and_unsafe_files_are_reported() {
        let bad_sum = sent("a", "aGVsbG8K", &"0".repeat(64));
        let garbled = sent("b", "aGVs[ 1.0] kernel: x", HELLO_SHA);
        let short = sent("c", "aGVs", HELLO_SHA);
        let unsafe_name = sent("../x", "aGVsbG8K", HELLO_SHA);
        let cut = "RIG-FILE-BEGIN scenario=s name=d size=6 sha256=00\r\naGVs\r\n";
        let console = [bad_sum, garbled, short, unsafe_name, cut.to_string()].concat();
        let (files, errors) = parse_files(&console, "s");
        assert!(files.is_empty(), "{files:?}");
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].contains("sha256"), "{}", errors[0]);
        assert!(errors[1].contains("base64"), "{}", errors[1]);
        assert!(errors[2].contains("3 bytes decoded"), "{}", errors[2]);
        assert!(errors[3].contains("malformed"), "{}", errors[3]);
        assert!(errors[4].contains("no RIG-FILE-END"), "{}", errors[4]);
    }

    #[test]
    fn saving_replaces_an_earlier_run() {
        let dir = std::env::temp_dir().join(format!("rig-tests-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale.png"), b"old").unwrap();
        let saved = save_files(vec![("new.png".into(), b"png".to_vec())], &dir).unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(std::fs::read(&saved[0].path).unwrap(), b"png");
        assert!(!dir.join("stale.png").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
