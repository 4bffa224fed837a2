//! Hot reload: read the config again, compile it beside the table in service, and swap only
//! when the new table is whole, keeping endpoint state and unchanged listeners.
//!
//! Triggers: a change to the config file or to a file it names (GeoIP database, certificates
//! and keys, admin token), seen through their directories — watching a directory is what
//! catches a Kubernetes ConfigMap's `..data` symlink swap — with events on every other name in
//! those directories ignored; debounced, and compared by content hash with what was last
//! applied and last refused, so a broken file is refused once, not on every event. A poll as a
//! fallback; SIGHUP; and `POST /reload` on the admin listener, both of which always reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{ConfigError, LoadedConfig, Problem};
use crate::control::ControlError;
use crate::control::lifecycle::Server;
use crate::geo::FileIdentity;
use crate::table::CompileContext;

/// Quiet time after a file event before reloading: editors and ConfigMap swaps write in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a stream of events may put a reload off.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// The name kubelet swaps to update a mounted ConfigMap or Secret.
const CONFIGMAP_DATA: &str = "..data";
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

    /// The `trigger` label of `meridian_config_reloads_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::FileChange => "file_change",
            Self::Poll => "poll",
            Self::Signal => "signal",
            Self::Admin => "admin",
        }
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

pub use crate::config::named_files;

/// SHA-256 of the config text and the identity (size, time, inode) of the files it names:
/// equal hashes mean there is nothing new to load.
pub fn content_hash(text: &str, files: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    for file in files {
        if let Some(identity) = FileIdentity::of(file) {
            hasher.update(format!("\0{identity:?}").as_bytes());
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Read and parse the config at `path`, with its content hash; `None` when `seen` knows the
/// hash (nothing new to load). Text the `serving` config's named files leave unchanged is
/// looked up before it is parsed, so polling an unchanged large config parses nothing.
fn read_config(
    path: &Path,
    serving: &crate::config::Config,
    seen: &dyn Fn(&str) -> bool,
) -> Option<(Result<LoadedConfig, ConfigError>, String)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // Equal text names the same files, so this is the hash a parse would give.
            if seen(&content_hash(&text, &named_files(serving))) {
                return None;
            }
            let parsed = crate::config::load_str(&text, path);
            // The files the new text names count as content: a new database is a reload,
            // and so is a fixed database under a config that was refused for it.
            let files = match &parsed {
                Ok(loaded) => named_files(&loaded.config),
                Err(_) => named_files(serving),
            };
            let hash = content_hash(&text, &files);
            (!seen(&hash)).then_some((parsed, hash))
        }
        Err(source) => {
            // A missing or unreadable file is refused once too, until it changes.
            let hash = format!("unreadable: {}", source.kind());
            let parsed = Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
            (!seen(&hash)).then_some((parsed, hash))
        }
    }
}

impl Server {
    /// Reload the config file now. On any error the table in service keeps serving.
    pub async fn reload(&self, trigger: Trigger) -> Result<ReloadResult, ControlError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ControlError::NoConfigFile);
        };
        let mut serving = self.serving.lock().await;
        let outcome = self.reload_locked(&path, trigger, &mut serving).await;
        let (result, error, problems) = match &outcome {
            Ok(result) => (*result, None, Vec::new()),
            Err(e) => {
                let problems = match e {
                    ControlError::Config(c) => c.problems().iter().map(ProblemView::from).collect(),
                    _ => Vec::new(),
                };
                (ReloadResult::Failed, Some(e.to_string()), problems)
            }
        };
        self.metrics
            .reloads
            .with_label_values(&[result.as_str(), trigger.as_str()])
            .inc();
        if result == ReloadResult::Unchanged {
            // Nothing was looked at anew: `/config` keeps the last outcome (a refused file's
            // problems stay on show while it sits there).
            tracing::debug!(?trigger, "config unchanged");
            return outcome;
        }
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
            Ok(_) => {}
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
    ) -> Result<ReloadResult, ControlError> {
        let current = self.table.load_full();
        // Reading and parsing a large config take as long as compiling it: off the control
        // runtime too (see `apply`).
        let (path_owned, config) = (path.to_path_buf(), current.clone());
        let (serving_hash, refused) = (serving.hash.clone(), serving.refused.clone());
        let forced = trigger.forced();
        let read = tokio::task::spawn_blocking(move || {
            let known = |hash: &str| hash == serving_hash || refused.as_deref() == Some(hash);
            read_config(&path_owned, &config.config, &|hash| !forced && known(hash))
        })
        .await
        .map_err(ControlError::Compile)?;
        let Some((parsed, hash)) = read else {
            return Ok(ReloadResult::Unchanged);
        };
        match self.apply(parsed, &current, hash.clone(), serving).await {
            Err(ControlError::Config(e)) => {
                serving.refused = Some(hash);
                Err(ControlError::Config(e))
            }
            other => other,
        }
    }

    /// Compile what was read beside the table in service and swap it in when it is whole.
    async fn apply(
        &self,
        parsed: Result<LoadedConfig, ConfigError>,
        current: &Arc<crate::table::RoutingTable>,
        hash: String,
        serving: &mut crate::control::lifecycle::Serving,
    ) -> Result<ReloadResult, ControlError> {
        let loaded = parsed?;
        // Off the control runtime: opening a changed GeoIP database (about a second for a
        // full City file) or compiling a large config would otherwise hold up GeoDNS answers,
        // health checks and the admin API for as long.
        let (previous, metrics) = (current.clone(), self.metrics.clone());
        let table = tokio::task::spawn_blocking(move || {
            crate::table::compile(
                &loaded,
                CompileContext {
                    generation: previous.generation + 1,
                    metrics,
                    previous: Some(&previous),
                    database: None,
                },
            )
        })
        .await
        .map_err(ControlError::Compile)??;

        // Bind new listeners before swapping, so a port in use fails the reload cleanly.
        let mut new_listeners = Vec::new();
        for spec in &table.listeners {
            if serving.listeners.iter().any(|l| l.spec == *spec) {
                continue;
            }
            // One socket per worker: every worker serves the new listener.
            let sockets = self.bind_listener(spec)?;
            new_listeners.push((spec.clone(), sockets));
        }
        let dns_change = crate::control::geodns::prepare(serving.dns.as_ref(), &table)?;
        if table.admin_bind != current.admin_bind {
            tracing::warn!("admin.bind changed: the admin listener moves only on restart");
        }

        let table = Arc::new(table);
        self.table.store(table.clone());
        self.metrics.generation.set(table.generation as i64);
        crate::upstream::peers::forget_removed(
            &self.metrics,
            current.peers.as_deref(),
            table.peers.as_deref(),
        );
        if let Some(epoch) = table.geo.oldest_build_epoch() {
            self.metrics.geoip_build_epoch.set(epoch as i64);
        }
        serving.hash = hash;
        serving.refused = None;

        // Listeners: keep the unchanged, close the removed, serve the new.
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut serving.listeners)
            .into_iter()
            .partition(|l| table.listeners.contains(&l.spec));
        // Kept TLS listeners serve the freshly loaded certificates to new connections, and
        // issue and accept tickets with the new ticket keys only (rotation).
        for l in &kept {
            if let (Some(resolver), Some(keys)) = (&l.tls, table.tls_keys.get(&l.spec.name)) {
                resolver.replace(keys.clone());
            }
            if let (Some(tickets), Some(ticketer)) =
                (&l.tickets, table.tls_tickets.get(&l.spec.name))
            {
                tickets.replace(ticketer.clone());
            }
            table
                .mtls
                .renew_listener(&l.spec.name, l.client_ca.as_deref());
        }
        table.mtls.renew_upstreams();
        for l in removed {
            tracing::info!(listener = %l.spec.name, addr = %l.addr, "listener removed by reload");
            l.stop.cancel();
        }
        serving.listeners = kept;
        for (spec, sockets) in new_listeners {
            serving.listeners.push(self.serve_listener(spec, sockets));
        }

        crate::control::geodns::apply(self, &mut serving.dns, dns_change);

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

/// SIGHUP, listened for from the moment this is made. Make it before the server reports ready:
/// a signal sent after that is then never lost, nor (before any handler is installed) fatal.
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Listen for SIGHUP; call inside the runtime.
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next SIGHUP; never, when there is none to listen for.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}

/// Watch the config file and the files it names, poll as a fallback, and reload on SIGHUP,
/// until the server shuts down.
pub fn spawn_watchers(server: Arc<Server>, poll_interval: Duration) {
    spawn_watchers_with(server, poll_interval, Hangup::listen());
}

/// [`spawn_watchers`] with a SIGHUP listener made earlier (see [`Hangup`]).
pub fn spawn_watchers_with(server: Arc<Server>, poll_interval: Duration, mut hangup: Hangup) {
    let Some(config_path) = server.config_path.clone() else {
        return;
    };
    let watch_set = move |server: &Server| {
        WatchSet::new(&config_path, &named_files(&server.table.load().config))
    };
    let set = Arc::new(ArcSwap::from_pointee(watch_set(&server)));
    let (tx, mut rx) = mpsc::channel::<()>(64);
    let watcher = {
        let set = set.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| set.load().wants(&e)) {
                // A full channel already has a wake-up pending: dropping this one loses nothing.
                let _ = tx.try_send(());
            }
        })
    };
    let mut watcher = watcher
        .map_err(|e| {
            tracing::warn!(error = %e, "file watching unavailable; relying on polling and SIGHUP")
        })
        .ok();
    let mut watching = Vec::new();
    watch_dirs(&mut watcher, &set.load(), &mut watching);
    let shutdown = server.shutdown.clone();
    let tracker = server.tracker.clone();
    tracker.spawn(async move {
        let mut poll = tokio::time::interval(poll_interval);
        poll.tick().await;
        loop {
            let trigger = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = rx.recv() => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    // A signal while the events settle reloads at once, and is what asked.
                    _ = hangup.next() => Trigger::Signal,
                    _ = settle(&mut rx, DEBOUNCE, DEBOUNCE_MAX) => Trigger::FileChange,
                },
                _ = poll.tick() => Trigger::Poll,
                _ = hangup.next() => Trigger::Signal,
            };
            if let Ok(ReloadResult::Applied) = server.reload(trigger).await {
                // The new config may name other files.
                let next = watch_set(&server);
                if next != **set.load() {
                    watch_dirs(&mut watcher, &next, &mut watching);
                    set.store(Arc::new(next));
                }
            }
        }
    });
}

/// Wait until events stop for `quiet`, or `longest` after the first: a burst (an editor's
/// save, a ConfigMap swap) is one reload, and a steady stream cannot put it off for ever.
async fn settle(events: &mut mpsc::Receiver<()>, quiet: Duration, longest: Duration) {
    let give_up = crate::deadline::from_now(longest);
    loop {
        let wait = crate::deadline::from_now(quiet).min(give_up);
        match tokio::time::timeout_at(wait, events.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

/// The paths whose events can mean new content, and the directories they show up in.
#[derive(Debug, Default, PartialEq)]
struct WatchSet {
    dirs: Vec<PathBuf>,
    paths: HashSet<PathBuf>,
}

impl WatchSet {
    /// Each file by its name in its directory, and that directory's `..data`: a mounted
    /// ConfigMap or Secret changes only by swapping that symlink.
    fn new(config_path: &Path, named: &[PathBuf]) -> Self {
        let mut set = Self::default();
        for file in std::iter::once(config_path).chain(named.iter().map(PathBuf::as_path)) {
            let Some(name) = file.file_name() else {
                continue;
            };
            let dir = normal(&parent_dir(file));
            set.paths.insert(dir.join(name));
            set.paths.insert(dir.join(CONFIGMAP_DATA));
            if !set.dirs.contains(&dir) {
                set.dirs.push(dir);
            }
        }
        set
    }

    /// Whether `event` can change what a reload reads. Anything else in a watched directory
    /// (a log file written beside the config, an editor's swap file) is not.
    fn wants(&self, event: &notify::Event) -> bool {
        may_change_content(&event.kind)
            && event.paths.iter().any(|p| self.paths.contains(&normal(p)))
    }
}

/// Absolute, without `.` components: the form the watcher reports paths in.
fn normal(path: &Path) -> PathBuf {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .components()
        .collect()
}

/// Watch the directories of `set` not watched yet.
fn watch_dirs(
    watcher: &mut Option<notify::RecommendedWatcher>,
    set: &WatchSet,
    watching: &mut Vec<PathBuf>,
) {
    use notify::Watcher;
    let Some(w) = watcher else {
        return;
    };
    for dir in &set.dirs {
        if watching.contains(dir) {
            continue;
        }
        match w.watch(dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => watching.push(dir.clone()),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; relying on polling and SIGHUP")
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
    };

    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::{WatchSet, may_change_content, read_config, settle};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        notify::Event {
            kind,
            paths: paths.iter().map(PathBuf::from).collect(),
            attrs: Default::default(),
        }
    }

    /// `config/meridian.yaml` with an admin token file in `dir`.
    fn config_naming_a_file(dir: &Path) -> String {
        let token = dir.join("token");
        std::fs::write(&token, "secret\n").unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meridian.yaml"),
        )
        .unwrap();
        let with_token = text.replace(
            "  # token_file: /etc/meridian/admin-token",
            &format!("  token_file: {}", token.display()),
        );
        assert_ne!(
            with_token, text,
            "config/meridian.yaml has no token_file line to fill"
        );
        with_token
    }

    #[test]
    fn an_unchanged_file_is_known_before_it_is_parsed_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meridian.yaml");
        std::fs::write(&path, config_naming_a_file(dir.path())).unwrap();
        let loaded = crate::config::load_file(&path).unwrap();
        let never = |_: &str| false;
        let (parsed, hash) = read_config(&path, &loaded.config, &never).unwrap();
        assert!(parsed.is_ok());
        // Known by the quick hash (the serving config names the same files) ...
        assert!(read_config(&path, &loaded.config, &|h| h == hash).is_none());
        // ... and by the full one when the serving config names other files.
        let other = crate::config::load_str("{}", Path::new("empty.yaml")).unwrap();
        assert!(read_config(&path, &other.config, &|h| h == hash).is_none());
        // The quick hash is asked before parsing: a hash only it gives (this text with the
        // other config's files, none) ends the read, where a parse would have found news.
        let text = std::fs::read_to_string(&path).unwrap();
        let quick = super::content_hash(&text, &[]);
        assert!(read_config(&path, &other.config, &|h| h == quick).is_none());
        assert!(read_config(&path, &loaded.config, &|h| h == quick).is_some());
        // A named file replaced is new content, though the text is the same.
        std::fs::write(dir.path().join("token.new"), "other secret, longer\n").unwrap();
        std::fs::rename(dir.path().join("token.new"), dir.path().join("token")).unwrap();
        let (_, changed) = read_config(&path, &loaded.config, &|h| h == hash).unwrap();
        assert_ne!(changed, hash);

        // Text that does not parse is hashed with the serving config's files, and known again.
        std::fs::write(&path, "listeners: [").unwrap();
        let (parsed, broken) = read_config(&path, &loaded.config, &never).unwrap();
        assert!(parsed.is_err());
        assert!(read_config(&path, &loaded.config, &|h| h == broken).is_none());
        // An unreadable file too.
        std::fs::remove_file(&path).unwrap();
        let (parsed, gone) = read_config(&path, &loaded.config, &never).unwrap();
        assert!(parsed.is_err());
        assert!(gone.starts_with("unreadable: "), "{gone}");
        assert!(read_config(&path, &loaded.config, &|h| h == gone).is_none());
    }

    #[test]
    fn only_the_config_the_files_it_names_and_configmap_swaps_are_watched() {
        let set = WatchSet::new(
            Path::new("/etc/meridian/meridian.yaml"),
            &[
                PathBuf::from("/etc/meridian/token"),
                PathBuf::from("/var/lib/geoip/city.mmdb"),
            ],
        );
        assert_eq!(
            set.dirs,
            [
                PathBuf::from("/etc/meridian"),
                PathBuf::from("/var/lib/geoip")
            ]
        );
        let write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let cases = [
            (event(write, &["/etc/meridian/meridian.yaml"]), true),
            (event(write, &["/etc/meridian/./meridian.yaml"]), true),
            (event(write, &["/etc/meridian/token"]), true),
            (event(write, &["/var/lib/geoip/city.mmdb"]), true),
            // kubelet's swap: a new symlink renamed over `..data`.
            (
                event(
                    renamed,
                    &["/etc/meridian/..data_tmp", "/etc/meridian/..data"],
                ),
                true,
            ),
            (
                event(
                    renamed,
                    &["/var/lib/geoip/..data_tmp", "/var/lib/geoip/..data"],
                ),
                true,
            ),
            // Neighbours: a log beside the config, an editor's files, the swap's own pieces.
            (event(write, &["/etc/meridian/meridian.log"]), false),
            (event(write, &["/etc/meridian/.meridian.yaml.swp"]), false),
            (
                event(
                    EventKind::Create(CreateKind::File),
                    &["/etc/meridian/..data_tmp"],
                ),
                false,
            ),
            (event(write, &["/var/lib/geoip/other.mmdb"]), false),
            // The right name in another directory.
            (event(write, &["/tmp/meridian.yaml"]), false),
            // Reading the config is not a change.
            (
                event(
                    EventKind::Access(AccessKind::Read),
                    &["/etc/meridian/meridian.yaml"],
                ),
                false,
            ),
        ];
        for (event, wanted) in cases {
            assert_eq!(set.wants(&event), wanted, "{event:?}");
        }
    }

    #[test]
    fn a_relative_config_path_matches_the_absolute_paths_events_carry() {
        let set = WatchSet::new(Path::new("meridian.yaml"), &[]);
        let cwd = std::env::current_dir().unwrap();
        let write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let here = cwd.join("meridian.yaml");
        let dotted = cwd.join(".").join("meridian.yaml");
        for path in [&here, &dotted] {
            assert!(set.wants(&notify::Event::new(write).add_path(path.clone())));
        }
        assert!(!set.wants(&notify::Event::new(write).add_path(cwd.join("other.yaml"))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_after_a_quiet_period() {
        let (tx, mut rx) = mpsc::channel(64);
        let started = Instant::now();
        tokio::spawn(async move {
            for _ in 0..3 {
                let _ = tx.send(()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Keep the channel open, silent.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        settle(&mut rx, Duration::from_millis(200), Duration::from_secs(2)).await;
        // The last event came at 100 ms; 200 ms of quiet after it.
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_cannot_put_a_reload_off_for_ever() {
        let (tx, mut rx) = mpsc::channel(64);
        let started = Instant::now();
        tokio::spawn(async move {
            for _ in 0..1000 {
                let _ = tx.send(()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        settle(&mut rx, Duration::from_millis(200), Duration::from_secs(2)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

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
