//! Starting a control-plane member (`orc server`, and the server inside
//! `orc up`): checks the data dir, bootstraps, joins or restarts, starts the
//! raft node and serves the API. The first leader of a new control plane
//! writes `InitControlPlane`, which creates the `default` cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::sync::watch;

use crate::api::trust::Security;
use crate::api::{self, ApiContext};
use crate::client::Client;
use crate::datadir::{self, DataDir, Marker};
use crate::raft::node::{self, RaftConfig, RaftHandle, Role};
use crate::raft::storage::SledStorage;
use crate::raft::transport::Transport;
use crate::store::{Command, Proposal, Store};
use crate::tls::ca::Authority;
use crate::tls::credential::{self, Credential};
use crate::vocab::principal::{Principal, Role as UserRole};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where the marker and the database live.
    pub data_dir: PathBuf,
    /// The address to listen on (`host:port`; port 0 picks one).
    pub listen: String,
    /// The address other servers and clients use; defaults to the listen address.
    pub advertise: Option<String>,
    /// Create a new control plane with this server as its only member.
    pub bootstrap: bool,
    /// Join the control plane that the server at this address belongs to.
    pub join: Option<String>,
    /// Heartbeat interval (the raft tick).
    pub heartbeat: Duration,
    /// Election time-out.
    pub election_timeout: Duration,
    /// Entries applied between log compactions.
    pub snapshot_threshold: u64,
    /// sled's page cache in MiB.
    pub cache_mib: u64,
    /// How long a write or read may wait for the quorum.
    pub request_timeout: Duration,
    /// Settings of the leader's control loops.
    pub controller: crate::controller::ControllerOptions,
    /// How many changes are kept for watchers to resume from.
    pub watch_history: usize,
    /// Caps on what a service may ask for.
    pub service_limits: crate::api::services::ServiceLimits,
    /// When the API listener closes idle connections.
    pub listener: crate::api::listener::ListenerOptions,
    /// Serve plain text (loopback only): no CA, no certificates.
    pub insecure: bool,
    /// The join token (`--join` of a fresh data dir).
    pub token: Option<String>,
}

impl ServerOptions {
    /// Defaults sized for a Raspberry Pi.
    pub fn new(data_dir: PathBuf, listen: String) -> ServerOptions {
        ServerOptions {
            data_dir,
            listen,
            advertise: None,
            bootstrap: false,
            join: None,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_threshold: 10_000,
            cache_mib: 8,
            request_timeout: Duration::from_secs(10),
            controller: crate::controller::ControllerOptions::default(),
            watch_history: crate::store::history::CAPACITY,
            service_limits: crate::api::services::ServiceLimits::default(),
            listener: crate::api::listener::ListenerOptions::default(),
            insecure: false,
            token: None,
        }
    }
}

/// A running server.
pub struct Server {
    /// The raft node.
    pub raft: RaftHandle,
    /// The address the listener is bound to.
    pub local_address: SocketAddr,
    /// The address advertised to peers.
    pub advertise: String,
    /// This member's id.
    pub node_id: u64,
    /// The CA and the listener's TLS (`None`: `--insecure`).
    pub security: Option<Arc<Security>>,
    /// Where bootstrap wrote the admin credential (a fresh secure bootstrap).
    pub admin_credential: Option<PathBuf>,
    /// Triggers a graceful stop of the listener.
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Stops serving.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Writes a checkpoint of everything applied so far, so that the next
    /// start loads it and replays no log (a graceful stop calls it, after
    /// `stop`). A failure only costs that replay: the raft log still holds
    /// every write, so it is logged, not returned.
    pub async fn checkpoint_before_exit(&self) {
        match self.raft.checkpoint().await {
            Ok(index) => tracing::info!(index, "wrote a state checkpoint before stopping"),
            Err(error) => {
                tracing::warn!(%error, "no state checkpoint before stopping: the next start replays the raft log")
            }
        }
    }

    /// Resolves when the server can no longer serve: removed from the
    /// control plane, or its raft node stopped (storage failed).
    pub async fn ended(&self) -> Ended {
        let mut status = self.raft.watch_status();
        let _ = status.wait_for(|s| s.removed || s.failed.is_some()).await;
        let status = status.borrow();
        match (&status.failed, status.removed) {
            (Some(reason), _) => Ended::Failed(reason.clone()),
            (None, true) => Ended::Removed,
            // The node's thread ended without saying why.
            (None, false) => Ended::Failed(
                "the raft node stopped unexpectedly; see the log above, then restart this server"
                    .into(),
            ),
        }
    }
}

/// How long a server whose storage failed keeps answering (refusing every
/// request with the reason, and showing it in `orc cluster status --local`)
/// before its process exits non-zero for the service manager to restart it.
pub const FAILED_LINGER: Duration = Duration::from_secs(5);

/// Why a server stopped serving.
#[derive(Clone, Debug, PartialEq)]
pub enum Ended {
    /// Removed from the control plane: a normal end.
    Removed,
    /// Its storage failed (the sentence names the data dir and the error):
    /// the process should exit non-zero so a service manager restarts it.
    Failed(String),
}

fn random_id() -> u64 {
    loop {
        let id = rand::random::<u64>() >> 1;
        if id != 0 {
            return id;
        }
    }
}

/// Starts a server as the options say.
pub async fn start(options: ServerOptions) -> anyhow::Result<Server> {
    match crate::api::listener::raise_descriptor_limit() {
        Ok(Some((old, new))) => {
            tracing::info!(old, new, "raised the open-file limit to the hard limit")
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let data_dir = DataDir::inspect(&options.data_dir)?;
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another orc already running there?",
                options.listen
            )
        })?;
    let local_address = listener.local_addr()?;
    if options.insecure && !local_address.ip().is_loopback() {
        bail!(
            "--insecure serves plain text, which is allowed only on loopback: listen on 127.0.0.1 (or ::1), or drop --insecure to serve TLS (the default)"
        );
    }
    let advertise = match &options.advertise {
        Some(address) => address.clone(),
        None if local_address.ip().is_unspecified() => {
            bail!("--listen {} binds every interface: pass --advertise HOST:PORT so peers know how to reach this server", options.listen)
        }
        None => local_address.to_string(),
    };

    let (marker, fresh_bootstrap) = match (&data_dir, options.bootstrap, &options.join) {
        (DataDir::Existing(path, marker), true, _) => bail!(
            "data dir {} already holds server {} of control plane {}: start it without --bootstrap to restart it, or point --data-dir at an empty directory to create a new control plane",
            path.display(), marker.node_id, marker.control_plane_id
        ),
        (DataDir::Fresh(_), true, Some(_)) => bail!("--bootstrap and --join exclude each other: bootstrap the first server, join the others"),
        (DataDir::Fresh(_), true, None) => (
            Marker { format: datadir::FORMAT, node_id: random_id(), control_plane_id: format!("{:016x}", rand::random::<u64>()) },
            true,
        ),
        (DataDir::Fresh(path), false, Some(join)) => {
            let node_id = random_id();
            if !options.insecure {
                join_with_token(path, join, options.token.as_deref(), node_id, &advertise).await?;
            }
            let client = Client::new(join)?;
            let answer = client
                .add_server(node_id, &advertise, "")
                .await
                .with_context(|| format!("cannot join the control plane at {join}"))?;
            tracing::info!(node = node_id, control_plane = %answer.cluster_id, "joined as a learner; catching up");
            (Marker { format: datadir::FORMAT, node_id, control_plane_id: answer.cluster_id }, false)
        }
        (DataDir::Fresh(path), false, None) => bail!(
            "data dir {} is empty: pass --bootstrap to start a new control plane, or --join HOST:PORT to join one",
            path.display()
        ),
        (DataDir::Existing(path, marker), false, join) => {
            if let Some(join) = join {
                // This server's own certificate, to ask the --join address.
                if let (false, Ok(own)) = (options.insecure, Credential::load(&credential::server_path(path))) {
                    crate::tls::set_process_identity(Some(own.client_tls()?));
                }
                verify_same_control_plane(join, marker).await?;
            }
            (marker.clone(), false)
        }
    };

    let security = if options.insecure {
        crate::tls::set_process_identity(None);
        None
    } else {
        Some(secure(
            data_dir.path(),
            &marker,
            fresh_bootstrap,
            &advertise,
        )?)
    };
    let admin_credential =
        (fresh_bootstrap && security.is_some()).then(|| credential::admin_path(data_dir.path()));

    let db = datadir::open_db(data_dir.path(), options.cache_mib)?;
    let store = Arc::new(Store::open_with_history(
        &db,
        &datadir::checkpoint_dir(data_dir.path()),
        options.watch_history,
    )?);
    let mut storage = SledStorage::open(&db, store.clone())?;
    storage.sync_files_in(&data_dir.path().join("db"))?;
    if fresh_bootstrap {
        storage.bootstrap(marker.node_id)?;
        store.advance_applied(1);
        store.checkpoint()?;
        storage.flush()?;
        datadir::write_marker(data_dir.path(), &marker)?;
    } else if matches!(data_dir, DataDir::Fresh(_)) {
        datadir::write_marker(data_dir.path(), &marker)?;
    }

    let transport = Transport::new(
        marker.node_id,
        advertise.clone(),
        marker.control_plane_id.clone(),
        tokio::runtime::Handle::current(),
    );
    let config = RaftConfig {
        node_id: marker.node_id,
        heartbeat_interval: options.heartbeat,
        election_timeout: options.election_timeout,
        snapshot_threshold: options.snapshot_threshold,
        request_timeout: options.request_timeout,
        data_dir: data_dir.path().to_path_buf(),
    };
    // The seal key: created at bootstrap, received with a token join
    // (`join_with_token` writes it), loaded on every restart; a server
    // joined --insecure makes its own and says so.
    let seal = match crate::seal::SealKey::load(data_dir.path())? {
        Some(key) => key,
        None => {
            if !fresh_bootstrap {
                tracing::warn!(
                    key = %crate::seal::key_path(data_dir.path()).display(),
                    "this server had no seal key and made its own: access keys and secrets sealed by the other servers cannot be opened here until it holds theirs (stop it, copy keys/seal.key from a server of the cluster, start it again)"
                );
            }
            crate::seal::SealKey::create(data_dir.path())?
        }
    };
    let raft = node::start(config, storage, store, transport.clone())?;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let listener_options = options.listener;
    let liveness = crate::controller::Liveness::default();
    let blobs = std::sync::Arc::new(crate::blobstore::BlobStore::open(data_dir.path())?);
    let blob_sync = std::sync::Arc::new(api::blobsync::BlobSync::new(raft.clone(), blobs.clone()));
    let context = ApiContext {
        raft: raft.clone(),
        transport,
        liveness: liveness.clone(),
        service_limits: options.service_limits,
        logs: Default::default(),
        blobs: blobs.clone(),
        blob_sync: blob_sync.clone(),
        seal,
        security: security.clone(),
    };
    tokio::spawn(api::blobsync::run(blob_sync, shutdown_rx.clone()));
    let tls = security.as_ref().map(|s| s.listener.clone());
    if let Some(security) = &security {
        tokio::spawn(renew_own_certificate(
            security.clone(),
            marker.node_id,
            advertise.clone(),
            shutdown.subscribe(),
        ));
        tokio::spawn(api::trust::follow_trust(
            context.clone(),
            marker.node_id,
            advertise.clone(),
            shutdown.subscribe(),
        ));
    }
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        };
        if let Err(error) = api::serve(listener, context, listener_options, tls, stop).await {
            tracing::error!(%error, "the API listener stopped");
        }
    });
    if fresh_bootstrap {
        raft.campaign()?;
    }
    tokio::spawn(initialize_when_leader(
        raft.clone(),
        marker.clone(),
        advertise.clone(),
    ));
    tokio::spawn(crate::controller::run(
        raft.clone(),
        liveness,
        options.controller.clone(),
    ));
    // Every server serves the load balancers' listeners (`balancer`).
    tokio::spawn(crate::balancer::run(
        vec![advertise.clone()],
        crate::proxy::ProxyOptions::default(),
        shutdown.subscribe(),
    ));
    tracing::info!(node = marker.node_id, control_plane = %marker.control_plane_id, address = %advertise, data_dir = %data_dir.path().display(), "server started");
    Ok(Server {
        raft,
        local_address,
        advertise,
        node_id: marker.node_id,
        security,
        admin_credential,
        shutdown,
    })
}

/// A server's TLS: on a fresh bootstrap, creates the cluster CA, this
/// server's certificate and the admin credential; otherwise loads what
/// bootstrap or the join wrote. Sets the process identity (this server's
/// certificate) for every connection it makes.
fn secure(
    data_dir: &std::path::Path,
    marker: &Marker,
    fresh_bootstrap: bool,
    advertise: &str,
) -> anyhow::Result<Arc<Security>> {
    let own = credential::server_path(data_dir);
    if fresh_bootstrap {
        let authority = Authority::create(&marker.control_plane_id)?;
        authority.save(data_dir)?;
        authority
            .server_credential(marker.node_id, advertise, authority.cert_pem.clone())?
            .save(&own)?;
        let admin = Principal::User {
            name: "admin".into(),
            role: UserRole::Admin,
        };
        // The admin credential is not renewed by anyone: a year.
        let (certificate, key) = authority.issue(&admin, ADMIN_CERT_LIFETIME)?;
        Credential {
            endpoint: advertise.to_string(),
            ca: authority.cert_pem.clone(),
            certificate,
            key,
        }
        .save(&credential::admin_path(data_dir))?;
    }
    let (Some(authority), true) = (Authority::load(data_dir)?, own.exists()) else {
        bail!(
            "data dir {} holds no certificate: it was started with --insecure (start it with --insecure again), or its tls/ directory was deleted",
            data_dir.display()
        );
    };
    let own = Credential::load(&own)?;
    crate::tls::set_process_identity(Some(own.client_tls()?));
    Ok(Arc::new(Security::new(
        data_dir.to_path_buf(),
        authority,
        &own,
    )?))
}

/// How long the admin credential written at bootstrap is valid.
pub const ADMIN_CERT_LIFETIME: Duration = crate::tls::ca::ADMIN_CERT_LIFETIME;

/// A joining server's first step, before it sends anything: pins the CA
/// fingerprint of `token` while connecting to `join`, then trades the token
/// for its certificate, the CA (with its key) and the seal key, and writes
/// them into `data_dir`.
async fn join_with_token(
    data_dir: &std::path::Path,
    join: &str,
    token: Option<&str>,
    node_id: u64,
    advertise: &str,
) -> anyhow::Result<()> {
    let (issued, key) = crate::client::join_cluster(join, token, "server", node_id)
        .await
        .with_context(|| format!("cannot join the control plane at {join}"))?;
    let authority = Authority {
        cert_pem: issued.ca.clone(),
        key_pem: issued.ca_key.clone(),
    };
    authority.save(data_dir)?;
    if !issued.seal_key.is_empty() {
        credential::write_private(&api::trust::seal_key_path(data_dir), &issued.seal_key)?;
    }
    // The certificate the join gave names the server by id; holding the CA
    // now, it issues itself one that also names its advertised address (so
    // `aws`, `docker` and curl accept it by that address), as it does at
    // every renewal. The joined key is dropped.
    drop(key);
    let own = authority.server_credential(node_id, advertise, issued.ca)?;
    own.save(&credential::server_path(data_dir))?;
    crate::tls::set_process_identity(Some(own.client_tls()?));
    tracing::info!(node = node_id, control_plane = %issued.cluster_id, "received this server's certificate and the cluster CA");
    Ok(())
}

/// Renews this server's certificate once two thirds of its life have
/// passed (it holds the CA: no call needed), and swaps it into the
/// listener and the process identity without a restart.
async fn renew_own_certificate(
    security: Arc<Security>,
    node_id: u64,
    advertise: String,
    mut stop: watch::Receiver<bool>,
) {
    let path = credential::server_path(&security.data_dir);
    loop {
        let Ok(current) = Credential::load(&path) else {
            return;
        };
        let now = crate::vocab::time::now_ms();
        if current.due_for_renewal(now) {
            let renewed = security
                .renew_own(node_id, &advertise)
                .map(|renewed| renewed.not_after_ms());
            match renewed {
                Ok(until) => tracing::info!(
                    node = node_id,
                    valid_until_ms = until,
                    "renewed this server's certificate"
                ),
                Err(error) => {
                    tracing::warn!(node = node_id, %error, "cannot renew this server's certificate; will retry")
                }
            }
            continue_after(&mut stop, Duration::from_secs(1)).await;
            if *stop.borrow() {
                return;
            }
            continue;
        }
        let life = current
            .not_after_ms()
            .saturating_sub(current.not_before_ms());
        let pause = Duration::from_millis((life / 20).clamp(1_000, 600_000));
        continue_after(&mut stop, pause).await;
        if *stop.borrow() {
            return;
        }
    }
}

/// Waits `pause`, or less when `stop` is set.
async fn continue_after(stop: &mut watch::Receiver<bool>, pause: Duration) {
    let _ = tokio::time::timeout(pause, stop.wait_for(|s| *s)).await;
}

async fn verify_same_control_plane(join: &str, marker: &Marker) -> anyhow::Result<()> {
    let mut client = Client::new(join)?;
    // Long enough for a loaded machine to answer; a --join address that is
    // down (a whole cluster rebooting) only delays the restart this much.
    client.retry_for = Duration::from_secs(5);
    match client.cluster_status(false).await {
        Ok(status) if !status.cluster_id.is_empty() && status.cluster_id != marker.control_plane_id => bail!(
            "this data dir belongs to control plane {} but {join} serves control plane {}: use an empty data dir to join that control plane",
            marker.control_plane_id,
            status.cluster_id
        ),
        Ok(_) => Ok(()),
        // The TLS handshake failed on a certificate: another cluster's CA.
        Err(error @ crate::Error::Refused(..)) => bail!(
            "this data dir belongs to control plane {} but {join} does not trust its certificate ({error}): use an empty data dir to join that control plane",
            marker.control_plane_id
        ),
        Err(error) => {
            tracing::warn!(%error, %join, "could not reach the --join address; restarting from the data dir anyway");
            Ok(())
        }
    }
}

/// The first leader writes `InitControlPlane`; a later leader finds it done.
async fn initialize_when_leader(raft: RaftHandle, marker: Marker, advertise: String) {
    let mut status = raft.watch_status();
    loop {
        if raft.store().read(|s| s.is_initialized()) {
            return;
        }
        if status.borrow().role == Role::Leader {
            let proposal = Proposal {
                request_id: format!("init-{}", marker.control_plane_id),
                command: Command::InitControlPlane {
                    control_plane_id: marker.control_plane_id.clone(),
                    first_member_id: marker.node_id,
                    first_member_address: advertise.clone(),
                    now_ms: crate::vocab::time::now_ms(),
                },
            };
            match raft.propose(proposal).await {
                Ok(_) => return,
                Err(error) => tracing::debug!(%error, "initializing the control plane; will retry"),
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// What `orc server recover` did to a data dir.
#[derive(Debug)]
pub struct Recovery {
    /// The recovered server's id.
    pub node_id: u64,
    /// Its control plane.
    pub control_plane_id: String,
    /// Members dropped: id, address (empty when unknown), whether a voter.
    pub dropped: Vec<(u64, String, bool)>,
    /// The last log index kept.
    pub last_index: u64,
    /// The commit index this server had seen; entries after it are kept too.
    pub commit_index: u64,
    /// Membership change entries after the state checkpoint, turned into no-ops.
    pub neutralized: usize,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "recovered server {} of control plane {} as a one-member control plane",
            self.node_id, self.control_plane_id
        )?;
        if self.dropped.is_empty() {
            writeln!(
                f,
                "discarded members: none (it was already the only member)"
            )?;
        }
        for (id, address, voter) in &self.dropped {
            writeln!(
                f,
                "discarded member: server {id} at {} ({})",
                if address.is_empty() {
                    "an unknown address"
                } else {
                    address
                },
                if *voter { "voter" } else { "learner" }
            )?;
        }
        writeln!(
            f,
            "kept the whole log, up to index {} (the data dir records index {} as committed; the {} entries after it are kept and will be committed, so a write whose answer was lost with the other servers may still appear)",
            self.last_index,
            self.commit_index,
            self.last_index.saturating_sub(self.commit_index)
        )?;
        if self.neutralized > 0 {
            writeln!(
                f,
                "turned {} membership change entries of the log into no-ops (replaying them would bring a lost member back)",
                self.neutralized
            )?;
        }
        write!(
            f,
            "start it as usual (`orc server --data-dir ...`); never restart a discarded server from its old data dir: give it an empty one and --join this server"
        )
    }
}

/// Disaster recovery, like etcd's `--force-new-cluster`: rewrites a stopped
/// server's data dir so it restarts as the only member of its control
/// plane, keeping its whole log and state (every write it acknowledged, and
/// every write it holds), and reports what it discarded: the other members,
/// and membership changes not yet applied.
pub fn recover(data_dir: &std::path::Path) -> anyhow::Result<Recovery> {
    let (path, marker) = match DataDir::inspect(data_dir)? {
        DataDir::Existing(path, marker) => (path, marker),
        DataDir::Fresh(path) => bail!(
            "data dir {} holds no server: nothing to recover (for `orc up`, pass its server/ subdirectory)",
            path.display()
        ),
    };
    let db = datadir::open_db(&path, 8)?;
    let store = Arc::new(Store::open(&db, &datadir::checkpoint_dir(&path))?);
    let storage = SledStorage::open(&db, store.clone())?;
    let applied = store.applied_index();
    let before = storage.conf_state();
    if !before.voters.contains(&marker.node_id) && !before.learners.contains(&marker.node_id) {
        bail!(
            "server {} in {} is not a member of its control plane (it was removed): there is nothing to recover from it",
            marker.node_id,
            path.display()
        );
    }
    let mut addresses: std::collections::HashMap<u64, String> = store.read(|s| {
        before
            .voters
            .iter()
            .chain(&before.learners)
            .map(|id| (*id, s.member_address(*id).unwrap_or_default().to_string()))
            .collect()
    });
    let (voters, learners, neutralized) = storage.force_single_voter(marker.node_id, applied)?;
    // Members added after the state checkpoint have their address only in
    // the conf change entries just neutralized.
    for entry in &neutralized {
        use protobuf::Message as _;
        let Ok(change) = raft::eraftpb::ConfChange::parse_from_bytes(&entry.data) else {
            continue;
        };
        if let Some((_, _, address)) = node::parse_context(&entry.context) {
            if !address.is_empty() {
                addresses.insert(change.node_id, String::from_utf8_lossy(address).to_string());
            }
        }
    }
    let neutralized = neutralized.len();
    for id in voters.iter().chain(&learners) {
        store.apply_membership(applied, *id, None);
    }
    store.checkpoint()?;
    storage.flush()?;
    let (last_index, commit_index) = storage.last_and_commit();
    let dropped = voters
        .iter()
        .map(|id| (*id, true))
        .chain(learners.iter().map(|id| (*id, false)))
        .map(|(id, voter)| (id, addresses.get(&id).cloned().unwrap_or_default(), voter))
        .collect();
    let recovery = Recovery {
        node_id: marker.node_id,
        control_plane_id: marker.control_plane_id,
        dropped,
        last_index,
        commit_index: commit_index.max(applied),
        neutralized,
    };
    tracing::warn!(node = recovery.node_id, data_dir = %path.display(), "{recovery}");
    Ok(recovery)
}
