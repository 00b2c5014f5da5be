//! Building and caching the emulated host's and the test guest's kernels and initramfs
//! images from Debian packages.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use crate::cpio::Cpio;
use crate::kernel::{self, ModuleTree};
use crate::tools::{self, require, write_atomic};
use crate::Error;

/// Bump when the build recipe changes in a way the input hash below does not see.
const RECIPE_VERSION: u32 = 1;

const HOST_INIT: &str = include_str!("init/host.sh");
/// The emulated host's idle VM (`/bin/fv-kvm-hold`, which its init starts).
const KVM_HOLD_SRC: &str = include_str!("init/kvm-hold.S");
const GUEST_INIT: &str = include_str!("init/guest.sh");

/// The emulated host's modules, in load order (machine.md); dependencies come first
/// automatically. The outer machine is a microvm, so virtio-mmio replaces virtio-pci.
const HOST_MODULES: &[&str] = &[
    "irqbypass",
    "ccp",
    "kvm",
    "kvm-amd",
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
    "tun",
    "bridge",
    "8021q",
    "dummy",
    "crc32c_generic",
    "nf_tables",
    "nft_meta_bridge",
];
/// Network tests need taps, bridges, VLANs (fvd's VLAN.create), dummy links (a stand-in
/// for a physical NIC) and nf_tables (fvd's VIF locking: the bridge family's chains are in
/// nf_tables itself, its `meta` expressions in nft_meta_bridge; libcrc32c, which nf_tables
/// needs, wants a crc32c first, a soft dependency modules.dep does not list); the host
/// still works without them.
const HOST_OPTIONAL: &[&str] = &[
    "tun",
    "bridge",
    "8021q",
    "dummy",
    "crc32c_generic",
    "nf_tables",
    "nft_meta_bridge",
];
/// Storage tests need loop devices, device-mapper with classic snapshots (fvd's lvm SRs),
/// the NFS server and client (nfs SRs). In the initrd always, loaded only by the tests that
/// ask ([`crate::load_storage_modules`]): loading them at every boot cost 0.6-1 s under TCG.
const HOST_STORAGE_MODULES: &[&str] = &["loop", "dm_mod", "dm_snapshot", "nfsd", "nfsv4"];
/// The NIC driver for port forwarding (`RunOptions::forward`), dependencies included
/// (failover, net_failover). In the initrd always, loaded only when a run forwards ports,
/// so that other runs do not pay for it.
const HOST_NET_MODULES: &[&str] = &["virtio_net"];

/// The guest's modules: virtio transports and devices (vsock's `vsock` and
/// `vmw_vsock_virtio_transport_common` come in as dependencies), the pvpanic driver (ACPI
/// "QEMU0001" is matched by pvpanic-mmio), then the ACPI power button (`PNP0C0C`, which
/// fv-vmm's Generic Event Device notifies) and evdev, through which busybox acpid sees its
/// KEY_POWER. All optional: a kernel may build them in.
const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio-rng",
    "virtio_console",
    "virtio_balloon",
    "vmw_vsock_virtio_transport",
    "pvpanic",
    "pvpanic-mmio",
    "evdev",
    "button",
];

/// Whether `guest-initrd` names the gzip-compressed image. Measured inside the emulated host
/// (docs/testhost.md): no measurable difference, and the plain cpio is simpler to load.
const GUEST_INITRD_GZIP: bool = false;

/// One artifact, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactName {
    HostKernel,
    HostInitrd,
    GuestBzImage,
    GuestVmlinux,
    GuestInitrd,
}

impl ArtifactName {
    pub const ALL: [ArtifactName; 5] = [
        ArtifactName::HostKernel,
        ArtifactName::HostInitrd,
        ArtifactName::GuestBzImage,
        ArtifactName::GuestVmlinux,
        ArtifactName::GuestInitrd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactName::HostKernel => "host-kernel",
            ArtifactName::HostInitrd => "host-initrd",
            ArtifactName::GuestBzImage => "guest-bzimage",
            ArtifactName::GuestVmlinux => "guest-vmlinux",
            ArtifactName::GuestInitrd => "guest-initrd",
        }
    }
}

impl FromStr for ArtifactName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|a| a.as_str()).collect();
                Error::InvalidArgument(format!(
                    "unknown artifact `{s}` (one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Paths of the built artifacts; all files exist once [`Artifacts::prepare`] returns.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The generic kernel as an ELF with a PVH note (booting it skips XZ under TCG).
    pub host_kernel: PathBuf,
    pub host_initrd: PathBuf,
    pub guest_bzimage: PathBuf,
    pub guest_vmlinux: PathBuf,
    /// The guest initramfs the tests use (see [`GUEST_INITRD_GZIP`]).
    pub guest_initrd: PathBuf,
    pub guest_initrd_cpio: PathBuf,
    pub guest_initrd_gz: PathBuf,
    /// Debian package versions the artifacts come from.
    pub host_package: String,
    pub guest_package: String,
}

/// The cache directory: `$FV_TESTHOST_CACHE`, else `<workspace>/.cache/testhost`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("FV_TESTHOST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testhost"),
    }
}

/// A Debian kernel image package picked for building.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Package {
    name: String,
    version: String,
}

impl Package {
    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    fn kernel_release(&self) -> &str {
        self.name.trim_start_matches("linux-image-")
    }
    fn key(&self) -> String {
        format!("{}_{}", self.kernel_release(), self.version)
    }
}

/// 64-bit FNV-1a: a stable hash for cache keys (std's hasher may change between releases).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn busybox() -> Result<(PathBuf, String), Error> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(Error::MissingTool {
            tool: "busybox",
            package: "busybox-static",
        })?;
    let meta = fs::metadata(&path).map_err(Error::io("reading", &path))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Ok((path, format!("{}:{mtime}", meta.len())))
}

/// Builds the hash that names an initramfs: anything that changes its bytes changes it.
fn initrd_key(init: &str, modules: &[&str], busybox_id: &str) -> String {
    let mods = modules.join(" ");
    format!(
        "{:016x}",
        fnv(&[
            &RECIPE_VERSION.to_le_bytes(),
            init.as_bytes(),
            mods.as_bytes(),
            busybox_id.as_bytes()
        ])
    )
}

impl Artifacts {
    /// Builds whatever is missing in [`cache_dir`] and returns the paths.
    pub fn prepare() -> Result<Self, Error> {
        Self::prepare_in(&cache_dir())
    }

    /// Like [`prepare`](Self::prepare) with an explicit cache directory.
    pub fn prepare_in(dir: &Path) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let dir = dir.canonicalize().map_err(Error::io("resolving", dir))?;
        let (host, guest) = resolve_packages(&dir)?;
        let (busybox, busybox_id) = busybox()?;
        let host_dir = dir.join(format!("host-{}", host.key()));
        let guest_dir = dir.join(format!("guest-{}", guest.key()));
        let host_key = initrd_key(
            &format!("{HOST_INIT}{KVM_HOLD_SRC}"),
            &[HOST_MODULES, HOST_NET_MODULES, HOST_STORAGE_MODULES].concat(),
            &busybox_id,
        );
        let guest_key = initrd_key(GUEST_INIT, GUEST_MODULES, &busybox_id);
        let guest_cpio = guest_dir.join(format!("initrd-{guest_key}.cpio"));
        let guest_gz = guest_dir.join(format!("initrd-{guest_key}.cpio.gz"));
        let a = Artifacts {
            host_kernel: host_dir.join("vmlinux"),
            host_initrd: host_dir.join(format!("initrd-{host_key}.cpio")),
            guest_bzimage: guest_dir.join("bzImage"),
            guest_vmlinux: guest_dir.join("vmlinux"),
            guest_initrd: if GUEST_INITRD_GZIP {
                guest_gz.clone()
            } else {
                guest_cpio.clone()
            },
            guest_initrd_cpio: guest_cpio,
            guest_initrd_gz: guest_gz,
            host_package: format!("{}={}", host.name, host.version),
            guest_package: format!("{}={}", guest.name, guest.version),
        };
        let host_ready = || a.host_kernel.is_file() && a.host_initrd.is_file();
        let guest_ready = || {
            [
                &a.guest_bzimage,
                &a.guest_vmlinux,
                &a.guest_initrd_cpio,
                &a.guest_initrd_gz,
            ]
            .iter()
            .all(|p| p.is_file())
        };
        if host_ready() && guest_ready() {
            return Ok(a);
        }
        // Serialise builders (parallel test processes); whoever waited re-checks first.
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(Error::io("creating", &lock_path))?;
        lock.lock().map_err(Error::io("locking", &lock_path))?;
        if !host_ready() {
            with_unpacked(&dir, &host, |root| build_host(root, &host, &busybox, &a))?;
        }
        if !guest_ready() {
            with_unpacked(&dir, &guest, |root| build_guest(root, &guest, &busybox, &a))?;
        }
        Ok(a)
    }

    pub fn path(&self, name: ArtifactName) -> &Path {
        match name {
            ArtifactName::HostKernel => &self.host_kernel,
            ArtifactName::HostInitrd => &self.host_initrd,
            ArtifactName::GuestBzImage => &self.guest_bzimage,
            ArtifactName::GuestVmlinux => &self.guest_vmlinux,
            ArtifactName::GuestInitrd => &self.guest_initrd,
        }
    }
}

/// Picks the newest 6.1 generic and cloud kernel packages.
///
/// apt-cache takes about 0.7 s per call here, so the answer is remembered together with the
/// mtime of apt's lists directory, which `apt-get update` changes. Offline (apt fails) the
/// last answer is used.
fn resolve_packages(dir: &Path) -> Result<(Package, Package), Error> {
    let lists = Path::new("/var/lib/apt/lists");
    let stamp = fs::metadata(lists)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_else(|| "none".into());
    let memo = dir.join("packages");
    let previous = fs::read_to_string(&memo).ok().and_then(|text| {
        let f: Vec<&str> = text.split_whitespace().collect();
        let pkg = |i: usize| Package {
            name: f[i].to_owned(),
            version: f[i + 1].to_owned(),
        };
        (f.len() == 5).then(|| (f[0] == stamp, pkg(1), pkg(3)))
    });
    if let Some((true, host, guest)) = &previous {
        return Ok((host.clone(), guest.clone()));
    }
    match query_apt() {
        Ok((host, guest)) => {
            let text = format!(
                "{stamp} {} {} {} {}\n",
                host.name, host.version, guest.name, guest.version
            );
            write_atomic(&memo, text.as_bytes())?;
            Ok((host, guest))
        }
        Err(e) => match previous {
            Some((_, host, guest)) => Ok((host, guest)),
            None => Err(e),
        },
    }
}

fn query_apt() -> Result<(Package, Package), Error> {
    require("apt-cache", "apt")?;
    let out = tools::run(Command::new("apt-cache").args([
        "depends",
        "linux-image-amd64",
        "linux-image-cloud-amd64",
    ]))?;
    let text = String::from_utf8_lossy(&out);
    let pick = |what: &'static str, suffix: &str| -> Result<String, Error> {
        let is_match = |name: &str| {
            name.strip_prefix("linux-image-6.1.0-")
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|abi| !abi.is_empty() && abi.bytes().all(|b| b.is_ascii_digit()))
        };
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(str::trim)
            .find(|name| is_match(name))
            .map(str::to_owned)
            .ok_or_else(|| Error::NoKernelPackage {
                what,
                detail: format!(
                    "no linux-image-6.1.0-N{suffix} dependency in `apt-cache depends`: {text}"
                ),
            })
    };
    let host = pick("generic (linux-image-amd64)", "-amd64")?;
    let guest = pick("cloud (linux-image-cloud-amd64)", "-cloud-amd64")?;
    let out =
        tools::run(Command::new("apt-cache").args(["show", "--no-all-versions", &host, &guest]))?;
    let text = String::from_utf8_lossy(&out);
    let version = |name: &str| -> Result<String, Error> {
        let mut current = "";
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                current = p.trim();
            } else if let Some(v) = line.strip_prefix("Version: ") {
                if current == name {
                    return Ok(v.trim().to_owned());
                }
            }
        }
        Err(Error::NoKernelPackage {
            what: "version",
            detail: format!("`apt-cache show {name}` gave no version"),
        })
    };
    Ok((
        Package {
            version: version(&host)?,
            name: host,
        },
        Package {
            version: version(&guest)?,
            name: guest,
        },
    ))
}

/// Downloads and unpacks a package into a scratch directory, calls `f`, then cleans up (the
/// unpacked generic kernel is about 400 MB; only the built artifacts are kept).
fn with_unpacked(
    dir: &Path,
    pkg: &Package,
    f: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<(), Error> {
    require("apt-get", "apt")?;
    require("dpkg", "dpkg")?;
    let work = dir.join(format!("work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(Error::io("creating", &work))?;
    let result = (|| {
        tools::run(
            Command::new("apt-get")
                .args(["download", "-q", &format!("{}={}", pkg.name, pkg.version)])
                .current_dir(&work),
        )?;
        let deb = fs::read_dir(&work)
            .map_err(Error::io("listing", &work))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .ok_or_else(|| Error::NoKernelPackage {
                what: "download",
                detail: format!("apt-get download {} left no .deb", pkg.name),
            })?;
        let root = work.join("root");
        tools::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        f(&root)
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// The start of every initramfs: directories, the console node and busybox with its applets.
fn base_initramfs(busybox: &Path, dirs: &[&str]) -> Result<Cpio, Error> {
    let bin = fs::read(busybox).map_err(Error::io("reading", busybox))?;
    let list = tools::run(Command::new(busybox).arg("--list"))?;
    let mut c = Cpio::new();
    for d in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/lib",
        "/lib/modules",
        "/tmp",
    ]
    .iter()
    .chain(dirs)
    {
        c.dir(d);
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs exists.
    c.char_dev("/dev/console", 0o600, 5, 1);
    c.file("/bin/busybox", 0o755, &bin);
    for applet in String::from_utf8_lossy(&list).split_whitespace() {
        if applet != "busybox" {
            c.symlink(&format!("/bin/{applet}"), "busybox");
        }
    }
    Ok(c)
}

/// Adds the resolved modules and the init script, in which each group's placeholder
/// (`@MODULES@`) becomes the list of its modules in load order.
fn add_modules_and_init(
    c: &mut Cpio,
    tree: &ModuleTree,
    groups: &[(&str, &[String])],
    init: &str,
) -> Result<(), Error> {
    let mut init = init.to_owned();
    for (placeholder, rels) in groups {
        let mut names = Vec::new();
        for rel in *rels {
            let name = ModuleTree::file_name(rel);
            c.file(
                &format!("/lib/modules/{name}"),
                0o644,
                &tree.read_stripped(rel)?,
            );
            names.push(name);
        }
        init = init.replace(placeholder, &names.join(" "));
    }
    c.file("/init", 0o755, init.as_bytes());
    Ok(())
}

fn vmlinuz_path(root: &Path, pkg: &Package) -> PathBuf {
    root.join("boot")
        .join(format!("vmlinuz-{}", pkg.kernel_release()))
}

fn extract_vmlinux(bzimage: &Path) -> Result<Vec<u8>, Error> {
    let image = fs::read(bzimage).map_err(Error::io("reading", bzimage))?;
    let (payload, kind) = kernel::bzimage_payload(bzimage, &image)?;
    let elf = kernel::decompress(kind, payload)?;
    kernel::check_pvh_elf(bzimage, &elf)?;
    Ok(elf)
}

fn build_host(root: &Path, pkg: &Package, busybox: &Path, a: &Artifacts) -> Result<(), Error> {
    let out_dir = a.host_kernel.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(out_dir).map_err(Error::io("creating", out_dir))?;
    if !a.host_kernel.is_file() {
        write_atomic(&a.host_kernel, &extract_vmlinux(&vmlinuz_path(root, pkg))?)?;
    }
    let tree = ModuleTree::load(root, pkg.kernel_release())?;
    let rels = tree.resolve(HOST_MODULES, HOST_OPTIONAL)?;
    // What the always-loaded set has (virtio, virtio_ring) is not loaded twice.
    let net: Vec<String> = tree
        .resolve(HOST_NET_MODULES, &[])?
        .into_iter()
        .filter(|m| !rels.contains(m))
        .collect();
    let storage: Vec<String> = tree
        .resolve(HOST_STORAGE_MODULES, HOST_STORAGE_MODULES)?
        .into_iter()
        .filter(|m| !rels.contains(m) && !net.contains(m))
        .collect();
    let mut c = base_initramfs(busybox, &["/host"])?;
    let groups: [(&str, &[String]); 3] = [
        ("@MODULES@", &rels),
        ("@NET_MODULES@", &net),
        ("@STORAGE_MODULES@", &storage),
    ];
    add_modules_and_init(&mut c, &tree, &groups, HOST_INIT)?;
    c.file("/bin/fv-kvm-hold", 0o755, &assemble_kvm_hold(out_dir)?);
    write_atomic(&a.host_initrd, &c.finish())
}

/// `init/kvm-hold.S` assembled and linked (binutils, as the tiny guests are) into a
/// static x86-64 program.
fn assemble_kvm_hold(work_dir: &Path) -> Result<Vec<u8>, Error> {
    let as_ = require("as", "binutils")?;
    let ld = require("ld", "binutils")?;
    let pid = std::process::id();
    let src = work_dir.join(format!("kvm-hold.{pid}.S"));
    let obj = work_dir.join(format!("kvm-hold.{pid}.o"));
    let exe = work_dir.join(format!("kvm-hold.{pid}"));
    fs::write(&src, KVM_HOLD_SRC).map_err(Error::io("writing", &src))?;
    let built = tools::run(Command::new(as_).arg("--64").arg("-o").arg(&obj).arg(&src))
        .and_then(|_| {
            tools::run(
                Command::new(ld)
                    .args(["-static", "-nostdlib", "-o"])
                    .arg(&exe)
                    .arg(&obj),
            )
        })
        .and_then(|_| fs::read(&exe).map_err(Error::io("reading", &exe)));
    for f in [&src, &obj, &exe] {
        let _ = fs::remove_file(f);
    }
    built
}

fn build_guest(root: &Path, pkg: &Package, busybox: &Path, a: &Artifacts) -> Result<(), Error> {
    let out_dir = a.guest_bzimage.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(out_dir).map_err(Error::io("creating", out_dir))?;
    let vmlinuz = vmlinuz_path(root, pkg);
    if !a.guest_vmlinux.is_file() {
        write_atomic(&a.guest_vmlinux, &extract_vmlinux(&vmlinuz)?)?;
    }
    if !a.guest_bzimage.is_file() {
        let image = fs::read(&vmlinuz).map_err(Error::io("reading", &vmlinuz))?;
        write_atomic(&a.guest_bzimage, &image)?;
    }
    let tree = ModuleTree::load(root, pkg.kernel_release())?;
    let rels = tree.resolve(GUEST_MODULES, GUEST_MODULES)?;
    let mut c = base_initramfs(busybox, &["/root", "/etc"])?;
    add_modules_and_init(&mut c, &tree, &[("@MODULES@", &rels)], GUEST_INIT)?;
    let cpio = c.finish();
    write_atomic(&a.guest_initrd_cpio, &cpio)?;
    require("gzip", "gzip")?;
    let tmp = a
        .guest_initrd_gz
        .with_extension(format!("tmp.{}", std::process::id()));
    let file = File::create(&tmp).map_err(Error::io("creating", &tmp))?;
    tools::run(
        Command::new("gzip")
            .args(["-c", "-n", "-9"])
            .arg(&a.guest_initrd_cpio)
            .stdout(file),
    )?;
    fs::rename(&tmp, &a.guest_initrd_gz)
        .map_err(Error::io("renaming into place", &a.guest_initrd_gz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_round_trip() {
        for a in ArtifactName::ALL {
            assert_eq!(a.as_str().parse::<ArtifactName>().unwrap(), a);
        }
        assert!("nope".parse::<ArtifactName>().is_err());
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv(&[b"a"]), fnv(&[b"a"]));
        assert_ne!(fnv(&[b"ab"]), fnv(&[b"a", b"b"]));
    }
}
