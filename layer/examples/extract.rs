//! Extracts a layer tar into a new directory and prints what was written:
//! `cargo run -p vic-layer --example extract -- LAYER.tar DEST` (`-` reads standard
//! input). Handy to compare with `tar -x` on real layers.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tar, dest] = args.as_slice() else {
        return Err("usage: extract LAYER.tar DEST".into());
    };
    let dest = Path::new(dest);
    std::fs::create_dir(dest)?;
    let opts = vic_layer::ExtractOptions::for_current_user();
    let stats = if tar == "-" {
        vic_layer::extract_layer(std::io::stdin().lock(), dest, &opts)?
    } else {
        vic_layer::extract_layer(std::fs::File::open(tar)?, dest, &opts)?
    };
    println!("{stats:#?}");
    println!("size: {}", vic_layer::directory_size(dest)?);
    Ok(())
}
