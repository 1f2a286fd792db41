//! Extracts a layer tar with its tar-split skeleton, gives the tar back from the tree
//! and checks that it is the same, byte for byte; prints the sizes:
//! `cargo run -p vic-layer --example split -- LAYER.tar DEST`.

use std::io::Read;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tar, dest] = args.as_slice() else {
        return Err("usage: split LAYER.tar DEST".into());
    };
    let dest = Path::new(dest);
    std::fs::create_dir(dest)?;
    let opts = vic_layer::ExtractOptions::for_current_user();
    let (stats, split) = vic_layer::extract_layer_split(std::fs::File::open(tar)?, dest, &opts)?;
    let bytes = split.to_bytes();
    println!("{stats:#?}");
    println!("tar: {} bytes", split.tar_size());
    println!("skeleton: {} bytes", bytes.len());

    let split = vic_layer::TarSplit::from_bytes(&bytes)?;
    let mut back = vic_layer::reassemble(&split, dest);
    let mut original = std::fs::File::open(tar)?;
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut at = 0u64;
    loop {
        let n = back.read(&mut a)?;
        original.read_exact(&mut b[..n])?;
        if a[..n] != b[..n] {
            return Err(format!("the tar given back differs near byte {at}").into());
        }
        at += n as u64;
        if n == 0 {
            break;
        }
    }
    if original.read(&mut b)? != 0 {
        return Err(format!("the tar given back ends early, at byte {at}").into());
    }
    println!("given back byte for byte");
    Ok(())
}
