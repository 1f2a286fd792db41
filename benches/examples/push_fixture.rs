//! Pushes one of the small test images (`busybox`, `users`, `layered`; see
//! `vic_tests::fixtures`) to a plain-HTTP registry, for the end-to-end benches and for
//! trying the endpoint by hand. Prints the pushed reference and the image ID.
//!
//! Usage: cargo run -p vic-benches --example push-fixture -- ADDR NAME [REPO [TAG]]

use std::process::ExitCode;

use vic_tests::fixtures;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: push-fixture ADDR busybox|users|layered [REPO [TAG]]");
        return ExitCode::from(2);
    };
    let repo = args.get(2).map_or(name.as_str(), String::as_str);
    let tag = args.get(3).map_or("latest", String::as_str);
    let push = match name.as_str() {
        "busybox" => fixtures::push_busybox,
        "users" => fixtures::push_users,
        "layered" => fixtures::push_layered,
        other => {
            eprintln!("push-fixture: no fixture image {other:?} (busybox, users, layered)");
            return ExitCode::from(2);
        }
    };
    let pushed = push(addr.as_str(), repo, tag);
    println!("{} {}", pushed.reference, pushed.config_digest);
    ExitCode::SUCCESS
}
