//! `check-frames PNG...`: says for each PNG whether it is, pixel for pixel, one of the images that
//! L2's gpu-user-blob shows (scenario gpu-bar-blob, resources/demo.sh): `correct` and which one, or
//! `WRONG` and the first difference; then what a correct frame looks like.
//! Exit status: 0 if every file is correct, 1 if one is not, 2 without files.

use std::path::Path;
use std::process::ExitCode;

use rig_tests::{identify_frame, GPU_USER_BLOB_IMAGES};

fn main() -> ExitCode {
    let files: Vec<_> = std::env::args_os().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: check-frames PNG...");
        return ExitCode::from(2);
    }
    let mut wrong = 0;
    for f in &files {
        let f = Path::new(f);
        let verdict = std::fs::read(f)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|png| identify_frame(&png, &GPU_USER_BLOB_IMAGES));
        match verdict {
            Ok(k) => println!("{}: correct, {} pixel for pixel", f.display(), k.name),
            Err(why) => {
                wrong += 1;
                println!("{}: WRONG: {why}", f.display());
            }
        }
    }
    println!("A correct frame is one of:");
    for k in &GPU_USER_BLOB_IMAGES {
        println!("  {} ({}): {}", k.name, k.about, k.describe());
    }
    if wrong == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{wrong} of {} frames are wrong", files.len());
        ExitCode::FAILURE
    }
}
