//! Records the triple this binary is built for: `flash pack --target host` names the host's
//! triple in the archive without asking rustc at run time.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=FLASH_HOST_TARGET={target}");
}
