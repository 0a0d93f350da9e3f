//! The file I/O of `egret-cni install` and `uninstall`: reading the CNI directories, and
//! writing what [`crate::conflist`] decided so that the kubelet and the runtime never see a
//! half-written file.
//!
//! - Every write is atomic: a temporary file in the same directory (a name the runtime
//!   ignores), fsync, rename over the target, fsync of the directory. A conflist keeps its
//!   mode and owner.
//! - Install copies the binary before it names it in a conflist; uninstall removes the entry
//!   before the binary. No pod ADD ever names a missing binary.
//! - Converting a one-plugin `.conf` removes the `.conf` before the new `.conflist` appears:
//!   for that instant the runtime sees no configuration and holds new pods back (they are
//!   retried), rather than start them on a chain without egret-cni.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::Watcher as _;

use crate::conflist::{self, ConflistError, Entry, Kind};
use crate::spec::PLUGIN_TYPE;

/// How often `--watch` checks again without being told of a change (a missed event, the
/// binary removed by hand).
pub const RESYNC: Duration = Duration::from_secs(30);

/// Why an install or uninstall stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Conflist(#[from] ConflistError),
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The host's CNI directories.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub bin: PathBuf,
    pub conf: PathBuf,
}

/// What install did to the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The directory holds no configuration yet: nothing to chain into.
    NoConfig,
    /// The runtime's conflist already ends with this entry.
    Unchanged(PathBuf),
    /// The entry was added or replaced.
    Edited(PathBuf),
    /// A one-plugin `.conf` became a conflist with the entry.
    Converted { from: PathBuf, to: PathBuf },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::NoConfig => write!(
                f,
                "no CNI configuration yet: nothing to chain into (install --watch adds the \
                 entry once the cluster's CNI writes its configuration)"
            ),
            Outcome::Unchanged(path) => write!(f, "{} already chains egret-cni", path.display()),
            Outcome::Edited(path) => write!(f, "egret-cni chained in {}", path.display()),
            Outcome::Converted { from, to } => write!(
                f,
                "{} converted to {} with egret-cni chained",
                from.display(),
                to.display()
            ),
        }
    }
}

/// Copies `binary` (this program's bytes) to `<bin>/egret-cni` unless it is there already;
/// then chains `entry` in the runtime's conflist.
pub fn install(dirs: &Dirs, binary: &[u8], entry: &Entry) -> Result<Outcome, InstallError> {
    install_binary(&dirs.bin, binary)?;
    let Some((path, text, kind)) = runtime_config(&dirs.conf)? else {
        return Ok(Outcome::NoConfig);
    };
    let file = path.display().to_string();
    if kind == Kind::List {
        return match conflist::install(&file, &text, entry)? {
            None => Ok(Outcome::Unchanged(path)),
            Some(edited) => {
                let meta = fs::metadata(&path).map_err(io_error(&path))?;
                stage(&path, edited.as_bytes(), &meta)?.commit(&path)?;
                Ok(Outcome::Edited(path))
            }
        };
    }
    let to = path.with_file_name(conflist::with_extension(file_name(&path), "conflist"));
    let converted = conflist::convert(&file, &text)?;
    let edited =
        conflist::install(&to.display().to_string(), &converted, entry)?.unwrap_or(converted);
    let meta = fs::metadata(&path).map_err(io_error(&path))?;
    let staged = stage(&to, edited.as_bytes(), &meta)?;
    fs::remove_file(&path).map_err(io_error(&path))?;
    staged.commit(&to)?;
    Ok(Outcome::Converted { from: path, to })
}

/// Removes egret-cni's entry from every conflist in the conf dir (restoring a `.conf` that
/// install converted), then the binary. Returns the files changed; a file that cannot be
/// read as a conflist is reported in `warnings` and left alone.
pub fn uninstall(dirs: &Dirs, warnings: &mut Vec<String>) -> Result<Vec<PathBuf>, InstallError> {
    let mut changed = Vec::new();
    for name in list(&dirs.conf)? {
        if !name.ends_with(".conflist") {
            continue;
        }
        let path = dirs.conf.join(&name);
        let file = path.display().to_string();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&path)(e)),
        };
        let edited = match conflist::uninstall(&file, &text) {
            Ok(Some(edited)) => edited,
            Ok(None) => continue,
            Err(e) => {
                warnings.push(format!("{e}; left as it is"));
                continue;
            }
        };
        let meta = fs::metadata(&path).map_err(io_error(&path))?;
        match conflist::unconvert(&edited) {
            Some(conf) => {
                let restored = path.with_file_name(conflist::with_extension(&name, "conf"));
                if !restored.exists() {
                    stage(&restored, conf.as_bytes(), &meta)?.commit(&restored)?;
                    changed.push(restored);
                }
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
            None => stage(&path, edited.as_bytes(), &meta)?.commit(&path)?,
        }
        changed.push(path);
    }
    let binary = dirs.bin.join(PLUGIN_TYPE);
    match fs::remove_file(&binary) {
        Ok(()) => changed.push(binary),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&binary)(e)),
    }
    Ok(changed)
}

/// Installs, then installs again whenever the conf dir changes, and every [`RESYNC`].
/// Returns only when the directory cannot be watched; errors of a pass (a file the primary
/// CNI is still writing) are reported through `report` and retried on the next change.
pub fn watch(
    dirs: &Dirs,
    binary: &[u8],
    entry: &Entry,
    mut report: impl FnMut(Result<&Outcome, &InstallError>),
) -> InstallError {
    let (tx, rx) = mpsc::channel();
    let watch_error = |source| InstallError::Watch {
        path: dirs.conf.clone(),
        source,
    };
    let mut watcher = match notify::recommended_watcher(tx) {
        Ok(w) => w,
        Err(e) => return watch_error(e),
    };
    if let Err(e) = watcher.watch(&dirs.conf, notify::RecursiveMode::NonRecursive) {
        return watch_error(e);
    }
    loop {
        match install(dirs, binary, entry) {
            Ok(outcome) => report(Ok(&outcome)),
            Err(error) => report(Err(&error)),
        }
        match rx.recv_timeout(RESYNC) {
            Ok(Err(e)) => return watch_error(e),
            Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return watch_error(notify::Error::generic("the watcher stopped"));
            }
        }
        // One pass for a burst of events (a writer's create, write and rename).
        while rx.try_recv().is_ok() {}
    }
}

/// The file the runtime uses, its text and kind: the first candidate it does not skip.
fn runtime_config(dir: &Path) -> Result<Option<(PathBuf, String, Kind)>, InstallError> {
    for name in list(dir)? {
        let path = dir.join(&name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ConflistError::NotJson {
                    file: path.display().to_string(),
                    reason: "not UTF-8".to_owned(),
                }
                .into());
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        match conflist::kind(&path.display().to_string(), &text)? {
            Kind::Skipped => {}
            kind => return Ok(Some((path, text, kind))),
        }
    }
    Ok(None)
}

/// The configuration files of `dir` in the runtime's order.
fn list(dir: &Path) -> Result<Vec<String>, InstallError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(conflist::candidates(names.iter().map(String::as_str))
        .into_iter()
        .map(str::to_owned)
        .collect())
}

fn install_binary(dir: &Path, binary: &[u8]) -> Result<bool, InstallError> {
    let target = dir.join(PLUGIN_TYPE);
    match fs::read(&target) {
        Ok(existing) if existing == binary => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&target)(e)),
    }
    let mode = Permissions::from_mode(0o755);
    let staged = stage_with(&target, binary, mode, None)?;
    staged.commit(&target)?;
    Ok(true)
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// A complete, synced file under a temporary name beside its target.
/// Dropped before [`Staged::commit`], it removes the file.
struct Staged {
    temp: PathBuf,
    committed: bool,
}

/// Stages `bytes` for `target` with the mode and owner of `like`.
fn stage(target: &Path, bytes: &[u8], like: &fs::Metadata) -> Result<Staged, InstallError> {
    stage_with(
        target,
        bytes,
        like.permissions(),
        Some((like.uid(), like.gid())),
    )
}

fn stage_with(
    target: &Path,
    bytes: &[u8],
    mode: Permissions,
    owner: Option<(u32, u32)>,
) -> Result<Staged, InstallError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // A name the runtime never loads (not .conf, .conflist, .json), unique across the
    // installers of two containers that may run at once during a rolling update.
    let temp = target.with_file_name(format!(
        ".{}.egret-{}-{nanos}.tmp",
        file_name(target),
        std::process::id()
    ));
    let staged = Staged {
        temp,
        committed: false,
    };
    let temp = &staged.temp;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io_error(temp))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io_error(temp))?;
    }
    file.set_permissions(mode).map_err(io_error(temp))?;
    file.write_all(bytes).map_err(io_error(temp))?;
    file.sync_all().map_err(io_error(temp))?;
    Ok(staged)
}

impl Staged {
    /// Renames the file over `target` and syncs the directory.
    fn commit(mut self, target: &Path) -> Result<(), InstallError> {
        fs::rename(&self.temp, target).map_err(io_error(target))?;
        self.committed = true;
        match target.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir)),
            None => Ok(()),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
