//! egret-cni: a CNI plugin (spec 1.0 and 1.1) chained after the cluster's own CNI.
//!
//! On ADD it hands the new pod (its namespace, name and IPs) to the node's `egret-agent` over
//! a root-only Unix socket and returns once the agent has programmed the pod's entries into
//! the data path, or decided the pod is not selected: the pod's first packet already leaves
//! with its egress IP. It passes the previous plugin's result through unchanged.
//!
//! - [`spec`]: the CNI protocol as pure functions: environment, network config, results and
//!   errors.
//! - [`protocol`]: what the plugin and the agent say to each other on the socket.
//! - [`conflist`]: the plugin's entry in the node's CNI configuration, edited as pure
//!   functions on file text; [`install`] does the file I/O (`egret-cni install`,
//!   `uninstall`); [`cli`] is the operator's command line.

pub mod cli;
pub mod conflist;
pub mod install;
pub mod protocol;
pub mod spec;
