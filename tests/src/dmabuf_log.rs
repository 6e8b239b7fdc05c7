//! The vmm's log of exported dma-bufs: one INFO line per export with the dma-buf's fdinfo
//! (virtio-gpu logs it at info level after each export), e.g.
//!
//! ```text
//! [.. INFO  virtio_gpu::..] virtio-gpu: blob 1 dma-buf fdinfo: size: 196608 | flags: 02 | exp_name: vfio_pci_core | ..
//! ```

/// One exported dma-buf as the vmm logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmabufExport {
    /// The virtio-gpu resource id (`blob <id>`), if the line names one.
    pub blob: Option<u32>,
    /// The fdinfo's `exp_name:` (`udmabuf`, `vfio_pci_core`).
    pub exp_name: Option<String>,
    /// The fdinfo's `size:` in bytes.
    pub size: Option<u64>,
    /// The whole log line.
    pub line: String,
}

/// Marker of the fdinfo log lines.
pub const FDINFO_MARKER: &str = "dma-buf fdinfo";

/// The value after `key:` (whitespace allowed) where `key` starts a word.
fn value_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}:");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        let starts_word = line[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if starts_word {
            let rest = line[at + pat.len()..].trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            return Some(&rest[..end]).filter(|v| !v.is_empty());
        }
        from = at + pat.len();
    }
    None
}

/// Parses one log line; `None` if it is not an fdinfo line.
pub fn parse_export(line: &str) -> Option<DmabufExport> {
    if !line.contains(FDINFO_MARKER) {
        return None;
    }
    let blob = line
        .split_once("blob ")
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    Some(DmabufExport {
        blob,
        exp_name: value_after(line, "exp_name").map(str::to_string),
        size: value_after(line, "size").and_then(|v| v.parse().ok()),
        line: line.to_string(),
    })
}

/// Every fdinfo line among `lines`, in order.
pub fn parse_exports<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<DmabufExport> {
    lines.into_iter().filter_map(parse_export).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lines_give_blob_exporter_and_size() {
        let lines = [
            "[2026-11-23T21:00:00Z INFO  virtio_gpu::device] virtio-gpu: blob 1 dma-buf fdinfo: size:\t196608 | flags:\t02 | exp_name:\tvfio_pci_core | name:",
            "virtio-gpu: blob 1 (196608 bytes) exported as udmabuf",
            "virtio-gpu: blob 7 dma-buf fdinfo: pos: 0 size: 4096 exp_name: udmabuf",
        ];
        let e = parse_exports(lines);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].blob, Some(1));
        assert_eq!(e[0].exp_name.as_deref(), Some("vfio_pci_core"));
        assert_eq!(e[0].size, Some(196608));
        assert_eq!(e[1].blob, Some(7));
        assert_eq!(e[1].exp_name.as_deref(), Some("udmabuf"));
        assert_eq!(e[1].size, Some(4096));
    }

    #[test]
    fn keys_inside_other_words_do_not_count() {
        let e = parse_export("dma-buf fdinfo: blob_size: 5 my_exp_name: x").unwrap();
        assert_eq!((e.blob, e.size, e.exp_name), (None, None, None));
    }
}
