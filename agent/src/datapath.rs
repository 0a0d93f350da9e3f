//! The node data path in the kernel: the `egret-agent-ebpf` eBPF object, its pinned maps and its
//! pinned program links.
//!
//! Everything lives under `[agent].pin_path` on bpffs, so that it outlives the agent:
//!
//! - `maps/NAME`: the maps of `egret_ebpf_common::node` (sources, destinations, gateways,
//!   counters, config). A new agent loads its programs against the same maps, finds what the
//!   last one programmed, and changes only what differs ([`PinnedMaps::contents`] +
//!   [`crate::policy::plan`] + [`PinnedMaps::apply`]).
//! - `links/IFINDEX-DIRECTION-PROGRAM-NONCE`: one tcx link per attached program. A killed agent
//!   leaves its links attached, so selected traffic keeps flowing. A new agent attaches its
//!   own programs first and removes the older links of the same attach point afterwards, so
//!   there is no moment without a program; links of interfaces that are gone are removed.
//!
//! Needs Linux 6.6 or later (tcx links) and `CAP_BPF` + `CAP_NET_ADMIN`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::CString;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::links::FdLink;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use egret_ebpf_common::node::{
    CLASS_BITS, CLASSIFY_PROGRAM, DESTINATIONS_MAP, DestKey, DestValue, GATEWAYS_MAP,
    NODE_CONFIG_MAP, NODE_STATS_MAP, NodeConfig, NodeStats, PINNED_MAPS, POLICY_STATS_MAP,
    PolicyStats, SOURCES_MAP, SourceValue, TUNNEL_IN_PROGRAM, TUNNEL_OUT_PROGRAM,
};

use crate::policy::{Contents, Step};
use crate::prefix::Prefix;

/// The node programs' object, built from `ebpf/programs` by `build.rs`. Empty when the agent
/// was built with `EGRET_SKIP_EBPF_BUILD=1`.
pub fn node_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egret-agent-ebpf"))
}

/// bpffs's magic number (`statfs`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Why the data path could not be loaded, attached, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The embedded object is empty.
    #[error(
        "the embedded eBPF object is empty: this agent was built with EGRET_SKIP_EBPF_BUILD=1; \
         rebuild it without that variable"
    )]
    EmptyObject,
    /// The pin directory is not on bpffs.
    #[error("{0} is not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs(PathBuf),
    /// A file or directory under the pin path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The object could not be loaded, or its maps created or opened.
    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program is missing from the object, or the kernel refused it.
    #[error("program {program}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// aya's error (with the verifier log).
        #[source]
        source: Box<ProgramError>,
    },
    /// A program could not be attached.
    #[error("attaching {program} to {interface} {direction}")]
    Attach {
        /// The program.
        program: &'static str,
        /// The interface.
        interface: String,
        /// `ingress` or `egress`.
        direction: &'static str,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A pinned map could not be opened, read or written.
    #[error("map {map}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map {
        map,
        source: Box::new(source),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Ingress of a pod interface: [`CLASSIFY_PROGRAM`].
    PodIngress,
    /// Egress of the tunnel device: [`TUNNEL_OUT_PROGRAM`].
    TunnelEgress,
    /// Ingress of the tunnel device: [`TUNNEL_IN_PROGRAM`].
    TunnelIngress,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::PodIngress => CLASSIFY_PROGRAM,
            Hook::TunnelEgress => TUNNEL_OUT_PROGRAM,
            Hook::TunnelIngress => TUNNEL_IN_PROGRAM,
        }
    }

    fn direction(self) -> (&'static str, TcAttachType) {
        match self {
            Hook::PodIngress | Hook::TunnelIngress => ("ingress", TcAttachType::Ingress),
            Hook::TunnelEgress => ("egress", TcAttachType::Egress),
        }
    }
}

/// The paths under the pin directory.
#[derive(Debug, Clone)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    /// The pin directory `root` (`[agent].pin_path`).
    pub fn new(root: &Path) -> Pins {
        Pins {
            root: root.to_owned(),
        }
    }

    /// The directory of pinned maps.
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// The directory of pinned links.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// The pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Whether a data path was ever pinned here.
    pub fn exist(&self) -> bool {
        self.map(SOURCES_MAP).exists()
    }

    /// Creates the directories, checking they are on bpffs.
    fn create(&self) -> Result<(), DatapathError> {
        for dir in [self.maps(), self.links()] {
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
        let path = CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| DatapathError::NotBpffs(self.root.clone()))?;
        // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above; both pointers outlive the call.
        if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(io_error(&self.root)(std::io::Error::last_os_error()));
        }
        #[allow(clippy::unnecessary_cast)]
        if stat.f_type as i64 != BPF_FS_MAGIC {
            return Err(DatapathError::NotBpffs(self.root.clone()));
        }
        Ok(())
    }

    /// Removes everything pinned here: maps and links (which detaches the programs).
    pub fn remove_all(&self) -> Result<(), DatapathError> {
        match fs::remove_dir_all(&self.root) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error(&self.root)(err))
            }
            _ => Ok(()),
        }
    }
}

/// The loaded programs, ready to attach.
pub struct Programs {
    ebpf: Ebpf,
    pins: Pins,
    /// Names this process's links with, so its own are told from an older agent's.
    nonce: String,
    /// Attach points this process attached, by interface index.
    attached: BTreeSet<(u32, Hook)>,
}

impl Programs {
    /// Loads `object` against the maps pinned under `pins` (creating and pinning the maps the
    /// first time), and loads the programs into the kernel.
    pub fn load(object: &[u8], pins: &Pins) -> Result<Programs, DatapathError> {
        if object.is_empty() {
            return Err(DatapathError::EmptyObject);
        }
        pins.create()?;
        let paths: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|&m| (m, pins.map(m))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|err| DatapathError::Load(Box::new(err)))?;
        for hook in [Hook::PodIngress, Hook::TunnelEgress, Hook::TunnelIngress] {
            program(&mut ebpf, hook.program())?
                .load()
                .map_err(|source| DatapathError::Program {
                    program: hook.program(),
                    source: Box::new(source),
                })?;
        }
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        Ok(Programs {
            ebpf,
            pins: pins.clone(),
            nonce,
            attached: BTreeSet::new(),
        })
    }

    /// Whether this process attached `hook` to interface `ifindex`.
    pub fn is_attached(&self, ifindex: u32, hook: Hook) -> bool {
        self.attached.contains(&(ifindex, hook))
    }

    /// Attaches `hook`'s program to `interface` with a pinned tcx link, then removes older
    /// links of the same attach point (an earlier agent's).
    pub fn attach(
        &mut self,
        interface: &str,
        ifindex: u32,
        hook: Hook,
    ) -> Result<(), DatapathError> {
        let (direction, attach_type) = hook.direction();
        let name = hook.program();
        let attach_error = |source| DatapathError::Attach {
            program: name,
            interface: interface.to_owned(),
            direction,
            source: Box::new(source),
        };
        let prog = program(&mut self.ebpf, name)?;
        let id = prog
            .attach_with_options(
                interface,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(attach_error)?;
        let link = prog.take_link(id).map_err(attach_error)?;
        let link: FdLink = link.try_into().map_err(|err| DatapathError::Io {
            path: self.pins.links(),
            source: std::io::Error::other(format!(
                "{interface} {direction}: not a tcx link (Linux 6.6 or later is needed): {err}"
            )),
        })?;
        let prefix = format!("{ifindex}-{direction}-{name}-");
        let path = self.pins.links().join(format!("{prefix}{}", self.nonce));
        link.pin(&path).map_err(|err| DatapathError::Io {
            path: path.clone(),
            source: std::io::Error::other(err.to_string()),
        })?;
        // The new link runs; the old ones can go.
        let links = self.pins.links();
        for entry in fs::read_dir(&links).map_err(io_error(&links))?.flatten() {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if file.starts_with(&prefix) && entry.path() != path {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.attached.insert((ifindex, hook));
        Ok(())
    }

    /// Removes links whose interface no longer exists (`live` holds the existing indexes),
    /// and forgets them.
    pub fn sweep(&mut self, live: &HashSet<u32>) -> usize {
        let links = self.pins.links();
        let Ok(entries) = fs::read_dir(&links) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let file = entry.file_name();
            let ifindex = file
                .to_string_lossy()
                .split('-')
                .next()
                .and_then(|i| i.parse::<u32>().ok());
            if ifindex.is_some_and(|i| !live.contains(&i)) && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        self.attached.retain(|(i, _)| live.contains(i));
        removed
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    let missing = || DatapathError::Program {
        program: name,
        source: Box::new(ProgramError::UnexpectedProgramType),
    };
    ebpf.program_mut(name)
        .ok_or_else(missing)?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: name,
            source: Box::new(source),
        })
}

/// The node data path's pinned maps, opened by path: by the running agent and by
/// `egret-agent status` alike.
pub struct PinnedMaps {
    sources: LpmTrie<MapData, [u8; 4], SourceValue>,
    destinations: LpmTrie<MapData, DestKey, DestValue>,
    gateways: HashMap<MapData, [u8; 4], u32>,
    policy_stats: PerCpuHashMap<MapData, u64, PolicyStats>,
    config: Array<MapData, NodeConfig>,
    stats: PerCpuArray<MapData, NodeStats>,
}

fn open(pins: &Pins, name: &'static str) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(pins.map(name)).map_err(map_error(name))?;
    Map::from_map_data(data).map_err(map_error(name))
}

macro_rules! typed {
    ($pins:expr, $name:expr) => {
        open($pins, $name)?.try_into().map_err(map_error($name))?
    };
}

/// What one [`PinnedMaps::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Steps carried out.
    pub done: usize,
    /// Steps the kernel refused (a full map, most likely), with the reason.
    pub failed: Vec<String>,
}

impl PinnedMaps {
    /// Opens the maps pinned under `pins`.
    pub fn open(pins: &Pins) -> Result<PinnedMaps, DatapathError> {
        Ok(PinnedMaps {
            sources: typed!(pins, SOURCES_MAP),
            destinations: typed!(pins, DESTINATIONS_MAP),
            gateways: typed!(pins, GATEWAYS_MAP),
            policy_stats: typed!(pins, POLICY_STATS_MAP),
            config: typed!(pins, NODE_CONFIG_MAP),
            stats: typed!(pins, NODE_STATS_MAP),
        })
    }

    /// What the maps hold now.
    pub fn contents(&self) -> Result<Contents, DatapathError> {
        let mut contents = Contents::default();
        for entry in self.sources.iter() {
            let (key, value) = entry.map_err(map_error(SOURCES_MAP))?;
            let prefix = Prefix::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8);
            contents.sources.insert(prefix, value.class);
        }
        for entry in self.destinations.iter() {
            let (key, value) = entry.map_err(map_error(DESTINATIONS_MAP))?;
            let data = key.data();
            let len = key.prefix_len().saturating_sub(CLASS_BITS) as u8;
            let class = u64::from_be_bytes(data.class);
            contents
                .destinations
                .insert((class, Prefix::new(Ipv4Addr::from(data.addr), len)), value);
        }
        for key in self.gateways.keys() {
            let key = key.map_err(map_error(GATEWAYS_MAP))?;
            contents.gateways.insert(Ipv4Addr::from(key));
        }
        Ok(contents)
    }

    /// Carries out `steps` in order. A refused step is reported and the rest still done, so
    /// one full map does not stop every other policy.
    pub fn apply(&mut self, steps: &[Step]) -> Applied {
        let mut applied = Applied::default();
        for step in steps {
            let result = match *step {
                Step::PutGateway(addr) => self.gateways.insert(addr.octets(), 1, 0),
                Step::DeleteGateway(addr) => self.gateways.remove(&addr.octets()),
                Step::PutSource(prefix, class) => self.sources.insert(
                    &Key::new(u32::from(prefix.len()), prefix.addr().octets()),
                    SourceValue { class },
                    0,
                ),
                Step::DeleteSource(prefix) => self
                    .sources
                    .remove(&Key::new(u32::from(prefix.len()), prefix.addr().octets())),
                Step::PutDestination(class, prefix, value) => {
                    self.destinations.insert(&dest_key(class, prefix), value, 0)
                }
                Step::DeleteDestination(class, prefix) => {
                    self.destinations.remove(&dest_key(class, prefix))
                }
            };
            match result {
                Ok(()) => applied.done += 1,
                // Deleting what is already gone is what a delete wants.
                Err(MapError::KeyNotFound) => applied.done += 1,
                Err(err) => applied.failed.push(format!("{step:?}: {err}")),
            }
        }
        applied
    }

    /// Writes the programs' settings.
    pub fn set_config(&mut self, config: NodeConfig) -> Result<(), DatapathError> {
        self.config
            .set(0, config, 0)
            .map_err(map_error(NODE_CONFIG_MAP))
    }

    /// The programs' settings.
    pub fn config(&self) -> Result<NodeConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_error(NODE_CONFIG_MAP))
    }

    /// The node counters, summed over CPUs.
    pub fn stats(&self) -> Result<NodeStats, DatapathError> {
        let per_cpu = self.stats.get(&0, 0).map_err(map_error(NODE_STATS_MAP))?;
        Ok(per_cpu.iter().copied().sum())
    }

    /// Every policy's counters, summed over CPUs, by policy id.
    pub fn policy_stats(&self) -> Result<BTreeMap<u64, PolicyStats>, DatapathError> {
        let mut all = BTreeMap::new();
        for entry in self.policy_stats.iter() {
            let (id, per_cpu) = entry.map_err(map_error(POLICY_STATS_MAP))?;
            let total = per_cpu
                .iter()
                .fold(PolicyStats::default(), |t, c| PolicyStats {
                    packets: t.packets.wrapping_add(c.packets),
                    bytes: t.bytes.wrapping_add(c.bytes),
                });
            all.insert(id, total);
        }
        Ok(all)
    }

    /// Drops the counters of policies not in `keep`.
    pub fn retain_policy_stats(&mut self, keep: &BTreeSet<u64>) -> Result<(), DatapathError> {
        let stale: Vec<u64> = self
            .policy_stats
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !keep.contains(id))
            .collect();
        for id in stale {
            match self.policy_stats.remove(&id) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => return Err(map_error(POLICY_STATS_MAP)(err)),
            }
        }
        Ok(())
    }
}

fn dest_key(class: u64, prefix: Prefix) -> Key<DestKey> {
    Key::new(
        CLASS_BITS + u32::from(prefix.len()),
        DestKey::new(class, prefix.addr().octets()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_refused_first() {
        let pins = Pins::new(Path::new("/nonexistent/egret-test"));
        let err = Programs::load(&[], &pins).err().expect("loaded nothing");
        assert!(matches!(err, DatapathError::EmptyObject), "{err:?}");
    }

    #[test]
    fn pin_layout() {
        let pins = Pins::new(Path::new("/sys/fs/bpf/egret"));
        assert_eq!(
            pins.map(SOURCES_MAP),
            Path::new("/sys/fs/bpf/egret/maps/EGRET_SOURCES")
        );
        assert_eq!(pins.links(), Path::new("/sys/fs/bpf/egret/links"));
    }
}
