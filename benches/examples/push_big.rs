//! Pushes the `big` test image (busybox plus one stored layer of MIB MiB of seeded random
//! bytes, see `vic_tests::fixtures::big_image`) to a plain-HTTP registry, for
//! `benches/pull-vs-dockerd.sh`. Prints the pushed reference and the image ID.
//!
//! Usage: cargo run --release -p vic-benches --example push-big -- ADDR MIB [REPO [TAG]]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(mib)) = (args.first(), args.get(1).and_then(|m| m.parse().ok())) else {
        eprintln!("usage: push-big ADDR MIB [REPO [TAG]]");
        return ExitCode::from(2);
    };
    let repo = args.get(2).map_or("big", String::as_str);
    let tag = args.get(3).map_or("latest", String::as_str);
    let pushed = vic_tests::fixtures::push_big(addr, repo, tag, mib);
    println!("{} {}", pushed.reference, pushed.config_digest);
    ExitCode::SUCCESS
}
