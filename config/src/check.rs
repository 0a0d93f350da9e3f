//! The checks both daemons make of the values they read: required and optional keys,
//! integers in a range, addresses, socket addresses, durations, paths, Kubernetes names,
//! lists and repeats, and the tunnel's port and VNI.
//!
//! A daemon's checker implements [`Check`] (where its diagnostics go and its [`Schema`]) and
//! gets every check as a method. Each check reports what is wrong, with the key, the value's
//! place and what would be valid, and returns `None`; the caller goes on with the next key,
//! so one run reports every problem. A key set aside by the reader ([`crate::raw`]) was
//! reported already: it is neither defaulted nor reported again.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::raw::{Schema, Section, Table};
use crate::{Report, duration, tunnel};

/// Longest Kubernetes object name (a DNS subdomain).
pub const OBJECT_NAME_MAX: usize = 253;

/// A valid list element with its index and place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<T> {
    /// Its index in the list.
    pub index: usize,
    /// Its checked value.
    pub value: T,
    /// Where it is written.
    pub span: Range<usize>,
}

/// The values of checked list elements.
pub fn values<T>(items: Vec<Item<T>>) -> Vec<T> {
    items.into_iter().map(|item| item.value).collect()
}

/// Values already seen, with a label (`floating_ip[0].vrid`, `policy[0]`) and the place of
/// their first occurrence, to report a repeat against the first.
#[derive(Debug)]
pub struct Seen<T>(HashMap<T, (String, Option<Range<usize>>)>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(HashMap::new())
    }
}

/// The checks, for a daemon's checker to implement with where its diagnostics go.
pub trait Check<'t>: Sized {
    /// Where diagnostics go.
    fn report(&mut self) -> &mut Report<'t>;

    /// The daemon's schema: what is valid for each key.
    fn schema(&self) -> &'static Schema;

    /// What is valid for `key`, from the schema.
    fn allowed(&self, key: &str) -> &'static str {
        (self.schema().allowed)(key)
    }

    /// Reports `problem` with `key` (and what the schema allows there); returns `None`.
    fn refuse<T>(
        &mut self,
        key: &str,
        span: Option<Range<usize>>,
        problem: impl Into<String>,
    ) -> Option<T> {
        let allowed = self.allowed(key);
        self.report().error(key, span, problem, allowed);
        None
    }

    // ---- keys ----------------------------------------------------------------------

    /// A required table; reports it when missing. `None` also when it was unusable
    /// (reported while reading).
    fn required_section<'s, T>(
        &mut self,
        section: &'s Section<T>,
        key: &str,
    ) -> Option<&'s Table<T>> {
        match section {
            Section::Present(table) => Some(table),
            Section::Invalid => None,
            Section::Absent => self.refuse(key, None, "missing required section"),
        }
    }

    /// The effective value of an optional key `name` of `table`: `default` when absent,
    /// `check` of it when written, `None` when invalid (reported by `check`, or set aside
    /// and reported while reading).
    fn value<R, T, U>(
        &mut self,
        table: Option<&Table<U>>,
        name: &str,
        raw: &Option<R>,
        default: impl FnOnce() -> T,
        check: impl FnOnce(&mut Self, &R) -> Option<T>,
    ) -> Option<T> {
        match written(table, name, raw)? {
            None => Some(default()),
            Some(raw) => check(self, raw),
        }
    }

    /// A required key `name` of `table` at `path`; reports it at the table's header when
    /// missing (not when it was set aside: that is reported already).
    fn required<'a, R, U>(
        &mut self,
        table: &Table<U>,
        path: &str,
        name: &str,
        raw: &'a Option<R>,
    ) -> Option<&'a R> {
        if raw.is_none() && !table.set_aside(name) {
            let key = format!("{path}.{name}");
            self.refuse::<()>(&key, Some(table.span.clone()), "missing required key");
        }
        raw.as_ref()
    }

    // ---- values --------------------------------------------------------------------

    /// An integer within `range`, as `T`.
    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        raw: &Spanned<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let value = *raw.get_ref();
        if range.contains(&value) {
            return T::try_from(value).ok();
        }
        self.refuse(key, Some(raw.span()), format!("{value} is out of range"))
    }

    /// Text that is not blank.
    fn non_empty(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        if raw.get_ref().trim().is_empty() {
            return self.refuse(key, Some(raw.span()), "empty");
        }
        Some(raw.get_ref().clone())
    }

    /// An IPv4 address.
    fn ipv4(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        match raw.get_ref().parse() {
            Ok(address) => Some(address),
            Err(_) => self.refuse(
                key,
                Some(raw.span()),
                format!("{:?} is not an IPv4 address", raw.get_ref()),
            ),
        }
    }

    /// A unicast IPv4 address: not unspecified, broadcast, multicast or loopback.
    fn unicast(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        match unicast_problem(raw.get_ref()) {
            Ok(address) => Some(address),
            Err(problem) => self.refuse(key, Some(raw.span()), problem),
        }
    }

    /// `address:port` with a port other than 0.
    fn socket_addr(&mut self, key: &str, raw: &Spanned<String>) -> Option<SocketAddr> {
        let text = raw.get_ref().trim();
        let problem = match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => return Some(addr),
            Ok(_) => format!("{text:?} has port 0"),
            Err(_) => format!("{text:?} is not an address:port"),
        };
        self.refuse(key, Some(raw.span()), problem)
    }

    /// A humane duration ([`duration::parse`]).
    fn duration(&mut self, key: &str, raw: &Spanned<String>) -> Option<Duration> {
        match duration::parse(raw.get_ref()) {
            Ok(d) => Some(d),
            Err(problem) => self.refuse(
                key,
                Some(raw.span()),
                format!("{:?} is not a duration: {problem}", raw.get_ref()),
            ),
        }
    }

    /// A humane duration within `range`.
    fn bounded_duration(
        &mut self,
        key: &str,
        raw: &Spanned<String>,
        range: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let d = self.duration(key, raw)?;
        if range.contains(&d) {
            return Some(d);
        }
        self.refuse(
            key,
            Some(raw.span()),
            format!("{:?} is out of range", raw.get_ref()),
        )
    }

    /// An absolute path.
    fn absolute_path(&mut self, key: &str, raw: &Spanned<String>) -> Option<PathBuf> {
        let path = Path::new(raw.get_ref());
        if path.is_absolute() {
            return Some(path.to_owned());
        }
        self.refuse(
            key,
            Some(raw.span()),
            format!("{:?} is not an absolute path", raw.get_ref()),
        )
    }

    /// A Kubernetes object name (an RFC 1123 DNS subdomain).
    fn object_name(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        match object_name_problem(raw.get_ref()) {
            None => Some(raw.get_ref().clone()),
            Some(problem) => self.refuse(key, Some(raw.span()), problem),
        }
    }

    /// `[tunnel].port`: a UDP port, with a warning when a common CNI overlay uses it (the
    /// agent's tunnel shares the node with the CNI, so the CNI's socket would take our
    /// packets).
    fn tunnel_port(&mut self, key: &str, raw: &Spanned<i64>) -> Option<u16> {
        let port = self.int(key, raw, 1..=65535)?;
        if let Some(used_by) = tunnel::overlay_using(port) {
            self.report().warning(
                key,
                Some(raw.span()),
                format!("{port} is {used_by}; nodes running that CNI cannot also use it for egret"),
                format!("a port no CNI uses, such as {}", tunnel::DEFAULT_PORT),
            );
        }
        Some(port)
    }

    /// `[tunnel].vni`: 24 bits.
    fn vni(&mut self, key: &str, raw: &Spanned<i64>) -> Option<u32> {
        self.int(key, raw, 0..=i64::from(tunnel::VNI_MAX))
    }

    // ---- lists ---------------------------------------------------------------------

    /// Each element of the list `key` through `check`, which gets the element's key
    /// (`key[i]`) and reports its own problems; every element is checked. `None` if any
    /// was bad.
    fn each<T>(
        &mut self,
        key: &str,
        raw: &[Spanned<String>],
        mut check: impl FnMut(&mut Self, &str, &Spanned<String>) -> Option<T>,
    ) -> Option<Vec<Item<T>>> {
        let mut items = Vec::with_capacity(raw.len());
        let mut valid = true;
        for (index, element) in raw.iter().enumerate() {
            match check(self, &format!("{key}[{index}]"), element) {
                Some(value) => items.push(Item {
                    index,
                    value,
                    span: element.span(),
                }),
                None => valid = false,
            }
        }
        valid.then_some(items)
    }

    /// Records `value` under `label` at `span`; for a repeat, returns the label and line of
    /// the first occurrence (line 1 if it has no place) for the caller to report.
    fn repeat<T: Eq + Hash>(
        &mut self,
        seen: &mut Seen<T>,
        value: T,
        label: impl Into<String>,
        span: Option<Range<usize>>,
    ) -> Option<(String, usize)> {
        match seen.0.get(&value) {
            Some((first, first_span)) => {
                let line = self.report().line_of(first_span.clone());
                Some((first.clone(), line))
            }
            None => {
                seen.0.insert(value, (label.into(), span));
                None
            }
        }
    }
}

/// `Some(value)` for a key written or absent; `None` for one already reported and set
/// aside while reading.
pub fn written<'a, R, U>(
    table: Option<&Table<U>>,
    name: &str,
    raw: &'a Option<R>,
) -> Option<Option<&'a R>> {
    match raw {
        Some(raw) => Some(Some(raw)),
        None if table.is_some_and(|t| t.set_aside(name)) => None,
        None => Some(None),
    }
}

/// `text` as a unicast IPv4 address, or why it is not one.
pub fn unicast_problem(text: &str) -> Result<Ipv4Addr, String> {
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 address"))?;
    let what = if address.is_unspecified() {
        "the unspecified address"
    } else if address.is_broadcast() {
        "the broadcast address"
    } else if address.is_multicast() {
        "a multicast address"
    } else if address.is_loopback() {
        "a loopback address"
    } else {
        return Ok(address);
    };
    Err(format!("{address} is {what}, not a unicast address"))
}

/// Why `name` is not a Kubernetes object name (an RFC 1123 DNS subdomain: at most 253
/// characters, lowercase alphanumeric parts with '-', joined by '.', each starting and
/// ending with a letter or digit), if it is not one.
pub fn object_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".to_owned());
    }
    if name.len() > OBJECT_NAME_MAX {
        return Some(format!("{} characters long", name.chars().count()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Some(format!("{name:?} contains {c:?}"));
    }
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name
        .split('.')
        .any(|part| !alphanumeric(part.chars().next()) || !alphanumeric(part.chars().last()))
    {
        return Some(format!(
            "{name:?} has a part that does not start and end with a letter or digit"
        ));
    }
    None
}

/// Why `name` is not a namespace name (an RFC 1123 DNS label), if it is not one.
pub fn label_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some(format!("{name:?} is not 1 to 63 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("{name:?} contains {c:?}"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!("{name:?} starts or ends with '-'"));
    }
    None
}

/// `a, b, c`.
pub fn list<T: Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Diagnostic;

    fn allowed(key: &str) -> &'static str {
        match key {
            "port" => "a port",
            _ => "",
        }
    }

    static SCHEMA: Schema = Schema {
        sections: "none",
        allowed,
        see: "the manual",
    };

    struct Checker<'r, 't>(&'r mut Report<'t>);

    impl<'t> Check<'t> for Checker<'_, 't> {
        fn report(&mut self) -> &mut Report<'t> {
            self.0
        }
        fn schema(&self) -> &'static Schema {
            &SCHEMA
        }
    }

    /// Runs `check` on a checker of `text`; returns its result and the diagnostics.
    fn checked<T>(
        text: &str,
        check: impl FnOnce(&mut Checker<'_, '_>) -> T,
    ) -> (T, Vec<Diagnostic>) {
        let mut report = Report::new(text);
        let result = check(&mut Checker(&mut report));
        (result, report.finish())
    }

    fn spanned<T>(value: T, span: Range<usize>) -> Spanned<T> {
        Spanned::new(span, value)
    }

    fn table(set_aside: &[&str]) -> Table<()> {
        Table {
            span: 0..5,
            value: (),
            set_aside: set_aside.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn optional_keys_default_check_or_stay_set_aside() {
        let (results, diagnostics) = checked("[t]\nport = 0\n", |c| {
            let t = table(&["lost"]);
            let absent: Option<Spanned<i64>> = None;
            let zero = Some(spanned(0, 11..12));
            let check =
                |c: &mut Checker<'_, '_>, raw: &Spanned<i64>| c.int::<u16>("port", raw, 1..=9);
            [
                c.value(Some(&t), "port", &absent, || 7, check),
                c.value(Some(&t), "lost", &absent, || 7, check),
                c.value(Some(&t), "port", &zero, || 7, check),
            ]
        });
        assert_eq!(results, [Some(7), None, None]);
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            ["2:8: error: port: 0 is out of range; allowed: a port"]
        );
    }

    #[test]
    fn required_keys_are_reported_at_the_table_unless_set_aside() {
        let (_, diagnostics) = checked("[t]\n", |c| {
            let t = table(&["b"]);
            let none: Option<i64> = None;
            c.required(&t, "t", "a", &none);
            c.required(&t, "t", "b", &none);
            c.required_section(&Section::<()>::Absent, "u");
            c.required_section(&Section::<()>::Invalid, "v");
        });
        let found: Vec<(&str, &str)> = diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.problem.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("t.a", "missing required key"),
                ("u", "missing required section")
            ]
        );
        assert_eq!(diagnostics[0].allowed, "");
    }

    #[test]
    fn addresses_and_paths_say_what_is_wrong() {
        let (results, diagnostics) = checked("x", |c| {
            let s = |text: &str| spanned(text.to_owned(), 0..1);
            (
                c.ipv4("a", &s("10.0.0.300")),
                c.unicast("b", &s("224.0.0.18")),
                c.socket_addr("c", &s(" 127.0.0.1:9477 ")),
                c.socket_addr("d", &s("127.0.0.1:0")),
                c.socket_addr("e", &s("localhost:80")),
                c.absolute_path("f", &s("etc/egret")),
                c.non_empty("g", &s("  ")),
                c.object_name("h", &s("Gw")),
            )
        });
        assert_eq!(results.2, Some("127.0.0.1:9477".parse().expect("address")));
        let problems: Vec<&str> = diagnostics.iter().map(|d| d.problem.as_str()).collect();
        assert_eq!(
            problems,
            [
                "\"10.0.0.300\" is not an IPv4 address",
                "224.0.0.18 is a multicast address, not a unicast address",
                "\"127.0.0.1:0\" has port 0",
                "\"localhost:80\" is not an address:port",
                "\"etc/egret\" is not an absolute path",
                "empty",
                "\"Gw\" contains 'G'",
            ]
        );
    }

    #[test]
    fn durations_are_humane_and_bounded() {
        let (results, diagnostics) = checked("x", |c| {
            let s = |text: &str| spanned(text.to_owned(), 0..1);
            let range = Duration::from_secs(1)..=Duration::from_secs(60);
            (
                c.bounded_duration("a", &s("1m"), range.clone()),
                c.bounded_duration("b", &s("2m"), range.clone()),
                c.duration("c", &s("soon")),
            )
        });
        assert_eq!(results.0, Some(Duration::from_secs(60)));
        let problems: Vec<&str> = diagnostics.iter().map(|d| d.problem.as_str()).collect();
        assert_eq!(
            problems,
            [
                "\"2m\" is out of range",
                "\"soon\" is not a duration: expected a number at \"soon\""
            ]
        );
    }

    #[test]
    fn a_cni_overlay_port_is_taken_with_a_warning() {
        let (port, diagnostics) = checked("port = 4789", |c| {
            c.tunnel_port("tunnel.port", &spanned(4789, 7..11))
        });
        assert_eq!(port, Some(4789));
        assert_eq!(
            diagnostics[0].to_string(),
            "1:8: warning: tunnel.port: 4789 is the IANA VXLAN port, used by Calico's VXLAN \
             mode; nodes running that CNI cannot also use it for egret; recommended: a port \
             no CNI uses, such as 4800"
        );
        let (vni, diagnostics) = checked("vni = 16777216", |c| {
            c.vni("tunnel.vni", &spanned(16_777_216, 6..14))
        });
        assert_eq!((vni, diagnostics.len()), (None, 1));
    }

    #[test]
    fn every_element_of_a_list_is_checked_and_repeats_point_at_the_first() {
        let text = "l = [\"a\", \"b\",\n \"a\", \"\"]";
        let elements = [("a", 5..8), ("b", 10..13), ("a", 16..19), ("", 21..23)]
            .map(|(t, span)| spanned(t.to_owned(), span));
        let (items, diagnostics) = checked(text, |c| {
            let mut seen = Seen::default();
            c.each("l", &elements, |c, key, raw| {
                let name = c.non_empty(key, raw)?;
                match c.repeat(&mut seen, name.clone(), key, Some(raw.span())) {
                    None => Some(name),
                    Some((first, line)) => c.refuse(
                        key,
                        Some(raw.span()),
                        format!("repeats {first} (line {line})"),
                    ),
                }
            })
        });
        assert_eq!(items, None);
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "2:2: error: l[2]: repeats l[0] (line 1); allowed: ",
                "2:7: error: l[3]: empty; allowed: "
            ]
        );
        let (items, _) = checked(text, |c| {
            c.each("l", &elements[..2], |_, _, raw| Some(raw.get_ref().len()))
        });
        let items = items.expect("valid");
        assert_eq!((items[1].index, items[1].span.clone()), (1, 10..13));
        assert_eq!(values(items), [1, 1]);
    }

    #[test]
    fn kubernetes_names_follow_rfc_1123() {
        for good in ["a", "egress.lab", "0-9", &"a".repeat(253)] {
            assert_eq!(object_name_problem(good), None, "{good}");
        }
        for (bad, problem) in [
            ("", "empty"),
            ("a_b", "\"a_b\" contains '_'"),
            (
                "-a",
                "\"-a\" has a part that does not start and end with a letter or digit",
            ),
            (
                "a..b",
                "\"a..b\" has a part that does not start and end with a letter or digit",
            ),
        ] {
            assert_eq!(object_name_problem(bad).as_deref(), Some(problem));
        }
        assert_eq!(
            object_name_problem(&"a".repeat(254)).as_deref(),
            Some("254 characters long")
        );
        assert_eq!(label_problem("egret-system"), None);
        assert_eq!(
            label_problem("a.b").as_deref(),
            Some("\"a.b\" contains '.'")
        );
        assert_eq!(
            label_problem("a-").as_deref(),
            Some("\"a-\" starts or ends with '-'")
        );
    }
}
