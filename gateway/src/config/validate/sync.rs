//! `[sync]`: flow state streamed to the peer gateways, and the key that seals it.

use std::net::SocketAddr;
use std::path::PathBuf;

use egret_config::check::{Check, Seen, values, written};
use egret_config::raw::{List, Section};
use toml::Spanned;

use super::Checker;
use crate::config::raw::RawSync;
use crate::config::{Secret, StateSync};
use crate::sync::seal::MIN_SECRET;

impl Checker<'_, '_, '_> {
    /// `Some(None)`: no `[sync]`, so no state sync; `None`: invalid.
    pub(super) fn sync(&mut self, section: &Section<RawSync>) -> Option<Option<StateSync>> {
        let table = match section {
            Section::Present(table) => table,
            Section::Absent => return Some(None),
            Section::Invalid => return None,
        };
        let s = &table.value;
        let listen = self
            .required(table, "sync", "listen", &s.listen)
            .and_then(|raw| self.socket_addr("sync.listen", raw));
        let peers = self
            .required(table, "sync", "peers", &s.peers)
            .and_then(|raw| self.sync_peers(raw, listen));
        let key = match written(Some(table), "key_file", &s.key_file) {
            None => None,
            Some(Some(path)) => self.key_file("sync.key_file", path).map(Some),
            Some(None) => {
                self.report.warning(
                    "sync",
                    Some(table.span.clone()),
                    "no key_file: the flow sync is not authenticated, and any host on the segment can install, change or remove flows",
                    "key_file = \"/etc/egret/sync.key\" with the same key on every gateway",
                );
                Some(None)
            }
        };
        let previous_key = match written(Some(table), "previous_key_file", &s.previous_key_file) {
            None => None,
            Some(None) => Some(None),
            Some(Some(path)) if s.key_file.is_none() && !table.set_aside("key_file") => self
                .refuse(
                    "sync.previous_key_file",
                    Some(path.span()),
                    "a previous key without a current one",
                ),
            Some(Some(path)) => self.key_file("sync.previous_key_file", path).map(Some),
        };
        Some(Some(StateSync {
            listen: listen?,
            peers: peers?,
            key: key?,
            previous_key: previous_key?,
        }))
    }

    fn sync_peers(&mut self, raw: &List, listen: Option<SocketAddr>) -> Option<Vec<SocketAddr>> {
        if raw.get_ref().is_empty() {
            self.report.error(
                "sync.peers",
                Some(raw.span()),
                "empty: state would be sent nowhere",
                "at least one peer gateway; remove [sync] to run without state sync",
            );
            return None;
        }
        let mut seen = Seen::default();
        let items = self.each("sync.peers", raw.get_ref(), |c, key, peer| {
            let addr = c.socket_addr(key, peer)?;
            if Some(addr) == listen {
                c.report.error(
                    key,
                    Some(peer.span()),
                    format!("{addr} is this gateway's own sync.listen"),
                    "the address of another gateway",
                );
                return None;
            }
            c.unique(&mut seen, addr, key, peer.span(), "each peer once")
                .then_some(addr)
        })?;
        Some(values(items))
    }

    /// A key file: readable, a regular file, at least [`MIN_SECRET`] bytes, no access for
    /// others (an error) or the group (a warning).
    fn key_file(&mut self, key: &str, raw: &Spanned<String>) -> Option<(PathBuf, Secret)> {
        self.non_empty(key, raw)?;
        let path = self.absolute_path(key, raw)?;
        let file = match self.host.key_file(&path) {
            Ok(file) => file,
            Err(why) => return self.refuse(key, Some(raw.span()), why),
        };
        if file.mode & 0o007 != 0 {
            self.report.error(
                key,
                Some(raw.span()),
                format!("others may access it (mode {:04o})", file.mode),
                format!("chmod 600 {}", path.display()),
            );
            return None;
        }
        if file.mode & 0o070 != 0 {
            self.report.warning(
                key,
                Some(raw.span()),
                format!(
                    "its group may access it (mode {:04o}): every member can forge flows",
                    file.mode
                ),
                format!(
                    "chmod 600 {}, or a group holding only the gateway's user",
                    path.display()
                ),
            );
        }
        if file.bytes.len() < MIN_SECRET {
            self.report.error(
                key,
                Some(raw.span()),
                format!("holds {} bytes", file.bytes.len()),
                format!("at least {MIN_SECRET} random bytes"),
            );
            return None;
        }
        Some((path, Secret(file.bytes)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::fixtures::*;
    use crate::config::{HostFacts, Secret};

    const SYNC: &str = "[sync]\nlisten = \"192.168.1.10:4801\"\npeers = [\"192.168.1.12:4801\"]\n";

    #[test]
    fn sync_keys_are_read_and_kept() {
        let text = with(&format!(
            "{SYNC}key_file = \"/etc/egret/sync.key\"\nprevious_key_file = \"/etc/egret/old.key\"\n"
        ));
        let checked = accept(&text);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let sync = checked.config.sync.expect("[sync]");
        assert_eq!(
            sync.key,
            Some((PathBuf::from("/etc/egret/sync.key"), Secret(vec![1; 32])))
        );
        assert_eq!(sync.previous_key.map(|k| k.1.0.len()), Some(40));
    }

    #[test]
    fn a_sync_without_a_key_is_accepted_with_a_warning() {
        let checked = accept(&with(SYNC));
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert_eq!(checked.warnings[0].key, "sync");
        assert!(checked.warnings[0].problem.contains("not authenticated"));
        assert_eq!(checked.warnings[0].line, line_of(&with(SYNC), "[sync]"));
    }

    #[test]
    fn a_key_file_that_is_short_exposed_missing_or_relative_is_refused() {
        let key = |path: &str| with(&format!("{SYNC}key_file = \"{path}\"\n"));
        let e = assert_error(&key("/etc/egret/short.key"), "sync.key_file", "key_file");
        assert_eq!(e.problem, "holds 31 bytes");
        let e = assert_error(&key("/etc/egret/world.key"), "sync.key_file", "key_file");
        assert!(e.problem.contains("0644"), "{}", e.problem);
        assert!(e.allowed.contains("chmod 600"), "{}", e.allowed);
        let e = assert_error(&key("/etc/egret/none.key"), "sync.key_file", "key_file");
        assert!(e.problem.contains("cannot read"), "{}", e.problem);
        assert_error(&key("sync.key"), "sync.key_file", "key_file");
        // Readable by its group: accepted, with a warning.
        let checked = accept(&key("/etc/egret/group.key"));
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert!(checked.warnings[0].problem.contains("0640"));
        // A previous key alone means nothing.
        let text = with(&format!(
            "{SYNC}previous_key_file = \"/etc/egret/old.key\"\n"
        ));
        assert_error(&text, "sync.previous_key_file", "previous_key_file");
        let text = with(&format!(
            "{SYNC}key_file = \"/etc/egret/sync.key\"\nprevious_key_file = \"/etc/egret/world.key\"\n"
        ));
        assert_error(&text, "sync.previous_key_file", "previous_key_file");
    }

    #[test]
    fn real_key_files_are_checked_on_disk() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("egret-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sync.key");
        std::fs::write(&path, [9u8; 32]).expect("written");
        let real = HostFacts::new("h").reading_real_files();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            real.key_file(&path).map(|f| (f.mode, f.bytes.len())),
            Ok((0o600, 32))
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        assert_eq!(real.key_file(&path).map(|f| f.mode), Ok(0o604));
        assert_eq!(
            real.key_file(&dir).map(|f| f.mode),
            Err("not a regular file".into())
        );
        std::fs::remove_dir_all(&dir).expect("removed");
        assert!(real.key_file(&path).is_err());
    }

    #[test]
    fn sync_needs_a_listen_address_and_peers() {
        let text = with("[sync]\nlisten = \"192.168.1.10:4801\"\npeers = []\n");
        assert_error(&text, "sync.peers", "peers = []");
        let text = with("[sync]\nlisten = \"192.168.1.10\"\npeers = [\"192.168.1.11:4801\"]\n");
        assert_error(&text, "sync.listen", "listen");
        let text =
            with("[sync]\nlisten = \"192.168.1.10:4801\"\npeers = [\"192.168.1.10:4801\"]\n");
        assert_error(&text, "sync.peers[0]", "peers");
        let text = with("[sync]\npeers = [\"192.168.1.11:4801\"]\n");
        assert_error(&text, "sync.listen", "[sync]");
    }
}
