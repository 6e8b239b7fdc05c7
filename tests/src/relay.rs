//! Result lines of an inner guest (L2), relayed on L1's console by `rig_run_vmm` (resources/rig/lib.sh)
//! as `L2| <L1 uptime> <line>`.

use crate::result_line::ResultLine;

/// Prefix of the lines `rig_run_vmm` relays from the vmm's output (L2's console and the vmm's log).
pub const L2_PREFIX: &str = "L2| ";

/// The text of every relayed line, without the prefix and the L1 uptime, in order.
pub fn l2_console(console: &str) -> impl Iterator<Item = &str> {
    console.lines().filter_map(|line| {
        let rest = line.trim_end_matches('\r').strip_prefix(L2_PREFIX)?;
        // "<uptime> <text>"; a line without a text part was empty.
        Some(rest.split_once(' ').map_or("", |(_, text)| text))
    })
}

/// The relayed lines that start with `prefix` (e.g. `EVDEV `), each whole again where a log
/// record of the vmm (`[<RFC 3339 time> LEVEL target] ...`, written by another thread while the
/// guest was in the middle of a line) was spliced into it: the record is cut out and, when the
/// guest's line went on after it, the next relayed line (its rest) is joined back.
pub fn guest_lines_starting<'a>(console: &'a str, prefix: &'a str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = l2_console(console).peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with(prefix) {
            continue;
        }
        match line.find("[20") {
            Some(at) if line[at..].contains("Z ") => {
                let head = &line[..at];
                // The guest's line went on after the record if the next line is no line of its own.
                // (Lines of their own start with the prefix, `[`, an upper-case word or a word
                // with a colon: `vmm: ...`.)
                let rest = lines
                    .next_if(|next| {
                        let first = next.split(' ').next().unwrap_or("");
                        !next.is_empty()
                            && !next.starts_with(prefix)
                            && !next.starts_with('[')
                            && !next.starts_with(|c: char| c.is_ascii_uppercase())
                            && !first.contains(':')
                    })
                    .unwrap_or("");
                out.push(format!("{head}{rest}"));
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// The well-formed `RIG-RESULT`/`RIG-DATA` lines among the relayed lines, in order.
pub fn parse_l2_lines(console: &str) -> Vec<ResultLine> {
    l2_console(console)
        .filter_map(|text| ResultLine::parse(text)?.ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result_line::LineKind;

    #[test]
    fn relayed_lines_are_parsed_and_l1_lines_ignored() {
        let console = "RIG-DATA scenario=l1 a=1\r\n\
            L2| 12.50 RIG-DATA scenario=bar-pattern bdf=0000:00:03.0\r\n\
            L2| 12.60 bar-pattern: lspci: 0000:00:03.0 [050000]\r\n\
            L2| 12.70 RIG-RESULT scenario=bar-pattern status=PASS pages=256\r\n\
            L2| 12.80 RIG-RESULT scenario=broken\r\n\
            xL2| 1.0 RIG-DATA scenario=nope\n";
        let l2 = parse_l2_lines(console);
        assert_eq!(l2.len(), 2, "{l2:?}");
        assert_eq!(l2[0].kind, LineKind::Data);
        assert_eq!(l2[0].get("bdf"), Some("0000:00:03.0"));
        assert!(l2[1].is_pass());
        assert_eq!(l2[1].parse_field::<u32>("pages"), Some(256));
        let texts: Vec<&str> = l2_console(console).collect();
        assert_eq!(texts[1], "bar-pattern: lspci: 0000:00:03.0 [050000]");
    }

    #[test]
    fn guest_lines_are_mended_where_a_log_record_was_spliced_in() {
        let console = "L2| 1.0 EVDEV a=1 b=2\n\
            L2| 1.1 EVDEV a=3 b[2026-12-06T16:42:30Z INFO  x::y] vnc: client 1 left\n\
            L2| 1.2 =4\n\
            L2| 1.3 EVDEV a=5 b=6[2026-12-06T16:51:34Z INFO  x::y] vnc: client 2 left\n\
            L2| 1.4 EVDEV a=7 b=8\n\
            L2| 1.5 other line [2026-12-06T16:51:34Z INFO  x::y] z\n\
            L2| 1.6 EVDEV a=9 b=1[2026-12-06T16:51:34Z INFO  x::y] z\n\
            L2| 1.7 0 c=11\n\
            L2| 1.8 EVDEV a=12[2026-12-06T16:51:34Z INFO  x::y] z\n\
            L2| 1.9 vmm: guest reset\n";
        assert_eq!(
            guest_lines_starting(console, "EVDEV "),
            [
                "EVDEV a=1 b=2",
                "EVDEV a=3 b=4",
                "EVDEV a=5 b=6",
                "EVDEV a=7 b=8",
                "EVDEV a=9 b=10 c=11",
                "EVDEV a=12"
            ]
        );
    }
}
