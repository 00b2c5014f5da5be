//! What a first start creates, and what every start checks: the root user, the pool and
//! this host with its metrics.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fv_xapi::{Api, Value};

use crate::error::Error;

/// The environment variable that gives root's password at first start.
pub const ROOT_PASSWORD_ENV: &str = "FV_ROOT_PASSWORD";
/// Where a generated root password is written (mode 0600) when none was given.
pub const ROOT_PASSWORD_FILE: &str = "root-password";

fn setup(e: impl std::fmt::Display) -> Error {
    Error::Setup(e.to_string())
}

/// Creates `root` on the first start: with `$FV_ROOT_PASSWORD`, or a generated password
/// written to DATA_DIR/root-password (mode 0600). Later starts change nothing.
pub fn root_user(api: &Api, data_dir: &Path) -> Result<(), Error> {
    if fv_xapi::auth::user_ref(api.db(), "root")
        .map_err(setup)?
        .is_some()
    {
        return Ok(());
    }
    let password = match std::env::var(ROOT_PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let password = random_password()?;
            let path = data_dir.join(ROOT_PASSWORD_FILE);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(Error::io("creating", &path))?;
            writeln!(file, "{password}").map_err(Error::io("writing", &path))?;
            tracing::info!("root's password is in {}", path.display());
            password
        }
    };
    api.auth()
        .bootstrap_root(api.db(), &password)
        .map_err(setup)?;
    Ok(())
}

/// 20 characters from a 64-letter alphabet: 120 bits.
fn random_password() -> Result<String, Error> {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| Error::Setup(format!("no randomness: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| LETTERS[usize::from(b % 64)] as char)
        .collect())
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), s(v))).collect())
}

/// The host's name, from the kernel.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// `/proc/meminfo`'s `key` in bytes.
pub fn meminfo_bytes(key: &str) -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<i64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Finds this host's record, creating the pool, the host and its metrics on the first
/// start. Returns the host's ref.
pub fn host_and_pool(api: &Api) -> Result<String, Error> {
    let existing = api.db().read(|tx| tx.refs("host")).map_err(setup)?;
    if let Some(host) = existing.first() {
        // A single-host pool: the one host is this one.
        return Ok(host.clone());
    }
    let name = hostname();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    api.db()
        .write(|tx| {
            let metrics = tx.create(
                "host_metrics",
                BTreeMap::from([
                    ("memory_total".into(), Value::Int(meminfo_bytes("MemTotal"))),
                    (
                        "memory_free".into(),
                        Value::Int(meminfo_bytes("MemAvailable")),
                    ),
                    ("live".into(), Value::Bool(true)),
                ]),
            )?;
            let host = tx.create(
                "host",
                BTreeMap::from([
                    ("name_label".into(), s(&name)),
                    ("hostname".into(), s(&name)),
                    ("address".into(), s("127.0.0.1")),
                    ("metrics".into(), s(&metrics)),
                    ("enabled".into(), Value::Bool(true)),
                    (
                        "software_version".into(),
                        map(&[
                            ("product_brand", "Ferrovisor"),
                            ("product_version", env!("CARGO_PKG_VERSION")),
                            ("xapi", "24.0"),
                            ("platform_name", "Ferrovisor"),
                        ]),
                    ),
                    (
                        "cpu_info".into(),
                        map(&[("cpu_count", &cpus.to_string()), ("vendor", "")]),
                    ),
                ]),
            )?;
            tx.create(
                "pool",
                BTreeMap::from([("name_label".into(), s("")), ("master".into(), s(&host))]),
            )?;
            Ok(host)
        })
        .map_err(setup)
}

/// The embedded defaults, made on the first start: a local file SR in DATA_DIR/sr/<uuid>
/// (the pool's default SR) and a host-internal network, as XenServer makes "Local
/// storage" and a host-internal management network. Later starts make each network's
/// bridge again (bridges do not survive a reboot of the host).
pub fn defaults(api: &Api, host: &str, data_dir: &Path) -> Result<(), Error> {
    let db = api.db();
    let has_sr = !db.read(|tx| tx.refs("SR")).map_err(setup)?.is_empty();
    if !has_sr {
        let uuid = fv_xapi::db::codec::new_uuid();
        let dir = data_dir.join("sr").join(&uuid);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        let path = dir.to_string_lossy().into_owned();
        db.write(|tx| {
            let sr = tx.create(
                "SR",
                BTreeMap::from([
                    ("uuid".into(), s(&uuid)),
                    ("name_label".into(), s("Local storage")),
                    (
                        "name_description".into(),
                        s("Files in fvd's data directory"),
                    ),
                    ("type".into(), s("ext")),
                    ("content_type".into(), s("user")),
                ]),
            )?;
            tx.create(
                "PBD",
                BTreeMap::from([
                    ("host".into(), s(host)),
                    ("SR".into(), s(&sr)),
                    ("device_config".into(), map(&[("path", &path)])),
                ]),
            )?;
            for pool in tx.refs("pool")? {
                tx.set("pool", &pool, "default_SR", s(&sr))?;
            }
            Ok(())
        })
        .map_err(setup)?;
    }
    let has_network = !db.read(|tx| tx.refs("network")).map_err(setup)?.is_empty();
    if !has_network {
        db.write(|tx| {
            let net = tx.create(
                "network",
                BTreeMap::from([
                    ("name_label".into(), s("Host internal network")),
                    (
                        "name_description".into(),
                        s("A bridge on this host only: VMs on it reach each other"),
                    ),
                ]),
            )?;
            crate::objects::network_created(tx, &net)
        })
        .map_err(setup)?;
    }
    // The SRs' sizes as they are now (another process may have used their filesystems).
    let srs = db.read(|tx| tx.refs("SR")).map_err(setup)?;
    for sr in srs {
        if let Err(e) = db.write(|tx| crate::storage::refresh_sr(tx, &sr)) {
            tracing::warn!("SR {sr}: cannot read its size: {e:?}");
        }
    }
    let bridges = db
        .read(|tx| {
            let mut out = Vec::new();
            for n in tx.refs("network")? {
                let bridge = tx
                    .get("network", &n, "bridge")?
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                out.push((bridge, crate::objects::network_mtu(tx, &n)?));
            }
            Ok(out)
        })
        .map_err(setup)?;
    for (bridge, mtu) in bridges.iter().filter(|(b, _)| !b.is_empty()) {
        crate::objects::ensure_bridge(bridge, *mtu).map_err(setup)?;
    }
    db.write(crate::network::restore).map_err(setup)?;
    Ok(())
}

/// The name of the template `--template-dir` makes.
pub const DEFAULT_TEMPLATE: &str = "Debian 12 (busybox root)";
/// Its `other_config` key, by which a later start knows it is there.
const DEFAULT_TEMPLATE_KEY: &str = "ferrovisor_default_template";

/// The kernel file names a template directory may hold, in the order they are looked for:
/// a bzImage, or an ELF vmlinux (entered through PVH when it has the note).
const TEMPLATE_KERNELS: [&str; 2] = ["vmlinuz", "vmlinux"];

/// Makes the ready template from `template_dir` (a kernel, `vmlinuz` or `vmlinux`;
/// `initrd.img`; `rootfs.img`) unless it exists: the kernel and initramfs are copied to DATA_DIR/boot, the root
/// filesystem into a VDI on the default SR; the template has that disk and a NIC on the
/// first network. `VM.clone` of it copies the disk: each VM gets its own root.
pub fn default_template(api: &Api, data_dir: &Path, template_dir: &Path) -> Result<(), Error> {
    let db = api.db();
    let exists = db
        .read(|tx| {
            for vm in tx.refs("VM")? {
                if let Value::Struct(m) = tx.get("VM", &vm, "other_config")? {
                    if m.contains_key(DEFAULT_TEMPLATE_KEY) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })
        .map_err(setup)?;
    if exists {
        return Ok(());
    }
    let boot = data_dir.join("boot");
    std::fs::create_dir_all(&boot).map_err(Error::io("creating", &boot))?;
    let kernel = TEMPLATE_KERNELS
        .into_iter()
        .find(|name| template_dir.join(name).is_file())
        .unwrap_or(TEMPLATE_KERNELS[0]);
    for name in [kernel, "initrd.img"] {
        let (from, to) = (template_dir.join(name), boot.join(name));
        std::fs::copy(&from, &to).map_err(Error::io("copying", &from))?;
    }
    let rootfs = template_dir.join("rootfs.img");
    let size = std::fs::metadata(&rootfs)
        .map_err(Error::io("reading", &rootfs))?
        .len();
    let text = |p: &Path| s(&p.to_string_lossy());
    let mib = 1i64 << 20;
    db.write(|tx| {
        let pool = tx.refs("pool")?.first().cloned().unwrap_or_default();
        let sr = tx.get("pool", &pool, "default_SR")?.as_str().unwrap_or_default().to_owned();
        let template = tx.create(
            "VM",
            BTreeMap::from([
                ("name_label".into(), s(DEFAULT_TEMPLATE)),
                (
                    "name_description".into(),
                    s("Debian's kernel and a small busybox root filesystem: a shell on the serial console"),
                ),
                ("is_a_template".into(), Value::Bool(true)),
                ("PV_kernel".into(), text(&boot.join(kernel))),
                ("PV_ramdisk".into(), text(&boot.join("initrd.img"))),
                ("PV_args".into(), s("console=ttyS0 quiet panic=-1 fv.root=/dev/vda")),
                ("memory_static_max".into(), Value::Int(256 * mib)),
                ("memory_dynamic_max".into(), Value::Int(256 * mib)),
                ("memory_dynamic_min".into(), Value::Int(256 * mib)),
                ("memory_static_min".into(), Value::Int(128 * mib)),
                ("other_config".into(), map(&[(DEFAULT_TEMPLATE_KEY, "true")])),
            ]),
        )?;
        crate::vm::refresh_allowed(tx, &template)?;
        let vdi = crate::storage::vdi_create(
            tx,
            &Value::Struct(BTreeMap::from([
                ("name_label".into(), s("Debian busybox root")),
                ("SR".into(), s(&sr)),
                ("virtual_size".into(), Value::Int(i64::try_from(size).unwrap_or(i64::MAX))),
                ("type".into(), s("system")),
            ])),
        )?;
        crate::storage::import_raw(tx, &vdi, &rootfs)?;
        tx.create(
            "VBD",
            BTreeMap::from([
                ("VM".into(), s(&template)),
                ("VDI".into(), s(&vdi)),
                ("userdevice".into(), s("0")),
                ("bootable".into(), Value::Bool(true)),
                ("mode".into(), s("RW")),
                ("type".into(), s("Disk")),
                ("empty".into(), Value::Bool(false)),
            ]),
        )?;
        if let Some(network) = tx.refs("network")?.first().cloned() {
            tx.create(
                "VIF",
                BTreeMap::from([
                    ("VM".into(), s(&template)),
                    ("network".into(), s(&network)),
                    ("device".into(), s("0")),
                    ("MAC".into(), s(&crate::vm::random_mac()?)),
                    ("MTU".into(), Value::Int(1500)),
                ]),
            )
            .and_then(|vif| tx.set("VIF", &vif, "MAC_autogenerated", Value::Bool(true)))?;
        }
        Ok(())
    })
    .map_err(setup)?;
    tracing::info!(
        "made the template {DEFAULT_TEMPLATE:?} from {}",
        template_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn meminfo_reads_bytes() {
        assert!(meminfo_bytes("MemTotal") > 1 << 20);
        assert_eq!(meminfo_bytes("NoSuchKey"), 0);
    }
}
