//! Starting the daemon: the data directory, the database and its first records, the
//! VMs that kept running while fvd was away, then the listeners.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use fv_xapi::auth::Cost;
use fv_xapi::db::Db;
use fv_xapi::Api;
use tokio::net::{TcpListener, UnixListener};

use crate::dhcp::Dhcp;
use crate::error::Error;
use crate::metrics::{self, Metrics};
use crate::options::Options;
use crate::vm::{Vms, CLEAN_SHUTDOWN_TIMEOUT};
use crate::{bootstrap, console, listen, rpc, tls, transfer, web};

/// The running daemon's state.
#[derive(Clone)]
pub struct Daemon {
    pub api: Api,
    pub host: String,
}

/// Prepares everything but the listeners: data directory, database, first records, and
/// the VMs found running. Must run inside the tokio runtime (VM exits are watched there).
pub fn start(options: &Options) -> Result<Daemon, Error> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("setting the mode of", dir))?;
    crate::storage::set_mount_root(dir.join("sr-mount"));
    let run_root = options.run_root();
    std::fs::create_dir_all(&run_root).map_err(Error::io("creating", &run_root))?;

    let db = Db::open(options.db_path()).map_err(Error::Db)?;
    let vms = Vms::new(
        dir,
        options.fv_vmm_path(),
        run_root,
        tokio::runtime::Handle::current(),
        CLEAN_SHUTDOWN_TIMEOUT,
    );
    let api = Api::new(db, Cost::Default, Arc::new(vms.clone()))
        .map_err(|e| Error::Setup(format!("{e:?}")))?;
    bootstrap::root_user(&api, dir)?;
    let host = bootstrap::host_and_pool(&api)?;
    bootstrap::defaults(&api, &host, dir)?;
    if let Some(template_dir) = &options.template_dir {
        bootstrap::default_template(&api, dir, template_dir)?;
    }
    vms.attach(api.clone(), host.clone());
    vms.reconcile()
        .map_err(|e| Error::Setup(format!("reconciling VMs: {e:?}")))?;
    crate::storage::replug(api.db());
    // Managed networks' DHCP servers: those still running are adopted.
    api.db()
        .read(|tx| Dhcp::new(dir).restore(tx))
        .map_err(|e| Error::Setup(format!("DHCP servers: {e:?}")))?;
    // Coalescing a crash or a running VM held up goes on.
    let sr_dirs = api
        .db()
        .read(|tx| {
            let mut dirs = Vec::new();
            for sr in tx.refs("SR")? {
                if let Ok(dir) = crate::vm::sr_path(tx, &sr) {
                    dirs.push(dir);
                }
            }
            Ok(dirs)
        })
        .map_err(|e| Error::Setup(format!("{e:?}")))?;
    for dir in sr_dirs {
        // What a crash interrupted (a snapshot, a coalesce) is finished or undone first:
        // its temporary files would otherwise stop the coalesce.
        match fv_sr::FileSr::open(&dir).and_then(|sr| sr.recover()) {
            Ok(_) => crate::storage::coalesce_in_background(api.clone(), dir),
            Err(e) => tracing::warn!("SR at {}: recovery failed: {e}", dir.display()),
        }
    }
    // Only now, with the SRs recovered, can a disk the last fvd left held be reopened.
    vms.reopen_held_disks();
    Ok(Daemon { api, host })
}

/// Runs fvd until SIGTERM or SIGINT. VMs keep running after it returns.
pub async fn run(options: Options) -> Result<(), Error> {
    let daemon = start(&options)?;
    let metrics = Metrics::start(
        &daemon.api,
        &daemon.host,
        &options.data_dir,
        options.run_root(),
    );
    let router = rpc::router(daemon.api.clone())
        .merge(metrics::routes(daemon.api.clone(), metrics.clone()))
        .merge(transfer::routes(daemon.api.clone()))
        .merge(console::routes(daemon.api.clone(), options.run_root()))
        .merge(web::routes());
    if !web::embedded() {
        tracing::warn!("this fvd was built without its web console: run scripts/build-web.sh, then build fvd again");
    }

    let tls = if options.insecure_http {
        None
    } else {
        let names = vec![hostname(), "localhost".to_owned()];
        tls::ensure_certificate(&options.data_dir, &names)?;
        Some(tls::acceptor(&options.data_dir)?)
    };
    let tcp = TcpListener::bind(options.listen)
        .await
        .map_err(Error::io("listening on", options.listen.to_string()))?;
    let socket = options.socket_path();
    // A socket left by an earlier fvd: nobody can be listening on it (we hold the data
    // directory's database), so it is replaced.
    let _ = std::fs::remove_file(&socket);
    let unix = UnixListener::bind(&socket).map_err(Error::io("listening on", &socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("setting the mode of", &socket))?;
    tracing::info!(
        "fvd ready: {}://{} and {}",
        if tls.is_some() { "https" } else { "http" },
        tcp.local_addr()
            .map_or_else(|_| options.listen.to_string(), |a| a.to_string()),
        socket.display()
    );
    tokio::spawn(listen::serve_tcp(tcp, router.clone(), tls));
    // Requests on the local socket are marked: /metrics needs no login there.
    tokio::spawn(listen::serve_unix(
        unix,
        router.layer(axum::Extension(metrics::LocalSocket)),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("handling", "SIGTERM"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("fvd stopping; running VMs carry on");
    let _ = tokio::task::spawn_blocking(move || metrics.stop()).await;
    // Managed networks' DHCP servers stop with fvd (its next start makes them again).
    let dhcp = Dhcp::new(&options.data_dir);
    let _ = tokio::task::spawn_blocking(move || dhcp.stop_all()).await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}
