//! Loads egret's eBPF object, attaches the TC classifier to an interface and reads its counters.
//!
//! Owns everything it attaches: a [`Classifier`] holds the loaded object and one tc link per
//! direction, and detaches both when it is dropped (or on [`Classifier::detach`], which reports
//! failures). The object is built by `build.rs` and embedded in the binary; see
//! [`embedded_object`].
//!
//! Network namespaces: interfaces are looked up, and netlink sockets opened, in the network
//! namespace of the calling thread. Attach and detach in the same namespace. With tcx links
//! (Linux 6.6 and later) detaching is namespace-independent; with the netlink fallback of older
//! kernels it is not.

use std::{ffi::CString, fmt};

use aya::{
    Ebpf,
    maps::{MapError, PerCpuArray},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        tc::{self, SchedClassifierLinkId, TcError},
    },
};
use egret_ebpf_common::{
    CLASSIFIER_PROGRAM, CLASSIFIER_STATS_INDEX, CLASSIFIER_STATS_MAP, ClassifierStats,
};

/// egret's eBPF object (every program and map), built from `ebpf/programs` by `build.rs`.
///
/// Empty when the agent was built with `EGRET_SKIP_EBPF_BUILD=1`; [`Classifier::attach`]
/// refuses it with [`ClassifierError::EmptyObject`].
pub fn embedded_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egret-ebpf"))
}

/// A direction of traffic on an interface, as tc sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Frames the interface receives.
    Ingress,
    /// Frames the interface sends.
    Egress,
}

impl Direction {
    /// Both directions, in attach order.
    pub const BOTH: [Self; 2] = [Self::Ingress, Self::Egress];

    /// The tc attach point of this direction.
    pub const fn attach_type(self) -> TcAttachType {
        match self {
            Self::Ingress => TcAttachType::Ingress,
            Self::Egress => TcAttachType::Egress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// Why the classifier could not be loaded, attached, read or detached.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// The embedded object is empty: the agent was built with `EGRET_SKIP_EBPF_BUILD=1`.
    #[error(
        "the embedded eBPF object is empty: this agent was built with EGRET_SKIP_EBPF_BUILD=1 \
         for quick checks; rebuild it without that variable to load eBPF programs"
    )]
    EmptyObject,
    /// No interface of that name in the calling thread's network namespace.
    #[error("no network interface named {interface:?} in this network namespace")]
    NoSuchInterface {
        /// The name asked for.
        interface: String,
    },
    /// The object could not be parsed, or its maps created.
    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object lacks a program or map the agent expects: agent and object do not match.
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        /// `"program"` or `"map"`.
        kind: &'static str,
        /// The name looked up.
        name: &'static str,
    },
    /// The program is of an unexpected type, or the kernel (verifier) refused it.
    #[error("loading program {program} into the kernel")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error, with the verifier log when the verifier refused it.
        #[source]
        source: Box<ProgramError>,
    },
    /// The clsact qdisc could not be added to the interface.
    #[error("adding the clsact qdisc to {interface}")]
    Qdisc {
        /// The interface.
        interface: String,
        /// The netlink error.
        #[source]
        source: TcError,
    },
    /// The program could not be attached to one direction of the interface.
    #[error("attaching {program} to {interface} {direction}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// The interface.
        interface: String,
        /// The direction that failed.
        direction: Direction,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// The program could not be detached from one direction of the interface.
    #[error("detaching {program} from {interface} {direction}")]
    Detach {
        /// Program name.
        program: &'static str,
        /// The interface.
        interface: String,
        /// The direction that failed.
        direction: Direction,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map could not be opened or read.
    #[error("reading map {map}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
}

impl ClassifierError {
    /// Stable `snake_case` label of the variant, for metrics.
    pub const fn metric_label(&self) -> &'static str {
        match self {
            Self::EmptyObject => "empty_object",
            Self::NoSuchInterface { .. } => "no_such_interface",
            Self::Load(_) => "load",
            Self::Missing { .. } => "missing",
            Self::Program { .. } => "program",
            Self::Qdisc { .. } => "qdisc",
            Self::Attach { .. } => "attach",
            Self::Detach { .. } => "detach",
            Self::Map { .. } => "map",
        }
    }
}

/// The TC classifier attached to both directions of one interface.
///
/// For now it only counts (see [`ClassifierStats`]): it passes every packet on unchanged and
/// selects nothing. Dropping it detaches it; the clsact qdisc stays, since other tc users may
/// have attached to it meanwhile.
pub struct Classifier {
    ebpf: Ebpf,
    interface: String,
    /// Attached links, detached in reverse order.
    links: Vec<(Direction, SchedClassifierLinkId)>,
}

impl Classifier {
    /// Loads `object` (normally [`embedded_object`]) and attaches the classifier to `interface`
    /// at ingress and egress, adding the clsact qdisc if the interface has none.
    ///
    /// Needs `CAP_BPF` and `CAP_NET_ADMIN`. On failure nothing stays attached.
    pub fn attach(object: &[u8], interface: &str) -> Result<Self, ClassifierError> {
        if object.is_empty() {
            return Err(ClassifierError::EmptyObject);
        }
        ensure_interface_exists(interface)?;

        let ebpf = Ebpf::load(object).map_err(|err| ClassifierError::Load(Box::new(err)))?;
        let mut classifier = Self {
            ebpf,
            interface: interface.to_owned(),
            links: Vec::with_capacity(Direction::BOTH.len()),
        };
        classifier_program(&mut classifier.ebpf)?
            .load()
            .map_err(|source| ClassifierError::Program {
                program: CLASSIFIER_PROGRAM,
                source: Box::new(source),
            })?;
        add_clsact(interface)?;
        for direction in Direction::BOTH {
            let link = classifier_program(&mut classifier.ebpf)?
                .attach(interface, direction.attach_type())
                .map_err(|source| ClassifierError::Attach {
                    program: CLASSIFIER_PROGRAM,
                    interface: interface.to_owned(),
                    direction,
                    source: Box::new(source),
                })?;
            // If the next direction fails, dropping `classifier` detaches this one.
            classifier.links.push((direction, link));
        }
        Ok(classifier)
    }

    /// The interface the classifier is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The counters since attach, summed over all CPUs and both directions.
    pub fn stats(&self) -> Result<ClassifierStats, ClassifierError> {
        let map_error = |source| ClassifierError::Map {
            map: CLASSIFIER_STATS_MAP,
            source: Box::new(source),
        };
        let map = self
            .ebpf
            .map(CLASSIFIER_STATS_MAP)
            .ok_or(ClassifierError::Missing {
                kind: "map",
                name: CLASSIFIER_STATS_MAP,
            })?;
        let array = PerCpuArray::<_, ClassifierStats>::try_from(map).map_err(map_error)?;
        let per_cpu = array.get(&CLASSIFIER_STATS_INDEX, 0).map_err(map_error)?;
        Ok(per_cpu.iter().copied().sum())
    }

    /// Detaches both directions, reporting the first failure (after trying every link).
    pub fn detach(mut self) -> Result<(), ClassifierError> {
        self.detach_all()
    }

    fn detach_all(&mut self) -> Result<(), ClassifierError> {
        let mut first_error = None;
        while let Some((direction, link)) = self.links.pop() {
            let detached = classifier_program(&mut self.ebpf).and_then(|program| {
                program
                    .detach(link)
                    .map_err(|source| ClassifierError::Detach {
                        program: CLASSIFIER_PROGRAM,
                        interface: self.interface.clone(),
                        direction,
                        source: Box::new(source),
                    })
            });
            if let Err(err) = detached {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Classifier {
    fn drop(&mut self) {
        if let Err(err) = self.detach_all() {
            tracing::warn!(
                interface = %self.interface,
                error = %DisplayChain(&err),
                "could not detach the classifier"
            );
        }
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("interface", &self.interface)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

fn classifier_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, ClassifierError> {
    let program = ebpf
        .program_mut(CLASSIFIER_PROGRAM)
        .ok_or(ClassifierError::Missing {
            kind: "program",
            name: CLASSIFIER_PROGRAM,
        })?;
    program
        .try_into()
        .map_err(|source| ClassifierError::Program {
            program: CLASSIFIER_PROGRAM,
            source: Box::new(source),
        })
}

fn ensure_interface_exists(interface: &str) -> Result<(), ClassifierError> {
    let no_such_interface = || ClassifierError::NoSuchInterface {
        interface: interface.to_owned(),
    };
    let name = CString::new(interface).map_err(|_| no_such_interface())?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(no_such_interface());
    }
    Ok(())
}

/// Adds the clsact qdisc, which tc programs attach to through netlink (kernels before 6.6; newer
/// ones use tcx links and do not need it). An existing one is fine.
fn add_clsact(interface: &str) -> Result<(), ClassifierError> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(source) => Err(ClassifierError::Qdisc {
            interface: interface.to_owned(),
            source,
        }),
    }
}

/// Formats an error with its sources, `: `-separated, for log fields.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_refused_before_anything_else() {
        // No root needed: the check comes before any syscall or interface lookup.
        let err = Classifier::attach(&[], "no-such-if").expect_err("an empty object loaded");
        assert!(matches!(err, ClassifierError::EmptyObject), "{err:?}");
        assert!(err.to_string().contains("EGRET_SKIP_EBPF_BUILD=1"), "{err}");
        assert_eq!(err.metric_label(), "empty_object");
    }

    #[test]
    fn missing_interface_is_named() {
        let err = Classifier::attach(b"not empty", "egret-nope0").expect_err("attached to nothing");
        assert!(
            matches!(&err, ClassifierError::NoSuchInterface { interface } if interface == "egret-nope0"),
            "{err:?}"
        );
        for bad in ["", "with\0nul", "a-name-longer-than-ifnamsiz"] {
            let err = Classifier::attach(b"not empty", bad).expect_err("attached to a bad name");
            assert!(
                matches!(err, ClassifierError::NoSuchInterface { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn error_chains_are_displayed_in_full() {
        let err = ClassifierError::Qdisc {
            interface: "eth0".to_owned(),
            source: TcError::IoError(std::io::Error::other("permission denied")),
        };
        assert_eq!(
            DisplayChain(&err).to_string(),
            "adding the clsact qdisc to eth0: permission denied"
        );
    }

    #[test]
    fn directions_map_to_their_attach_points() {
        assert_eq!(Direction::Ingress.attach_type(), TcAttachType::Ingress);
        assert_eq!(Direction::Egress.attach_type(), TcAttachType::Egress);
        assert_eq!(Direction::Egress.to_string(), "egress");
    }
}
