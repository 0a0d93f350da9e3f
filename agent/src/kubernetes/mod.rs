//! Kubernetes mode's shell: the cluster is one more input, kept at the edge like a socket.
//!
//! - [`watch`]: kube-runtime reflectors for this node's pods, namespaces, policies, gateway
//!   objects and the ip-masq-agent ConfigMap;
//! - [`lease`]: who writes the policies' status (one agent at a time) and each node's
//!   report of what it programmed;
//! - [`node`]: this node following the cluster: snapshots in, the node programmed, its
//!   report out;
//! - [`writer`]: the policies' status and Warning events, from the Lease holder;
//! - [`cni`]: the socket where `egret-cni` asks for a new pod to be programmed.
//!
//! The decisions (which pods each policy selects, which policies are accepted, what the
//! status says) are pure and live in [`crate::cluster`]; nothing here decides, it only
//! carries snapshots in and results out.

pub mod cni;
pub mod lease;
pub mod node;
pub mod watch;
pub mod writer;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Why the agent cannot talk to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file.
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a service account nor `$KUBECONFIG`.
    #[error(
        "no cluster credentials: not in a pod with a service account, and $KUBECONFIG \
         does not name a usable kubeconfig ({0}); set [kubernetes].kubeconfig"
    )]
    Infer(String),
    /// The client could not be built from the config.
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or else the pod's service account, or else `$KUBECONFIG`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|err| ClientError::Infer(format!("{in_cluster}; {err}")))?,
        },
    };
    Client::try_from(config).map_err(ClientError::Client)
}
