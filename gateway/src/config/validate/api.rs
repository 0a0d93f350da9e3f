//! `[api]`: where the gateway answers `GET /metrics` and `GET /status`.

use egret_config::check::Check;
use egret_config::raw::Section;

use super::Checker;
use crate::config::raw::RawApi;
use crate::config::{Api, defaults};

impl Checker<'_, '_, '_> {
    pub(super) fn api(&mut self, section: &Section<RawApi>) -> Option<Api> {
        let absent = RawApi::default();
        let (a, table) = section.contents(&absent)?;
        let listen = self.value(
            table,
            "listen",
            &a.listen,
            || defaults::API_LISTEN,
            |c, raw| c.socket_addr("api.listen", raw),
        );
        Some(Api { listen: listen? })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;

    #[test]
    fn api_listen_must_be_a_socket_address() {
        let text = with("[api]\nlisten = \"localhost:9477\"\n");
        assert_error(&text, "api.listen", "localhost");
        let text = with("[api]\nlisten = \"127.0.0.1:0\"\n");
        assert_error(&text, "api.listen", "127.0.0.1:0");
    }
}
