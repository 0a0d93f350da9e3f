//! The plugin's entry in the node's CNI configuration, as pure functions on file names and
//! file text: which file the container runtime uses, and that file with egret-cni's entry
//! added, replaced or removed. [`crate::install`] does the file I/O around them.
//!
//! Invariants:
//! - The file chosen is the one the runtime uses: the lexically first `*.conf`, `*.conflist`
//!   or `*.json` in the directory (libcni's `ConfFiles`, sorted, as containerd and CRI-O
//!   load it), skipping a `.conf`/`.json` without a `type` as they do.
//! - Edits are splices of the original text: only the bytes of egret-cni's entry (and the
//!   separator before it) change. Other plugins, their key order and formatting, the
//!   conflist's `cniVersion`, `name` and any other key stay byte for byte, so install then
//!   uninstall gives back the file the primary CNI wrote.
//! - The entry is the chain's last plugin, appended after the primary CNI and its helpers
//!   (`portmap`, `bandwidth`, `cilium-cni` in chaining mode); an existing entry is replaced
//!   in place and never duplicated.
//! - Every edit is parsed again before it is returned: a text that is not the expected
//!   conflist is an error, never a file to write.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::spec::{self, FailurePolicy, PLUGIN_TYPE, SUPPORTED_VERSIONS};

/// The extensions the runtime loads configuration from.
pub const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// Why the configuration cannot be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflistError {
    #[error("{file}: not JSON ({reason}); refusing to edit it")]
    NotJson { file: String, reason: String },
    #[error("{file}: {what}; refusing to edit it")]
    NotAConflist { file: String, what: String },
    #[error(
        "{file}: CNI version {version} is not one egret-cni speaks ({}); \
         refusing to chain it there",
        SUPPORTED_VERSIONS.join(", ")
    )]
    UnsupportedVersion { file: String, version: String },
    #[error("the egret-cni entry is invalid: {0}")]
    Entry(String),
}

/// egret-cni's entry in the chain: the keys [`spec::parse_config`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub socket: String,
    pub timeout: Duration,
    pub failure_policy: FailurePolicy,
}

impl Entry {
    /// An entry the plugin accepts (checked with the plugin's own parser).
    pub fn new(
        socket: impl Into<String>,
        timeout: Duration,
        failure_policy: FailurePolicy,
    ) -> Result<Entry, ConflistError> {
        let entry = Entry {
            socket: socket.into(),
            timeout,
            failure_policy,
        };
        let mut conf = entry.value();
        conf["cniVersion"] = json!(spec::LATEST_VERSION);
        conf["name"] = json!("check");
        spec::parse_config(conf.to_string().as_bytes())
            .map_err(|e| ConflistError::Entry(e.to_string()))?;
        Ok(entry)
    }

    /// The entry as a JSON value.
    pub fn value(&self) -> Value {
        json!({
            "type": PLUGIN_TYPE,
            "socket": self.socket,
            "timeout": humantime::format_duration(self.timeout).to_string(),
            "failure_policy": self.failure_policy.as_str(),
        })
    }

    /// The entry's text: one line, or one key a line at `indent` + `step` with the closing
    /// brace at `indent`, to sit among the other plugins.
    fn text(&self, layout: Option<(&str, &str)>) -> String {
        // The keys in the order a reader expects them, not serde_json's sorted order.
        let pairs = [
            ("type", json!(PLUGIN_TYPE)),
            ("socket", json!(self.socket)),
            (
                "timeout",
                json!(humantime::format_duration(self.timeout).to_string()),
            ),
            ("failure_policy", json!(self.failure_policy.as_str())),
        ];
        let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        match layout {
            None => format!("{{{}}}", pairs.join(", ")),
            Some((indent, step)) => {
                let inner = format!(",\n{indent}{step}");
                format!("{{\n{indent}{step}{}\n{indent}}}", pairs.join(&inner))
            }
        }
    }
}

/// What the runtime would make of one file in the configuration directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A `.conflist`: a chain of plugins.
    List,
    /// A `.conf` or `.json` holding one plugin: the runtime makes it a one-plugin chain.
    Single,
    /// A `.conf` or `.json` without a `type`: the runtime skips it.
    Skipped,
}

/// The files of a directory the runtime considers, in the order it tries them.
pub fn candidates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = names
        .into_iter()
        .filter(|name| {
            Path::new(name)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .collect();
    names.sort_unstable();
    names
}

/// What `file`'s `text` is to the runtime; garbage is an error naming the file.
pub fn kind(file: &str, text: &str) -> Result<Kind, ConflistError> {
    let value = parse(file, text)?;
    if file.ends_with(".conflist") {
        plugins(file, &value)?;
        return Ok(Kind::List);
    }
    match value.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(Kind::Single),
        _ => Ok(Kind::Skipped),
    }
}

/// The conflist `text` (of `file`) with egret-cni's entry as the last plugin, or replaced in
/// place where it already is (further copies are removed). `None`: the text already says
/// exactly that.
pub fn install(file: &str, text: &str, entry: &Entry) -> Result<Option<String>, ConflistError> {
    let value = parse(file, text)?;
    check_version(file, &value)?;
    let list = plugins(file, &value)?;
    if list.is_empty() {
        return Err(not_a_conflist(file, "the plugins array is empty"));
    }
    // Copies after the first go, one at a time from the end, each on a fresh scan.
    let mut out = text.to_owned();
    while let [_, .., last] = ours(file, &parse(file, &out)?)?[..] {
        let layout = scan(file, &out)?;
        out.replace_range(layout.removal(last), "");
    }
    let layout = scan(file, &out)?;
    match ours(file, &parse(file, &out)?)?.first() {
        Some(&i) => {
            let shape = layout.shape(&out, i);
            out.replace_range(layout.elements[i].clone(), &entry.text(shape));
        }
        None => {
            let i = layout.elements.len() - 1;
            let last = layout.elements[i].clone();
            let addition = format!(
                ",{}{}",
                &out[layout.before(i)..last.start],
                entry.text(layout.shape(&out, i))
            );
            out.insert_str(last.end, &addition);
        }
    }
    // The edit must be the original chain with our entry in its place.
    let ours_before = ours(file, &value)?;
    let mut chain: Vec<Value> = Vec::with_capacity(list.len() + 1);
    for (i, plugin) in list.iter().enumerate() {
        match ours_before.iter().position(|&o| o == i) {
            None => chain.push(plugin.clone()),
            Some(0) => chain.push(entry.value()),
            Some(_) => {}
        }
    }
    if ours_before.is_empty() {
        chain.push(entry.value());
    }
    let mut expected = value.clone();
    expected["plugins"] = Value::Array(chain);
    verify(file, &out, &expected)?;
    Ok((out != text).then_some(out))
}

/// The conflist `text` (of `file`) without egret-cni's entries. `None`: there are none.
pub fn uninstall(file: &str, text: &str) -> Result<Option<String>, ConflistError> {
    let value = parse(file, text)?;
    let mut out = text.to_owned();
    while let Some(&last) = ours(file, &parse(file, &out)?)?.last() {
        let layout = scan(file, &out)?;
        out.replace_range(layout.removal(last), "");
    }
    if out == text {
        return Ok(None);
    }
    let mut expected = value.clone();
    if let Some(Value::Array(list)) = expected.get_mut("plugins") {
        list.retain(|p| p.get("type").and_then(Value::as_str) != Some(PLUGIN_TYPE));
    }
    verify(file, &out, &expected)?;
    Ok(Some(out))
}

fn scan(file: &str, text: &str) -> Result<Layout, ConflistError> {
    Layout::scan(text).ok_or_else(|| not_a_conflist(file, "no plugins array"))
}

/// An edit is written only when it parses back as the value it was meant to be.
fn verify(file: &str, text: &str, expected: &Value) -> Result<(), ConflistError> {
    if parse(file, text)? != *expected {
        return Err(not_a_conflist(
            file,
            "the edited text does not parse back as expected (a bug: please report it)",
        ));
    }
    Ok(())
}

/// The one-plugin `.conf` (or `.json`) `text` as a conflist with that plugin, its bytes
/// unchanged, as libcni's `ConfListFromConf` reads it. [`unconvert`] undoes it.
pub fn convert(file: &str, text: &str) -> Result<String, ConflistError> {
    let value = parse(file, text)?;
    check_version(file, &value)?;
    Ok(wrap(&value, text))
}

/// The `.conf` text a conflist made by [`convert`] (its egret-cni entry removed) came from;
/// `None` when the conflist is not exactly such a wrapper.
pub fn unconvert(text: &str) -> Option<&str> {
    let value: Value = serde_json::from_str(text).ok()?;
    let prefix = wrapper_prefix(&value);
    let inner = text.strip_prefix(&prefix)?.strip_suffix(WRAPPER_SUFFIX)?;
    let conf: Value = serde_json::from_str(inner).ok()?;
    (wrap(&conf, inner) == text).then_some(inner)
}

/// The name of the conflist [`convert`] writes for `file` (`10-x.conf` → `10-x.conflist`),
/// and of the `.conf` [`unconvert`] restores for a conflist.
pub fn with_extension(file: &str, extension: &str) -> String {
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    format!("{stem}.{extension}")
}

const WRAPPER_SUFFIX: &str = "\n  ]\n}\n";

fn wrapper_prefix(conf: &Value) -> String {
    let mut prefix = String::from("{\n");
    for key in ["cniVersion", "name"] {
        if let Some(v) = conf.get(key) {
            prefix.push_str(&format!("  \"{key}\": {v},\n"));
        }
    }
    prefix.push_str("  \"plugins\": [\n");
    prefix
}

fn wrap(conf: &Value, text: &str) -> String {
    format!("{}{text}{WRAPPER_SUFFIX}", wrapper_prefix(conf))
}

fn parse(file: &str, text: &str) -> Result<Value, ConflistError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConflistError::NotJson {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(not_a_conflist(file, "not a JSON object"));
    }
    Ok(value)
}

fn not_a_conflist(file: &str, what: &str) -> ConflistError {
    ConflistError::NotAConflist {
        file: file.to_owned(),
        what: what.to_owned(),
    }
}

fn plugins<'v>(file: &str, value: &'v Value) -> Result<&'v [Value], ConflistError> {
    let list = value
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| not_a_conflist(file, "no plugins array"))?;
    if let Some(bad) = list.iter().find(|p| !p.is_object()) {
        return Err(not_a_conflist(
            file,
            &format!("plugin {bad} is not an object"),
        ));
    }
    Ok(list)
}

/// The indexes of egret-cni's entries in the chain.
fn ours(file: &str, value: &Value) -> Result<Vec<usize>, ConflistError> {
    Ok(plugins(file, value)?
        .iter()
        .enumerate()
        .filter(|(_, p)| p.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE))
        .map(|(i, _)| i)
        .collect())
}

/// The runtime calls the chain in the conflist's version: `cniVersion`, or (1.1) the
/// highest of `cniVersions`.
fn check_version(file: &str, value: &Value) -> Result<(), ConflistError> {
    let mut versions: Vec<&str> = value
        .get("cniVersions")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    versions.sort_by_key(|v| version_key(v));
    let version = versions
        .last()
        .copied()
        .or_else(|| value.get("cniVersion").and_then(Value::as_str))
        .ok_or_else(|| not_a_conflist(file, "no cniVersion"))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ConflistError::UnsupportedVersion {
            file: file.to_owned(),
            version: version.to_owned(),
        });
    }
    Ok(())
}

fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|n| n.parse().unwrap_or(0)).collect()
}

/// Where the top-level `plugins` array and its elements are in a conflist's text.
struct Layout {
    /// Each element's bytes.
    elements: Vec<Range<usize>>,
    /// For each element, the index just past the `[` or `,` before it.
    after: Vec<usize>,
}

impl Layout {
    /// Scans text that already parsed as a JSON object. `None`: no `plugins` array.
    fn scan(text: &str) -> Option<Layout> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i += 1;
        let mut found = None;
        loop {
            i = skip_ws(b, i);
            match b.get(i)? {
                b'}' => break,
                b',' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let key_end = skip_value(b, i)?;
            let key: String = serde_json::from_str(&text[i..key_end]).ok()?;
            i = skip_ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, i + 1);
            let end = skip_value(b, start)?;
            // The last `plugins` wins, as in serde_json and Go's encoding/json.
            if key == "plugins" && b.get(start) == Some(&b'[') {
                found = Some(start);
            }
            i = end;
        }
        let mut i = found? + 1;
        let mut layout = Layout {
            elements: Vec::new(),
            after: Vec::new(),
        };
        let mut after = i;
        loop {
            i = skip_ws(b, i);
            match b.get(i)? {
                b']' => break,
                b',' => {
                    i += 1;
                    after = i;
                    continue;
                }
                _ => {}
            }
            let end = skip_value(b, i)?;
            layout.elements.push(i..end);
            layout.after.push(after);
            i = end;
        }
        Some(layout)
    }

    /// Where the separator before element `i` starts: past the previous element, or past
    /// the `[`.
    fn before(&self, i: usize) -> usize {
        self.after[i]
    }

    /// The bytes to remove to take element `i` out: with the comma before it, or for the
    /// first element with the comma and space after it.
    fn removal(&self, i: usize) -> Range<usize> {
        match (i.checked_sub(1), self.elements.get(i + 1)) {
            (Some(prev), _) => self.elements[prev].end..self.elements[i].end,
            (None, Some(next)) => self.elements[i].start..next.start,
            (None, None) => self.elements[i].clone(),
        }
    }

    /// How element `i` is laid out: `None` on one line with its neighbours, else the
    /// indentation of its line and one indentation step.
    fn shape<'t>(&self, text: &'t str, i: usize) -> Option<(&'t str, &'t str)> {
        let separator = &text[self.before(i)..self.elements[i].start];
        let indent = &separator[separator.rfind('\n')? + 1..];
        let element = &text[self.elements[i].clone()];
        let step = element
            .lines()
            .nth(1)
            .map(|line| {
                let ws = &line[..line.len() - line.trim_start().len()];
                ws.strip_prefix(indent).unwrap_or("  ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or("  ");
        Some((indent, step))
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// The end of the JSON value starting at `i` (the text is known to be valid JSON).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while b
                .get(j)
                .is_some_and(|c| !matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The end of the string starting at the quote at `i`.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flannel's kube-flannel.yml `cni-conf.json`, as its install container writes it to
    /// /etc/cni/net.d/10-flannel.conflist.
    const FLANNEL: &str = include_str!("../tests/fixtures/10-flannel.conflist");

    /// Calico's 10-calico.conflist (manifest install, Kubernetes datastore).
    const CALICO: &str = include_str!("../tests/fixtures/10-calico.conflist");

    /// Cilium's generic-veth chaining on top of Calico (its chaining guide's ConfigMap,
    /// written as 05-cilium.conflist).
    const CILIUM_CHAINING: &str = include_str!("../tests/fixtures/05-cilium.conflist");

    /// A one-line conflist, as some tools write them.
    const COMPACT: &str = r#"{"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp","ipam":{"type":"host-local"}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    /// An old-style single-plugin 10-bridge.conf.
    const BRIDGE_CONF: &str = include_str!("../tests/fixtures/10-bridge.conf");

    fn entry() -> Entry {
        Entry::new(
            spec::DEFAULT_SOCKET,
            spec::DEFAULT_TIMEOUT,
            FailurePolicy::Fail,
        )
        .expect("valid")
    }

    fn types(text: &str) -> Vec<String> {
        let value: Value = serde_json::from_str(text).expect("json");
        value["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn the_entry_goes_last_in_every_real_chain_and_nothing_else_moves() {
        for (text, chain) in [
            (FLANNEL, &["flannel", "portmap"][..]),
            (CALICO, &["calico", "portmap", "bandwidth"][..]),
            (CILIUM_CHAINING, &["calico", "portmap", "cilium-cni"][..]),
            (COMPACT, &["ptp", "portmap"][..]),
        ] {
            let edited = install("f.conflist", text, &entry())
                .expect("installs")
                .expect("changed");
            let mut expected: Vec<String> = chain.iter().map(|s| (*s).to_owned()).collect();
            expected.push(PLUGIN_TYPE.to_owned());
            assert_eq!(types(&edited), expected);
            // Only an addition: the original text is a prefix and a suffix of the edit.
            let at = text.rfind(']').expect("array end");
            let at = text[..at].rfind('}').expect("last plugin end") + 1;
            assert!(edited.starts_with(&text[..at]), "{edited}");
            assert!(edited.ends_with(&text[at..]), "{edited}");
            // The entry is what the plugin reads, with the conflist's version and name.
            let value: Value = serde_json::from_str(&edited).expect("json");
            let mut conf = value["plugins"][chain.len()].clone();
            conf["cniVersion"] = value["cniVersion"].clone();
            conf["name"] = value["name"].clone();
            let parsed = spec::parse_config(conf.to_string().as_bytes()).expect("the plugin");
            assert_eq!(parsed.socket, Path::new(spec::DEFAULT_SOCKET));
            assert_eq!(parsed.timeout, spec::DEFAULT_TIMEOUT);
            assert_eq!(parsed.failure_policy, FailurePolicy::Fail);
        }
    }

    #[test]
    fn the_entry_follows_the_files_layout() {
        let edited = install("f", FLANNEL, &entry())
            .expect("ok")
            .expect("changed");
        assert!(
            edited.contains(
                "    },\n    {\n      \"type\": \"egret-cni\",\n      \"socket\": \
                 \"/run/egret/cni.sock\",\n      \"timeout\": \"5s\",\n      \
                 \"failure_policy\": \"Fail\"\n    }\n  ]"
            ),
            "{edited}"
        );
        let edited = install("f", COMPACT, &entry())
            .expect("ok")
            .expect("changed");
        assert!(!edited.contains('\n'), "{edited}");
    }

    #[test]
    fn installing_twice_is_installing_once_and_new_settings_replace_the_entry_in_place() {
        for text in [FLANNEL, CALICO, CILIUM_CHAINING, COMPACT] {
            let once = install("f", text, &entry()).expect("ok").expect("changed");
            assert_eq!(install("f", &once, &entry()).expect("ok"), None);
            let ignore = Entry::new(
                "/run/x.sock",
                Duration::from_millis(750),
                FailurePolicy::Ignore,
            )
            .expect("valid");
            let changed = install("f", &once, &ignore).expect("ok").expect("changed");
            let value: Value = serde_json::from_str(&changed).expect("json");
            let plugins = value["plugins"].as_array().expect("plugins");
            assert_eq!(
                types(&changed).iter().filter(|t| *t == PLUGIN_TYPE).count(),
                1
            );
            assert_eq!(plugins.last(), Some(&ignore.value()));
            assert_eq!(ignore.value()["timeout"], "750ms");
            // Back to the first settings: the text of the first install.
            let back = install("f", &changed, &entry())
                .expect("ok")
                .expect("changed");
            assert_eq!(back, once);
        }
    }

    #[test]
    fn an_entry_placed_elsewhere_stays_there_and_copies_go() {
        let text = r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "egret-cni", "timeout": "1s"},
            {"type": "ptp"},
            {"type": "egret-cni"},
            {"type": "portmap"},
            {"type": "egret-cni", "socket": "/x"}
        ]}"#;
        let edited = install("f", text, &entry()).expect("ok").expect("changed");
        assert_eq!(types(&edited), ["egret-cni", "ptp", "portmap"]);
        let value: Value = serde_json::from_str(&edited).expect("json");
        assert_eq!(value["plugins"][0], entry().value());
        assert_eq!(
            uninstall("f", &edited).expect("ok").map(|t| types(&t)),
            Some(vec!["ptp".to_owned(), "portmap".to_owned()])
        );
    }

    #[test]
    fn install_then_uninstall_gives_back_the_primary_cnis_bytes() {
        for text in [FLANNEL, CALICO, CILIUM_CHAINING, COMPACT] {
            let installed = install("f", text, &entry()).expect("ok").expect("changed");
            let removed = uninstall("f", &installed).expect("ok").expect("changed");
            assert_eq!(removed, text);
            assert_eq!(uninstall("f", text).expect("ok"), None, "nothing installed");
        }
        // Where the entry is first, its comma after goes with it.
        let text = r#"{"cniVersion":"1.0.0","plugins":[ {"type":"egret-cni"} , {"type":"ptp"} ]}"#;
        let removed = uninstall("f", text).expect("ok").expect("changed");
        assert_eq!(
            removed,
            r#"{"cniVersion":"1.0.0","plugins":[ {"type":"ptp"} ]}"#
        );
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_conflist_and_comes_back_byte_for_byte() {
        assert_eq!(kind("10-bridge.conf", BRIDGE_CONF), Ok(Kind::Single));
        assert_eq!(
            with_extension("10-bridge.conf", "conflist"),
            "10-bridge.conflist"
        );
        let list = convert("10-bridge.conf", BRIDGE_CONF).expect("converts");
        let value: Value = serde_json::from_str(&list).expect("json");
        assert_eq!(value["cniVersion"], "0.4.0");
        assert_eq!(value["name"], "mynet");
        let original: Value = serde_json::from_str(BRIDGE_CONF).expect("json");
        assert_eq!(value["plugins"], json!([original]));
        let installed = install("10-bridge.conflist", &list, &entry())
            .expect("ok")
            .expect("changed");
        assert_eq!(types(&installed), ["bridge", "egret-cni"]);
        let removed = uninstall("10-bridge.conflist", &installed)
            .expect("ok")
            .expect("changed");
        assert_eq!(unconvert(&removed), Some(BRIDGE_CONF));
        // A conflist somebody else wrote is not a conversion.
        assert_eq!(unconvert(FLANNEL), None);
        assert_eq!(
            unconvert(
                &removed
                    .replace("cni0", "cni1")
                    .replace("mynet\",\n  \"plugins", "other\",\n  \"plugins")
            ),
            None
        );
    }

    #[test]
    fn the_runtimes_file_is_the_lexically_first_config() {
        let names = [
            "99-loopback.conf",
            "calico-kubeconfig",
            "10-flannel.conflist",
            "05-cilium.conflist",
            ".10-flannel.conflist.egret-1-2.tmp",
            "10-flannel.conflist.cilium_bak",
            "00-multus.json",
        ];
        assert_eq!(
            candidates(names),
            [
                "00-multus.json",
                "05-cilium.conflist",
                "10-flannel.conflist",
                "99-loopback.conf"
            ]
        );
        // A .conf that is really a conflist has no type: the runtime skips it.
        assert_eq!(kind("00-x.conf", FLANNEL), Ok(Kind::Skipped));
        assert_eq!(kind("10-flannel.conflist", FLANNEL), Ok(Kind::List));
    }

    #[test]
    fn unsupported_versions_are_refused_with_the_file_and_the_supported_ones() {
        let text = FLANNEL.replace("0.3.1", "0.2.0");
        let error =
            install("/etc/cni/net.d/10-flannel.conflist", &text, &entry()).expect_err("0.2.0");
        assert!(matches!(error, ConflistError::UnsupportedVersion { .. }));
        let said = error.to_string();
        assert!(
            said.contains("10-flannel.conflist") && said.contains("0.2.0"),
            "{said}"
        );
        assert!(said.contains("1.1.0"), "{said}");
        // 1.1's cniVersions: the highest is the one the runtime uses.
        let text =
            r#"{"cniVersions": ["1.0.0", "1.1.0"], "name": "n", "plugins": [{"type": "ptp"}]}"#;
        assert!(install("f", text, &entry()).is_ok());
        let text =
            r#"{"cniVersions": ["1.0.0", "1.10.0"], "name": "n", "plugins": [{"type": "ptp"}]}"#;
        assert!(install("f", text, &entry()).is_err());
        assert!(convert("f.conf", &BRIDGE_CONF.replace("0.4.0", "0.1.0")).is_err());
    }

    #[test]
    fn garbage_is_refused_with_the_files_name() {
        for (text, says) in [
            ("", "not JSON"),
            ("{\"plugins\": [", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            (
                r#"{"cniVersion": "1.0.0", "name": "n"}"#,
                "no plugins array",
            ),
            (
                r#"{"cniVersion": "1.0.0", "plugins": {}}"#,
                "no plugins array",
            ),
            (r#"{"cniVersion": "1.0.0", "plugins": []}"#, "empty"),
            (
                r#"{"cniVersion": "1.0.0", "plugins": [1]}"#,
                "not an object",
            ),
            (
                r#"{"name": "n", "plugins": [{"type": "ptp"}]}"#,
                "no cniVersion",
            ),
        ] {
            let error = install("/etc/cni/net.d/10-x.conflist", text, &entry())
                .expect_err(says)
                .to_string();
            assert!(error.contains(says), "{says}: {error}");
            assert!(error.contains("/etc/cni/net.d/10-x.conflist"), "{error}");
            assert!(
                kind("10-x.conflist", text).is_err() || says == "no cniVersion" || says == "empty"
            );
        }
        assert!(uninstall("f", "{").is_err());
    }

    #[test]
    fn an_entry_the_plugin_would_refuse_is_refused_here() {
        for (socket, timeout) in [
            ("cni.sock", Duration::from_secs(5)),
            ("/run/egret/cni.sock", Duration::from_secs(301)),
            ("/run/egret/cni.sock", Duration::ZERO),
        ] {
            assert!(
                matches!(
                    Entry::new(socket, timeout, FailurePolicy::Fail),
                    Err(ConflistError::Entry(_))
                ),
                "{socket} {timeout:?}"
            );
        }
    }

    #[test]
    fn strings_with_brackets_and_escapes_do_not_confuse_the_scan() {
        let text = r#"{"cniVersion": "1.0.0", "na\"me": "x]}", "plugins": [{"type": "ptp", "a": "[{\"\\"}, {"type": "portmap"}], "z": [1]}"#;
        let installed = install("f", text, &entry()).expect("ok").expect("changed");
        assert_eq!(types(&installed), ["ptp", "portmap", "egret-cni"]);
        assert_eq!(
            uninstall("f", &installed).expect("ok").as_deref(),
            Some(text)
        );
    }
}
