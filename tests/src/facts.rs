//! Judging the facts a scenario reported. Scenario scripts only gather facts (status=FAIL means
//! they could not); the tests decide whether the facts are right, with these checks for the facts
//! every vmm run reports (`rig_vmm_facts` in resources/rig/lib.sh) and the results of L2's programs.

use crate::result_line::{LineKind, ResultLine, Status};

/// What is wrong with the vmm run described by a scenario's result line (`vmm_exit`, `marker`,
/// `kvm_error`, `vmm_error`): the vmm is to exit 0 after L2 reached its init (`L2-MARKER`), without
/// a KVM error in its output. Empty if nothing is.
pub fn vmm_run_problems(result: &ResultLine) -> Vec<String> {
    let mut bad = Vec::new();
    if result.get("vmm_exit") != Some("0") {
        bad.push(format!(
            "vmm exit code {:?}, not 0 (vmm_signal {:?}, vmm_error {:?})",
            result.get("vmm_exit"),
            result.get("vmm_signal"),
            result.get("vmm_error")
        ));
    }
    if result.get("marker") != Some("1") {
        bad.push(format!(
            "L2 did not reach its init: marker {:?}, not 1",
            result.get("marker")
        ));
    }
    if result.get("kvm_error") != Some("0") {
        bad.push(format!(
            "KVM error in the vmm's output: kvm_error {:?}, not 0",
            result.get("kvm_error")
        ));
    }
    bad
}

/// What is wrong with the results of L2's programs (`l2`: L2's relayed lines): `program`'s last
/// RIG-RESULT line is to say PASS, and no L2 RIG-RESULT line may say FAIL. Empty if nothing is.
pub fn l2_problems(l2: &[ResultLine], program: &str) -> Vec<String> {
    let mut bad = Vec::new();
    match l2
        .iter()
        .rfind(|l| l.kind == LineKind::Result && l.scenario() == program)
    {
        None => bad.push(format!("no RIG-RESULT line from L2's {program}")),
        Some(r) if !r.is_pass() => bad.push(format!("L2's {program} failed: {r}")),
        Some(_) => {}
    }
    for r in l2.iter().filter(|l| l.status == Some(Status::Fail)) {
        if r.scenario() != program {
            bad.push(format!("L2's {} failed: {r}", r.scenario()));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result_line::parse_lines;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs lib.sh's `rig_vmm_facts` (with `sh` here, busybox ash in L1) on a vmm output file
    /// holding `output`, after `setup` (shell), and reports what it set as a RIG-RESULT line.
    fn vmm_facts(setup: &str, output: &str, l2: bool) -> ResultLine {
        let dir = std::env::temp_dir().join(format!("rig-facts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let out = dir.join(format!("out-{}", RUN.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&out, output).unwrap();
        let lib = crate::paths::rig_script("lib.sh");
        let script = format!(
            ". '{}'; RIG_SCENARIO=t; {setup}; {} rig_vmm_facts '{}' {}; rig_report",
            lib.display(),
            if l2 { "rig_l2_forward \"$1\";" } else { "" },
            out.display(),
            if l2 { "l2" } else { "" }
        );
        let res = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .arg(&out)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&res.stdout).into_owned();
        let (lines, bad) = parse_lines(&text);
        assert!(bad.is_empty(), "{bad:?}\n{text}");
        lines
            .into_iter()
            .rfind(|l| l.kind == LineKind::Result)
            .unwrap_or_else(|| panic!("no result line: {text}"))
    }

    const BOOTED: &str = "1.00 vmm: starting\n2.50 L2-MARKER: init reached cpus=1\n\
                          3.00 RIG-RESULT scenario=edu-dma status=PASS len=4000\n";

    #[test]
    fn lib_sh_reports_a_clean_run_as_complete_facts() {
        let r = vmm_facts(
            "RIG_VMM_RC=0; RIG_VMM_T0=1.00; RIG_VMM_SECS=200",
            BOOTED,
            true,
        );
        assert!(r.is_pass(), "{r}");
        assert!(vmm_run_problems(&r).is_empty(), "{r}");
        assert_eq!(r.get("l2_status"), Some("PASS"), "{r}");
        assert_eq!(r.get("l2_boot_s"), Some("1.50"), "{r}");
    }

    #[test]
    fn lib_sh_reports_a_failed_vmm_as_facts_not_as_a_failure() {
        // The vmm refused to start: complete facts (status PASS), which the test then judges.
        let r = vmm_facts(
            "RIG_VMM_RC=1; RIG_VMM_T0=1.00; RIG_VMM_SECS=200",
            "1.10 vmm: error: device 0000:00:03.0 is not bound to vfio-pci\n",
            false,
        );
        assert!(r.is_pass(), "{r}");
        assert_eq!(
            r.get("vmm_error"),
            Some("device_0000:00:03.0_is_not_bound_to_vfio-pci")
        );
        assert_eq!(vmm_run_problems(&r).len(), 2, "exit and marker: {r}");
        // A KVM error is a fact too.
        let r = vmm_facts(
            "RIG_VMM_RC=0; RIG_VMM_T0=1.00; RIG_VMM_SECS=200",
            &format!("{BOOTED}3.10 KVM error: KVM_EXIT_INTERNAL_ERROR\n"),
            true,
        );
        assert!(r.is_pass(), "{r}");
        assert_eq!(r.get("kvm_error"), Some("1"), "{r}");
    }

    #[test]
    fn lib_sh_fails_only_on_missing_facts() {
        let r = vmm_facts(
            "RIG_VMM_RC=0; RIG_VMM_T0=1.00; RIG_VMM_SECS=200",
            "1.10 x\n",
            true,
        );
        assert_eq!(r.reason(), Some("l2-no-result"), "{r}");
        let r = vmm_facts(
            "RIG_VMM_RC=139; RIG_VMM_T0=1.00; RIG_VMM_SECS=200",
            BOOTED,
            true,
        );
        assert_eq!(r.reason(), Some("vmm-signal"), "{r}");
        assert_eq!(r.get("vmm_signal"), Some("11"), "{r}");
        // SIGKILL after the whole timeout: the vmm outlived it.
        let r = vmm_facts(
            "RIG_VMM_RC=137; RIG_VMM_T0=0; RIG_VMM_SECS=2",
            BOOTED,
            false,
        );
        assert_eq!(r.reason(), Some("vmm-timeout"), "{r}");
    }

    fn line(text: &str) -> ResultLine {
        ResultLine::parse(text).unwrap().unwrap()
    }

    #[test]
    fn a_clean_vmm_run_has_no_problems() {
        let r =
            line("RIG-RESULT scenario=s status=PASS vmm_exit=0 vmm_signal=0 kvm_error=0 marker=1");
        assert_eq!(vmm_run_problems(&r), Vec::<String>::new());
    }

    #[test]
    fn each_wrong_vmm_fact_is_a_problem() {
        let r = line(
            "RIG-RESULT scenario=s status=PASS vmm_exit=1 vmm_signal=0 kvm_error=1 marker=0 \
             vmm_error=no_such_device",
        );
        let bad = vmm_run_problems(&r);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(
            bad[0].contains("\"1\"") && bad[0].contains("no_such_device"),
            "{bad:?}"
        );
        assert!(bad[1].contains("marker"), "{bad:?}");
        assert!(bad[2].contains("kvm_error"), "{bad:?}");
    }

    #[test]
    fn missing_vmm_facts_are_problems() {
        let r = line("RIG-RESULT scenario=s status=FAIL reason=vmm-signal");
        assert_eq!(vmm_run_problems(&r).len(), 3);
    }

    #[test]
    fn l2_program_must_report_pass() {
        let pass = line("RIG-RESULT scenario=edu-dma status=PASS len=4000");
        let fail = line("RIG-RESULT scenario=edu-dma status=FAIL reason=mismatch");
        let data = line("RIG-DATA scenario=edu-dma k=v");
        assert!(l2_problems(&[data.clone(), pass.clone()], "edu-dma").is_empty());
        assert_eq!(l2_problems(std::slice::from_ref(&data), "edu-dma").len(), 1);
        let bad = l2_problems(&[pass.clone(), fail.clone()], "edu-dma");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("mismatch"), "{bad:?}");
        // Another program's failure counts too.
        let other = line("RIG-RESULT scenario=bar-pattern status=FAIL reason=read");
        let bad = l2_problems(&[pass, other], "edu-dma");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("bar-pattern"), "{bad:?}");
    }
}
