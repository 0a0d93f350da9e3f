//! `[kubernetes]`: the cluster this gateway reports into, and the kubeconfig that leads
//! there.

use std::ops::Range;
use std::path::{Path, PathBuf};

use egret_config::check::{Check, written};
use egret_config::raw::Section;
use toml::Spanned;

use super::Checker;
use crate::config::raw::RawKubernetes;
use crate::config::{HostFacts, Kubernetes, defaults};

const KUBECONFIG: &str = "kubernetes.kubeconfig";

impl Checker<'_, '_, '_> {
    /// `Some(None)`: no `[kubernetes]`; `None`: invalid.
    pub(super) fn kubernetes(
        &mut self,
        section: &Section<RawKubernetes>,
    ) -> Option<Option<Kubernetes>> {
        let table = match section {
            Section::Present(table) => table,
            Section::Absent => return Some(None),
            Section::Invalid => return None,
        };
        let k = &table.value;
        let kubeconfig = match written(Some(table), "kubeconfig", &k.kubeconfig) {
            None => None,
            Some(None) => self.kubeconfig_env(table.span.clone()).map(|()| None),
            Some(Some(path)) => self.kubeconfig(path).map(Some),
        };
        let gateway = self.value(
            Some(table),
            "gateway",
            &k.gateway,
            || defaults::KUBERNETES_GATEWAY.to_owned(),
            |c, raw| c.object_name("kubernetes.gateway", raw),
        );
        Some(Some(Kubernetes {
            kubeconfig: kubeconfig?,
            gateway: gateway?,
        }))
    }

    /// `[kubernetes].kubeconfig`: an absolute path to a kubeconfig that leads to a cluster.
    fn kubeconfig(&mut self, raw: &Spanned<String>) -> Option<PathBuf> {
        self.non_empty(KUBECONFIG, raw)?;
        let path = self.absolute_path(KUBECONFIG, raw)?;
        match kubeconfig_problem(self.host, &[path.as_path()]) {
            None => Some(path),
            Some(why) => self.refuse(KUBECONFIG, Some(raw.span()), why),
        }
    }

    /// No `kubeconfig` key: `$KUBECONFIG` must name kubeconfig files that lead to a cluster.
    fn kubeconfig_env(&mut self, table: Range<usize>) -> Option<()> {
        let paths: Vec<&Path> = self
            .host
            .kubeconfig_env
            .as_deref()
            .unwrap_or("")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(Path::new)
            .collect();
        let why = if paths.is_empty() {
            Some("not set, and $KUBECONFIG is not set either".to_owned())
        } else {
            kubeconfig_problem(self.host, &paths).map(|why| format!("from $KUBECONFIG: {why}"))
        };
        match why {
            None => Some(()),
            Some(why) => self.refuse(KUBECONFIG, Some(table), why),
        }
    }
}

/// What keeps the kubeconfig files at `paths` (merged in order, as kubectl merges
/// `$KUBECONFIG`) from leading to a cluster; `None` when they do.
fn kubeconfig_problem(host: &HostFacts, paths: &[&Path]) -> Option<String> {
    use kube::config::Kubeconfig;
    let mut merged = Kubeconfig::default();
    for path in paths {
        let file = match host.key_file(path) {
            Ok(file) => file,
            Err(why) => return Some(format!("{}: {why}", path.display())),
        };
        let parsed = std::str::from_utf8(&file.bytes)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(|text| Kubeconfig::from_yaml(text).map_err(|e| e.to_string()));
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(why) => return Some(format!("{} is not a kubeconfig: {why}", path.display())),
        };
        merged = match merged.merge(parsed) {
            Ok(merged) => merged,
            Err(e) => return Some(format!("{} cannot be merged: {e}", path.display())),
        };
    }
    let Some(current) = merged.current_context.as_deref().filter(|c| !c.is_empty()) else {
        return Some("no current-context".to_owned());
    };
    let Some(context) = merged
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
    else {
        return Some(format!(
            "the current-context {current:?} is not among its contexts"
        ));
    };
    let server = merged
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.as_deref());
    if server.is_none_or(str::is_empty) {
        return Some(format!(
            "the cluster {:?} of the current-context {current:?} has no server",
            context.cluster
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::fixtures::*;
    use crate::config::{Config, ConfigError, HostFacts};

    #[test]
    fn the_kubernetes_table_needs_a_kubeconfig_that_leads_to_a_cluster() {
        let k = |body: &str| with(&format!("[kubernetes]\n{body}"));
        let config = accept(&k(
            "kubeconfig = \"/etc/egret/kubeconfig\"\ngateway = \"egress.lab\"\n",
        ))
        .config;
        let kubernetes = config.kubernetes.expect("[kubernetes]");
        assert_eq!(
            kubernetes.kubeconfig,
            Some(PathBuf::from("/etc/egret/kubeconfig"))
        );
        assert_eq!(kubernetes.gateway, "egress.lab");

        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/none\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(
            e.problem,
            "/etc/egret/none: cannot read it: No such file or directory"
        );
        let e = assert_error(
            &k("kubeconfig = \"kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(e.problem, "\"kubeconfig\" is not an absolute path");
        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/garbage.kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert!(
            e.problem
                .starts_with("/etc/egret/garbage.kubeconfig is not a kubeconfig: "),
            "{}",
            e.problem
        );
        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/nowhere.kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(
            e.problem,
            "the current-context \"other\" is not among its contexts"
        );
        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/serverless.kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(
            e.problem,
            "the cluster \"lab\" of the current-context \"gw\" has no server"
        );
        assert!(e.allowed.contains("$KUBECONFIG"), "{}", e.allowed);

        for bad in [
            "",
            "Default",
            "-gw",
            "gw-",
            "a..b",
            "gw_1",
            &"a".repeat(254),
        ] {
            let text = k(&format!("gateway = \"{bad}\"\n"));
            let e = assert_error(&text, "kubernetes.gateway", "gateway =");
            assert!(e.allowed.contains("object"), "{}", e.allowed);
        }
        accept(&k(&format!("gateway = \"{}\"\n", "a".repeat(253))));
    }

    #[test]
    fn without_a_kubeconfig_key_kubeconfig_env_must_lead_to_a_cluster() {
        let text = with("[kubernetes]\n");
        let parse = |host: HostFacts| match Config::from_str(&text, &host) {
            Ok(_) => panic!("accepted"),
            Err(ConfigError::Invalid(d)) => d,
            Err(e) => panic!("{e}"),
        };
        let mut unset = host();
        unset.kubeconfig_env = None;
        let d = parse(unset);
        assert_eq!(d[0].key, "kubernetes.kubeconfig");
        assert_eq!(d[0].problem, "not set, and $KUBECONFIG is not set either");
        assert_eq!(d[0].line, line_of(&text, "[kubernetes]"));
        let d = parse(host().with_kubeconfig_env("/etc/egret/garbage.kubeconfig"));
        assert!(
            d[0].problem
                .starts_with("from $KUBECONFIG: /etc/egret/garbage.kubeconfig is not"),
            "{}",
            d[0].problem
        );
        // A list, merged: the first file's current context wins.
        let merged =
            host().with_kubeconfig_env("/etc/egret/kubeconfig:/etc/egret/nowhere.kubeconfig");
        assert!(Config::from_str(&text, &merged).is_ok());
    }
}
