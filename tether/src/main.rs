//! `tether <vm-folder> <rootfs>`: the guest init of a container VM (see the library's
//! `init` module).

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let [vm, rootfs] = args.as_slice() else {
        eprintln!("usage: tether <vm-folder> <rootfs>");
        std::process::exit(125);
    };
    let code = vic_tether::init::run(std::path::Path::new(vm), std::path::Path::new(rootfs));
    std::process::exit(code);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("tether runs on Linux only");
    std::process::exit(125);
}
