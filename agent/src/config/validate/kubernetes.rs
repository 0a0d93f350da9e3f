//! `[kubernetes]`: how the agent reaches the cluster, and where it keeps its Leases.

use egret_config::check::{Check, label_problem};
use egret_config::raw::Section;

use super::Checker;
use crate::config::raw::RawKubernetes;
use crate::config::{Kubernetes, Mode, defaults};

impl Checker<'_, '_, '_> {
    pub(super) fn kubernetes(
        &mut self,
        section: &Section<RawKubernetes>,
        mode: Option<Mode>,
    ) -> Option<Kubernetes> {
        let absent = RawKubernetes::default();
        let (k, table) = section.contents(&absent)?;
        if let (Some(table), Some(Mode::Static)) = (table, mode) {
            self.report.warning(
                "kubernetes",
                Some(table.span.clone()),
                "ignored in mode \"static\": the agent does not talk to a cluster",
                "no [kubernetes] table, or mode = \"kubernetes\"",
            );
        }
        let kubeconfig = self.value(
            table,
            "kubeconfig",
            &k.kubeconfig,
            || None,
            |c, raw| c.absolute_path("kubernetes.kubeconfig", raw).map(Some),
        );
        let from_env = self
            .host
            .namespace_env
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let namespace = self.value(
            table,
            "namespace",
            &k.namespace,
            || from_env.unwrap_or_else(|| defaults::NAMESPACE.to_owned()),
            |c, raw| match label_problem(raw.get_ref()) {
                None => Some(raw.get_ref().clone()),
                Some(problem) => c.refuse("kubernetes.namespace", Some(raw.span()), problem),
            },
        );
        let kubeconfig = kubeconfig?;
        if mode == Some(Mode::Kubernetes) && kubeconfig.is_none() && !self.host.cluster_credentials
        {
            self.report.error(
                "kubernetes.kubeconfig",
                table.map(|t| t.span.clone()),
                "Kubernetes mode (the default [agent].mode) needs a cluster: this is not a pod \
                 with a service account and $KUBECONFIG is unset",
                "a kubeconfig file in [kubernetes].kubeconfig, or mode = \"static\"",
            );
            return None;
        }
        Some(Kubernetes {
            kubeconfig,
            namespace: namespace?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::fixtures::*;
    use crate::config::{Config, HostFacts};

    #[test]
    fn the_kubernetes_table_names_a_kubeconfig_and_the_leases_namespace() {
        let config =
            accept("[kubernetes]\nkubeconfig = \"/etc/egret/kubeconfig\"\nnamespace = \"egret\"\n")
                .config;
        assert_eq!(
            config.kubernetes.kubeconfig.as_deref(),
            Some(Path::new("/etc/egret/kubeconfig"))
        );
        assert_eq!(config.kubernetes.namespace, "egret");
        assert_error(
            "[kubernetes]\nkubeconfig = \"kubeconfig\"\n",
            "kubernetes.kubeconfig",
            "\"kubeconfig\"",
        );
        for bad in ["Egret", "-egret", "egret.system", ""] {
            assert_error(
                &format!("[kubernetes]\nnamespace = {bad:?}\n"),
                "kubernetes.namespace",
                &format!("{bad:?}"),
            );
        }
        assert_warning(
            "[agent]\nmode = \"static\"\n[kubernetes]\n",
            "kubernetes",
            "[kubernetes]",
        );
        // The DaemonSet's $POD_NAMESPACE is the default.
        let host = HostFacts {
            namespace_env: Some("egret".to_owned()),
            ..host()
        };
        let config = Config::from_str("", &host).expect("valid").config;
        assert_eq!(config.kubernetes.namespace, "egret");
    }
}
