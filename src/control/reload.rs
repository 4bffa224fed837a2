//! Hot reload: read the config again, compile it beside the table in service, and swap only
//! when the new table is whole, keeping endpoint state and unchanged listeners.
//!
//! Triggers: a change in the config's (or GeoIP file's) directory — watching the directory is
//! what catches a Kubernetes ConfigMap's `..data` symlink swap — debounced and compared by
//! content hash; a poll as a fallback; SIGHUP; and `POST /reload` on the admin listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{ConfigError, Problem};
use crate::control::lifecycle::Server;
use crate::geo::FileIdentity;
use crate::table::{CompileContext, RoutingTable};

/// Quiet time after a file event before reloading: editors and ConfigMap swaps write in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the files are checked even without an event.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Start,
    FileChange,
    Poll,
    Signal,
    Admin,
}

impl Trigger {
    /// Explicit requests reload even when nothing changed; watchers only on change.
    fn forced(&self) -> bool {
        matches!(self, Self::Signal | Self::Admin)
    }
}

/// How the last reload went, for `/config` and the status page.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub hash: String,
    /// When the table in service was loaded (Unix seconds).
    pub loaded_at: u64,
    pub last: Option<ReloadRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    pub at: u64,
    pub trigger: Trigger,
    pub result: ReloadResult,
    /// What was wrong, one line per problem with file and line.
    pub error: Option<String>,
    pub problems: Vec<ProblemView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    Applied,
    Unchanged,
    Failed,
}

impl ReloadResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemView {
    pub line: Option<usize>,
    pub path: Option<String>,
    pub message: String,
}

impl From<&Problem> for ProblemView {
    fn from(p: &Problem) -> Self {
        Self {
            line: p.line,
            path: p.path.as_ref().map(|p| p.to_string()),
            message: p.message.clone(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ReloadStatus {
    pub fn initial(generation: u64, hash: &str) -> Self {
        Self {
            generation,
            hash: hash.to_owned(),
            loaded_at: unix_now(),
            last: None,
        }
    }
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("there is no config file to reload (this instance was started from a built-in config)")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (listener `{name}`): {source}")]
    Bind {
        name: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// SHA-256 of the config text and the identity of the GeoIP file it names: equal hashes mean
/// there is nothing to reload.
pub fn content_hash(text: &str, table: &RoutingTable) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    let mut files: Vec<&Path> = Vec::new();
    if let Some(db) = &table.geo.database {
        files.push(db.path());
    }
    // Certificates and keys count too: replacing them is a reload.
    for tls in table.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for (cert, key) in &tls.certificates {
            files.push(cert);
            files.push(key);
        }
    }
    for file in files {
        if let Some(identity) = FileIdentity::of(file) {
            hasher.update(format!("\0{}\0{:?}", identity.len, identity.modified).as_bytes());
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Server {
    /// Reload the config file now. On any error the table in service keeps serving.
    pub async fn reload(&self, trigger: Trigger) -> Result<ReloadResult, ReloadError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ReloadError::NoConfigFile);
        };
        let mut serving = self.serving.lock().await;
        let outcome = self.reload_locked(&path, trigger, &mut serving).await;
        let (result, error, problems) = match &outcome {
            Ok(result) => (*result, None, Vec::new()),
            Err(e) => {
                let problems = match e {
                    ReloadError::Config(c) => c.problems().iter().map(ProblemView::from).collect(),
                    _ => Vec::new(),
                };
                (ReloadResult::Failed, Some(e.to_string()), problems)
            }
        };
        self.metrics
            .reloads
            .with_label_values(&[result.as_str()])
            .inc();
        let current = self.status.load();
        let table = self.table.load();
        let mut status = ReloadStatus {
            generation: table.generation,
            hash: serving.hash.clone(),
            loaded_at: current.loaded_at,
            last: Some(ReloadRecord {
                at: unix_now(),
                trigger,
                result,
                error,
                problems,
            }),
        };
        if result == ReloadResult::Applied {
            status.loaded_at = unix_now();
        }
        self.status.store(Arc::new(status));
        match &outcome {
            Ok(ReloadResult::Applied) => {
                tracing::info!(?trigger, generation = table.generation, "config reloaded")
            }
            Ok(_) => tracing::debug!(?trigger, "config unchanged"),
            Err(e) => tracing::error!(
                ?trigger,
                "config reload failed; the previous config keeps serving: {e}"
            ),
        }
        outcome
    }

    async fn reload_locked(
        &self,
        path: &Path,
        trigger: Trigger,
        serving: &mut crate::control::lifecycle::Serving,
    ) -> Result<ReloadResult, ReloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            ReloadError::Config(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let current = self.table.load_full();
        // The GeoIP file counts as part of the content: a new database is a reload too.
        let unchanged_hash = content_hash(&text, &current);
        if !trigger.forced() && unchanged_hash == serving.hash {
            return Ok(ReloadResult::Unchanged);
        }
        let loaded = crate::config::load_str(&text, path)?;
        let table = crate::table::compile(
            &loaded,
            CompileContext {
                generation: current.generation + 1,
                metrics: self.metrics.clone(),
                previous: Some(&current),
                database: None,
            },
        )?;
        let hash = content_hash(&text, &table);

        // Bind new listeners before swapping, so a port in use fails the reload cleanly.
        let mut new_listeners = Vec::new();
        for spec in &table.listeners {
            if serving.listeners.iter().any(|l| l.spec == *spec) {
                continue;
            }
            let listener = crate::edge::listen::bind_listener(spec.bind).map_err(|source| {
                ReloadError::Bind {
                    name: spec.name.clone(),
                    addr: spec.bind,
                    source,
                }
            })?;
            new_listeners.push((spec.clone(), listener));
        }
        if table.admin_bind != current.admin_bind {
            tracing::warn!("admin.bind changed: the admin listener moves only on restart");
        }

        let table = Arc::new(table);
        self.table.store(table.clone());
        self.metrics.generation.set(table.generation as i64);
        if let Some(db) = &table.geo.database {
            self.metrics.geoip_build_epoch.set(db.build_epoch() as i64);
        }
        serving.hash = hash;

        // Listeners: keep the unchanged, close the removed, serve the new.
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut serving.listeners)
            .into_iter()
            .partition(|l| table.listeners.contains(&l.spec));
        // Kept TLS listeners serve the freshly loaded certificates to new connections.
        for l in &kept {
            if let (Some(resolver), Some(keys)) = (&l.tls, table.tls_keys.get(&l.spec.name)) {
                resolver.replace(keys.clone());
            }
        }
        for l in removed {
            tracing::info!(listener = %l.spec.name, addr = %l.addr, "listener removed by reload");
            l.stop.cancel();
        }
        serving.listeners = kept;
        for (spec, listener) in new_listeners {
            serving.listeners.push(self.serve_listener(spec, listener));
        }

        // Control tasks follow the new endpoint sets; endpoint state carried over in compile.
        serving.control_tasks.cancel();
        serving.control_tasks = self.shutdown.child_token();
        self.spawn_control_tasks(&table, &serving.control_tasks);
        Ok(ReloadResult::Applied)
    }

    /// The last reload's outcome and the table's generation and hash.
    pub fn reload_status(&self) -> Arc<ReloadStatus> {
        self.status.load_full()
    }
}

/// Watch the config file's directory (and the GeoIP file's), poll as a fallback, and reload on
/// SIGHUP, until the server shuts down.
pub fn spawn_watchers(server: Arc<Server>, poll_interval: Duration) {
    let Some(config_path) = server.config_path.clone() else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<()>(64);
    let mut dirs: Vec<PathBuf> = vec![parent_dir(&config_path)];
    {
        let table = server.table.load();
        let mut files: Vec<PathBuf> = table
            .geo
            .database
            .iter()
            .map(|db| db.path().to_path_buf())
            .collect();
        for tls in table.listeners.iter().filter_map(|l| l.tls.as_ref()) {
            for (cert, key) in &tls.certificates {
                files.push(cert.clone());
                files.push(key.clone());
            }
        }
        for file in files {
            let dir = parent_dir(&file);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let watcher = {
        let tx = tx.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| may_change_content(&e.kind)) {
                // A full channel already has a wake-up pending: dropping this one loses nothing.
                let _ = tx.try_send(());
            }
        })
    };
    let watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher;
            for dir in &dirs {
                if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; relying on polling and SIGHUP");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; relying on polling and SIGHUP");
            None
        }
    };
    let shutdown = server.shutdown.clone();
    let tracker = server.tracker.clone();
    tracker.spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut poll = tokio::time::interval(poll_interval);
        poll.tick().await;
        let mut hangup = hangup_signal();
        loop {
            let trigger = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    Trigger::FileChange
                }
                _ = poll.tick() => Trigger::Poll,
                _ = next_hangup(&mut hangup) => Trigger::Signal,
            };
            let _ = server.reload(trigger).await;
        }
    });
}

/// Whether a file event can mean new content. Opening or reading a file cannot, and acting on
/// those would make every reload (which opens the config) trigger the next one.
fn may_change_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        // Closing a file that was open for writing is how an in-place edit ends.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(signal: &mut Hangup) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
    };

    use super::may_change_content;

    #[test]
    fn opening_and_reading_are_not_changes() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
        ] {
            assert!(!may_change_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn writes_renames_creations_and_removals_are() {
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(may_change_content(&kind), "{kind:?}");
        }
    }
}
