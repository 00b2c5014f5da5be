//! Command-line options.

use std::net::SocketAddr;
use std::path::PathBuf;

/// fvd: Ferrovisor's control daemon (XenAPI over HTTPS, one fv-vmm per running VM).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fvd", version)]
pub struct Options {
    /// Where the database, TLS certificate, root password and VM run directories live.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ferrovisor")]
    pub data_dir: PathBuf,
    /// The API's TCP address.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:443")]
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS on --listen (local use and tests only).
    #[arg(long)]
    pub insecure_http: bool,
    /// The local API socket (for the `fv` CLI); default DATA_DIR/fvd.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A directory with a kernel (`vmlinuz`, a bzImage, or `vmlinux`, an ELF), `initrd.img`
    /// and `rootfs.img` (raw ext4): at the first
    /// start with it, fvd makes the ready template "Debian 12 (busybox root)" from them
    /// (`fv-testhost template-dir DIR` builds one from Debian's packages).
    #[arg(long, value_name = "DIR")]
    pub template_dir: Option<PathBuf>,
    /// The fv-vmm binary; default: `fv-vmm` beside fvd, else from PATH.
    #[arg(long, value_name = "PATH")]
    pub fv_vmm: Option<PathBuf>,
}

impl Options {
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("fvd.sock"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("xapi.db")
    }

    /// Each running VM's fv-vmm has a directory here, named by the VM's uuid.
    pub fn run_root(&self) -> PathBuf {
        self.data_dir.join("vms")
    }

    pub fn fv_vmm_path(&self) -> PathBuf {
        if let Some(p) = &self.fv_vmm {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("fv-vmm")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("fv-vmm"))
    }
}
