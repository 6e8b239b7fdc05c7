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
}
