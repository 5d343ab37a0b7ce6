//! Just enough of the ELF header to tell which machine a binary is for: packing the wrong
//! binary for a target is a mistake best caught on the workstation.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{FlashError, Result};

/// The architecture (as `uname -m` names it) of the ELF executable at `path`.
pub fn elf_arch(path: &Path) -> Result<String> {
    let bad = |message: String| FlashError::Binary {
        path: path.to_owned(),
        message,
    };
    let mut header = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| bad(format!("cannot read an ELF header: {e}")))?;
    if &header[..4] != b"\x7fELF" {
        return Err(bad("not an ELF executable".into()));
    }
    // e_machine is at offset 18, in the byte order named by EI_DATA (offset 5).
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        other => return Err(bad(format!("unknown ELF byte order {other}"))),
    };
    Ok(match machine {
        3 => "i686",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        other => return Err(bad(format!("unsupported ELF machine {other}"))),
    }
    .to_owned())
}

/// The architecture part of a target triple, normalised to `uname -m`'s name.
pub fn triple_arch(triple: &str) -> String {
    let arch = triple.split('-').next().unwrap_or(triple);
    normalize_arch(arch)
}

/// `uname -m` spellings of the same machine folded into one (`arm64` is `aarch64`, ...).
pub fn normalize_arch(arch: &str) -> String {
    match arch.trim() {
        "arm64" => "aarch64",
        "amd64" | "x64" => "x86_64",
        "i386" | "i486" | "i586" | "x86" => "i686",
        a if a.starts_with("armv") || a.starts_with("thumbv") => "arm",
        a => a,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_is_an_elf_of_this_machine() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            elf_arch(&exe).unwrap(),
            normalize_arch(std::env::consts::ARCH)
        );
    }

    #[test]
    fn triples_and_uname_names() {
        assert_eq!(triple_arch("aarch64-unknown-linux-gnu"), "aarch64");
        assert_eq!(triple_arch("x86_64-unknown-linux-gnu"), "x86_64");
        assert_eq!(normalize_arch("arm64\n"), "aarch64");
        assert_eq!(normalize_arch("armv7l"), "arm");
    }

    #[test]
    fn a_text_file_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, "#!/bin/sh\nexit 0\n--------").unwrap();
        assert!(elf_arch(&p).unwrap_err().to_string().contains("not an ELF"));
    }
}
