//! `[api]`: where the agent answers `GET /metrics` and `GET /status`.

use egret_config::check::Check;
use egret_config::raw::Section;

use super::Checker;
use crate::config::raw::RawApi;
use crate::config::{Api, defaults};

/// egret-gateway's default `[api].listen` port: an agent beside a gateway must not take it.
const GATEWAY_API_PORT: u16 = egret_config::api::GATEWAY_PORT;

impl Checker<'_, '_, '_> {
    /// `[api]`: `listen` an address with a port, or `""` for no API.
    pub(super) fn api(&mut self, section: &Section<RawApi>) -> Option<Api> {
        let absent = RawApi::default();
        let (a, table) = section.contents(&absent)?;
        let listen = self.value(
            table,
            "listen",
            &a.listen,
            || Some(defaults::API_LISTEN),
            |c, raw| {
                let key = "api.listen";
                if raw.get_ref().trim().is_empty() {
                    return Some(None);
                }
                let addr = c.socket_addr(key, raw)?;
                if addr.port() == GATEWAY_API_PORT {
                    let allowed = c.allowed(key);
                    c.report.warning(
                        key,
                        Some(raw.span()),
                        format!(
                            "port {GATEWAY_API_PORT} is egret-gateway's API port; an agent and \
                             a gateway on one host cannot both listen there"
                        ),
                        allowed,
                    );
                }
                Some(Some(addr))
            },
        );
        Some(Api { listen: listen? })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;

    #[test]
    fn the_api_listens_on_loopback_by_default_and_can_be_moved_or_turned_off() {
        assert_eq!(
            accept("").config.api.listen,
            Some("127.0.0.1:9478".parse().expect("address"))
        );
        assert_eq!(
            accept("[api]\nlisten = \"[::]:19478\"\n").config.api.listen,
            Some("[::]:19478".parse().expect("address"))
        );
        assert_eq!(accept("[api]\nlisten = \"\"\n").config.api.listen, None);
        let e = assert_error(
            "[agent]\nmode = \"static\"\n\n[api]\nlisten = \"127.0.0.1\"\n",
            "api.listen",
            "\"127.0.0.1\"",
        );
        assert_eq!(
            e.to_string(),
            "5:10: error: api.listen: \"127.0.0.1\" is not an address:port; allowed: a socket \
             address with a non-zero port, such as \"127.0.0.1:9478\" (the default), or \"\" \
             for no API"
        );
        let e = assert_error(
            "[api]\nlisten = \"0.0.0.0:0\"\n",
            "api.listen",
            "\"0.0.0.0:0\"",
        );
        assert_eq!(e.problem, "\"0.0.0.0:0\" has port 0");
        assert_error("[api]\nlisten = 9478\n", "api.listen", "9478");
        assert_error("[api]\nport = 9478\n", "api.port", "port");
        // The gateway's port works, with a word of warning.
        assert_warning(
            "[api]\nlisten = \"127.0.0.1:9477\"\n",
            "api.listen",
            "\"127.0.0.1:9477\"",
        );
    }
}
