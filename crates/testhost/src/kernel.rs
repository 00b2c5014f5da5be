//! Taking Debian kernel packages apart: the ELF inside a bzImage, PVH notes, module
//! dependencies and module signatures.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tools::require;
use crate::Error;

/// Returns the compressed payload of a bzImage and the tool that decompresses it.
pub fn bzimage_payload<'a>(
    path: &Path,
    image: &'a [u8],
) -> Result<(&'a [u8], Decompressor), Error> {
    let bad = |reason: &str| Error::BadKernel {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if image.len() < 0x250 || &image[0x202..0x206] != b"HdrS" {
        return Err(bad("not a bzImage (no HdrS setup header)"));
    }
    // setup_sects == 0 means 4, per the boot protocol.
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let le32 = |off: usize| {
        u32::from_le_bytes([image[off], image[off + 1], image[off + 2], image[off + 3]])
    };
    // payload_offset is relative to the protected-mode code, which follows the setup sectors.
    let start = (setup_sects + 1) * 512 + le32(0x248) as usize;
    let end = start + le32(0x24c) as usize;
    let payload = image
        .get(start..end)
        .ok_or_else(|| bad("payload outside the file"))?;
    let kind = if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        Decompressor::Lz4Legacy
    } else if payload.starts_with(b"\xfd7zXZ\0") {
        Decompressor::Xz
    } else {
        return Err(bad("payload is neither LZ4 nor XZ"));
    };
    Ok((payload, kind))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decompressor {
    /// The kernel's `lz4 -l` legacy frames with the size appended.
    Lz4Legacy,
    /// XZ with the size appended after the stream.
    Xz,
}

/// Decompresses a bzImage payload with the matching command-line tool.
pub fn decompress(kind: Decompressor, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let (tool, package, args): (_, _, &[&str]) = match kind {
        Decompressor::Lz4Legacy => ("lz4", "lz4", &["-dc"]),
        // The kernel appends the decompressed size after the stream: stop at the stream's end.
        Decompressor::Xz => ("xz", "xz-utils", &["-dc", "--single-stream"]),
    };
    require(tool, package)?;
    let command = format!("{tool} {}", args.join(" "));
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::InvalidArgument("no stdin".into()))?;
    // Both formats end with the kernel's 4-byte decompressed size, which lz4 rejects as a
    // truncated block: hand the tools the stream alone.
    let input = payload[..payload.len().saturating_sub(4)].to_vec();
    // Feed from a thread so a full stdout pipe cannot deadlock us.
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    let fed = feeder.join();
    if !out.status.success() || out.stdout.is_empty() {
        return Err(Error::ToolFailed {
            command,
            status: format!("{} (feeder: {fed:?})", out.status),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// Checks that `elf` is a 64-bit x86 ELF carrying a Xen PVH entry note (type 18).
pub fn check_pvh_elf(path: &Path, elf: &[u8]) -> Result<(), Error> {
    let bad = |reason: &str| Error::BadKernel {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(bad("not a little-endian ELF64 file"));
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    let short = || bad("truncated ELF headers");
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(short)?).map_err(|_| short())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(short)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(short)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph).ok_or_else(short)? != 4 {
            continue; // not PT_NOTE
        }
        let off = usize::try_from(u64_at(ph + 8).ok_or_else(short)?).map_err(|_| short())?;
        let size = usize::try_from(u64_at(ph + 32).ok_or_else(short)?).map_err(|_| short())?;
        let notes = elf.get(off..off + size).ok_or_else(short)?;
        let mut pos = 0;
        while pos + 12 <= notes.len() {
            let word = |o: usize| {
                u32::from_le_bytes([notes[o], notes[o + 1], notes[o + 2], notes[o + 3]]) as usize
            };
            let (namesz, descsz, ntype) = (word(pos), word(pos + 4), word(pos + 8));
            let name = notes.get(pos + 12..pos + 12 + namesz).unwrap_or_default();
            if name == b"Xen\0" && ntype == 18 {
                return Ok(());
            }
            pos += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    Err(bad("no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"))
}

const SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// Drops the appended signature of a kernel module.
///
/// Debian's kernels do not enforce signatures (outside Secure Boot lockdown), and checking
/// them in the TCG-emulated host took about 0.4 s of the 1 s spent loading modules.
pub fn strip_module_signature(module: &[u8]) -> &[u8] {
    let Some(body) = module.strip_suffix(SIG_MAGIC) else {
        return module;
    };
    // struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (BE).
    let Some(info_start) = body.len().checked_sub(12) else {
        return module;
    };
    let info = &body[info_start..];
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    let total = sig_len + usize::from(info[3]) + usize::from(info[4]);
    match info_start.checked_sub(total) {
        Some(end) => &body[..end],
        None => module,
    }
}

/// The modules of one unpacked kernel tree, with their dependencies from `modules.dep`.
pub struct ModuleTree {
    dir: PathBuf,
    /// Module name (dashes as underscores) -> (path relative to `dir`, dependency paths).
    deps: HashMap<String, (String, Vec<String>)>,
}

fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleTree {
    /// Runs `depmod -b` on an unpacked package (`root/lib/modules/<version>`) and reads the result.
    pub fn load(root: &Path, version: &str) -> Result<Self, Error> {
        require("depmod", "kmod")?;
        let out = Command::new("depmod")
            .arg("-b")
            .arg(root)
            .arg(version)
            .output()
            .map_err(|source| Error::Spawn {
                command: "depmod".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::ToolFailed {
                command: format!("depmod -b {} {version}", root.display()),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let dir = root.join("lib/modules").join(version);
        let dep_file = dir.join("modules.dep");
        let text = std::fs::read_to_string(&dep_file).map_err(Error::io("reading", &dep_file))?;
        Ok(Self::parse(dir, &text))
    }

    fn parse(dir: PathBuf, text: &str) -> Self {
        let mut deps = HashMap::new();
        for line in text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let list = rest.split_whitespace().map(str::to_owned).collect();
            deps.insert(module_name(module), (module.to_owned(), list));
        }
        Self { dir, deps }
    }

    /// Resolves `wanted` in order, each preceded by its not-yet-listed dependencies.
    /// Names in `optional` are skipped when absent; any other absent name is an error.
    /// Returns paths relative to the tree.
    pub fn resolve(&self, wanted: &[&str], optional: &[&str]) -> Result<Vec<String>, Error> {
        let by_path: HashMap<&str, &Vec<String>> =
            self.deps.values().map(|(p, d)| (p.as_str(), d)).collect();
        let mut out: Vec<String> = Vec::new();
        for name in wanted {
            let Some((path, _)) = self.deps.get(&name.replace('-', "_")) else {
                if optional.contains(name) {
                    continue;
                }
                return Err(Error::MissingModule {
                    module: (*name).to_owned(),
                    tree: self.dir.clone(),
                });
            };
            // modules.dep lists the full closure, deepest last: load it in reverse.
            let closure = by_path
                .get(path.as_str())
                .map(|d| d.as_slice())
                .unwrap_or_default();
            for p in closure.iter().rev().chain(std::iter::once(path)) {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        Ok(out)
    }

    /// Reads one module (relative path from [`resolve`](Self::resolve)) without its signature.
    pub fn read_stripped(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let path = self.dir.join(rel);
        let bytes = std::fs::read(&path).map_err(Error::io("reading", &path))?;
        Ok(strip_module_signature(&bytes).to_vec())
    }

    /// The file name a module gets in the initramfs.
    pub fn file_name(rel: &str) -> &str {
        rel.rsplit('/').next().unwrap_or(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dependencies_before_modules() {
        let dep = "kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n\
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n\
kernel/virt/lib/irqbypass.ko:\n\
kernel/drivers/crypto/ccp/ccp.ko:\n";
        let tree = ModuleTree::parse(PathBuf::from("/x"), dep);
        let got = tree.resolve(&["kvm-amd", "pvpanic"], &["pvpanic"]).unwrap();
        assert_eq!(
            got,
            [
                "kernel/virt/lib/irqbypass.ko",
                "kernel/arch/x86/kvm/kvm.ko",
                "kernel/drivers/crypto/ccp/ccp.ko",
                "kernel/arch/x86/kvm/kvm-amd.ko"
            ]
        );
        assert!(matches!(
            tree.resolve(&["nope"], &[]),
            Err(Error::MissingModule { .. })
        ));
    }

    #[test]
    fn strips_signature() {
        let mut m = b"\x7fELFbody".to_vec();
        let sig = [0xaa; 5];
        m.extend_from_slice(&sig);
        m.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        m.extend_from_slice(SIG_MAGIC);
        assert_eq!(strip_module_signature(&m), b"\x7fELFbody");
        assert_eq!(strip_module_signature(b"plain"), b"plain");
        // A lying length must not panic.
        let mut bad = b"x".to_vec();
        bad.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        bad.extend_from_slice(SIG_MAGIC);
        assert_eq!(strip_module_signature(&bad), &bad[..]);
    }

    #[test]
    fn rejects_non_bzimage_and_non_elf() {
        let p = Path::new("x");
        assert!(bzimage_payload(p, &[0; 4096]).is_err());
        assert!(check_pvh_elf(
            p,
            b"not an elf at all, not at all, not at all, not at all, not!!"
        )
        .is_err());
    }
}
