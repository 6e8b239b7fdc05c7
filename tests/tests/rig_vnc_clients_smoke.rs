//! Scenario `vnc-clients-smoke` (run.sh `--l0-root`): L0's real VNC clients (Debian's
//! gvnccapture and vncsnapshot, vncdotool from PyPI on Debian's python3), run inside L1 from L0's
//! read-only root, reach a server in L1 over TCP and a unix socket, capture its screen and send it
//! keys and pointer events; evdev-watch, run in L1 on L2's kernel, prints a uinput keyboard's events;
//! and L2 loads the stock virtio-input driver and evdev and runs evdev-watch. The server is the
//! rig's rfb-fixture, which exists only to prove this path.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{rfb_fixture_rgb, RFB_FIXTURE_HEIGHT, RFB_FIXTURE_WIDTH};
use rig_tests::{decode_png, Outcome, Scenario};

/// (largest, mean) absolute difference per colour sample between the PNG `name` the scenario sent
/// and the fixture's screen; panics if it is missing, not a PNG or not 64x48.
fn pattern_error(out: &Outcome, name: &str) -> (u8, f64) {
    let f = out
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not sent: {}", out.result));
    let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        (img.width, img.height),
        (RFB_FIXTURE_WIDTH, RFB_FIXTURE_HEIGHT),
        "{name}: size"
    );
    assert!(img.channels >= 3, "{name}: {} channels", img.channels);
    let (mut max, mut sum) = (0u8, 0u64);
    for y in 0..img.height {
        for x in 0..img.width {
            let i = (y * img.width + x) as usize * img.channels;
            let want = rfb_fixture_rgb(x, y);
            for (got, want) in img.pixels[i..i + 3].iter().zip(want) {
                let d = got.abs_diff(want);
                max = max.max(d);
                sum += u64::from(d);
            }
        }
    }
    (max, sum as f64 / f64::from(img.width * img.height * 3))
}

#[test]
fn l0_vnc_clients_reach_a_server_in_l1_and_l2_watches_evdev() {
    let out = Scenario::new("vnc-clients-smoke")
        .timeout(Duration::from_secs(1500))
        .l0_root(true)
        .vnc_clients(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);
    assert_eq!(out.data_value("l0_root"), Some("mounted"), "{r}");
    assert_eq!(
        r.get("l0_write_refused"),
        Some("1"),
        "a write into L0's root through /l0 succeeded: {r}"
    );

    // The clients' versions, as dpkg and vncdotool's metadata in L0's root say.
    let versions: Vec<String> = out
        .data
        .iter()
        .filter(|d| d.get("client").is_some())
        .map(|d| d.to_string())
        .collect();
    for v in &versions {
        println!("{v}");
    }
    for c in ["vncsnapshot", "gvnccapture", "vncdotool"] {
        let d = out
            .data
            .iter()
            .find(|d| d.get("client") == Some(c))
            .unwrap_or_else(|| panic!("no version line for {c}: {versions:?}"));
        assert_ne!(
            d.get("version"),
            Some("none"),
            "{c} missing in L0's root: {d}"
        );
    }

    for run in [
        "gvnccapture",
        "vncsnapshot",
        "vncdotool_input",
        "vncdotool_capture",
        "jpeg_to_png",
    ] {
        assert_eq!(
            r.get(&format!("{run}_exit")),
            Some("0"),
            "{run} failed in L1 (console lines `{run}| ...`): {r}"
        );
    }
    assert_eq!(r.get("files_missing"), Some("none"), "{r}");

    // Screens: Raw pixels through gtk-vnc and vncdotool are exact; vncsnapshot writes a JPEG
    // (quality 100), decoded by L0's PIL, so it may differ a little.
    for name in ["gvnccapture.png", "vncdotool.png"] {
        let (max, mean) = pattern_error(&out, name);
        assert_eq!(max, 0, "{name}: off by up to {max} (mean {mean:.2})");
    }
    let (max, mean) = pattern_error(&out, "vncsnapshot.png");
    assert!(
        max <= 16 && mean <= 2.0,
        "vncsnapshot's JPEG: off by up to {max}, mean {mean:.2}"
    );

    // vncdotool's `key a move 10 20 click 1` as the fixture saw it, in order.
    let log = out
        .files
        .iter()
        .find(|f| f.name == "rfb-fixture.log")
        .expect("rfb-fixture.log");
    let text = String::from_utf8_lossy(&log.bytes);
    let input: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter(|l| l.starts_with("RFB-KEY ") || l.starts_with("RFB-POINTER "))
        .map(|l| l.rsplit_once(" conn=").map_or(l, |(a, _)| a).to_string())
        .collect();
    assert_eq!(
        input,
        [
            "RFB-KEY down=1 keysym=0x61",
            "RFB-KEY down=0 keysym=0x61",
            "RFB-POINTER x=10 y=20 buttons=0",
            "RFB-POINTER x=10 y=20 buttons=1",
            "RFB-POINTER x=10 y=20 buttons=0",
        ],
        "fixture log:\n{text}"
    );
    let clients = text.lines().filter(|l| l.contains(" RFB-CLIENT ")).count();
    assert_eq!(clients, 4, "connections (one per client run):\n{text}");

    // evdev-watch in L1 (L2's kernel) saw the uinput keyboard's KEY_A (code 30) down and up, each
    // with its SYN_REPORT, and named the device.
    assert_eq!(r.get("l1_uinput_exit"), Some("0"), "{r}");
    assert_eq!(r.get("l1_evdev_exit"), Some("0"), "{r}");
    let ev_l1 = out
        .files
        .iter()
        .find(|f| f.name == "evdev-l1.txt")
        .expect("evdev-l1.txt");
    let ev_text = String::from_utf8_lossy(&ev_l1.bytes);
    let dev = ev_text
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("EVDEV-DEVICE dev=")?;
            let (n, name) = rest.split_once(' ')?;
            (name == "name=rig_uinput_keyboard").then(|| n.to_string())
        })
        .unwrap_or_else(|| panic!("no uinput keyboard among the devices:\n{ev_text}"));
    let events: Vec<&str> = ev_text
        .lines()
        .filter(|l| l.starts_with("EVDEV "))
        .collect();
    let want: Vec<String> = ["type=1 code=30 value=1", "type=0 code=0 value=0"]
        .iter()
        .chain(&["type=1 code=30 value=0", "type=0 code=0 value=0"])
        .map(|e| format!("EVDEV dev={dev} name=rig_uinput_keyboard {e}"))
        .collect();
    assert_eq!(events, want, "evdev-watch in L1:\n{ev_text}");
    assert!(
        ev_text.contains("RIG-RESULT scenario=l1-evdev-watch status=PASS events=4 ")
            && ev_text.contains(" stop=count"),
        "evdev-watch in L1:\n{ev_text}"
    );

    // L2: the stock drivers load and evdev-watch reports.
    out.assert_vmm_ran_clean();
    let ev = out.assert_l2_passed("evdev-watch");
    assert!(
        r.get("l2_input").is_some_and(|v| v.starts_with("loaded=1")),
        "virtio_input/evdev did not load in L2: {r}"
    );
    assert!(
        r.get("l2_evdev_ready")
            .is_some_and(|v| v.starts_with("devices=")),
        "{r}"
    );

    println!(
        "L1 seconds (TCG): first chroot program {} s; start (launch -> RFB-CLIENT) / run:",
        r.get("versions_s").unwrap_or("?")
    );
    for run in [
        "gvnccapture",
        "vncsnapshot",
        "vncdotool_input",
        "vncdotool_capture",
    ] {
        println!(
            "  {run:18} {:>7} s / {:>7} s",
            r.get(&format!("{run}_start_s")).unwrap_or("?"),
            r.get(&format!("{run}_run_s")).unwrap_or("?")
        );
    }
    println!(
        "  jpeg_to_png (PIL) {} s; L2 evdev-watch: {ev}",
        r.get("jpeg_to_png_s").unwrap_or("?")
    );
}
