//! Declares `cfg(fuzzing)`, which cargo-fuzz sets when it builds the targets.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
