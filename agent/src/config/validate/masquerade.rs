//! `[masquerade]`: ip-masq-agent's semantics for the traffic no policy selects.

use egret_config::check::{Check, values};
use egret_config::raw::Section;

use super::Checker;
use crate::config::raw::RawMasquerade;
use crate::config::{Masquerade, defaults};

impl Checker<'_, '_, '_> {
    pub(super) fn masquerade(&mut self, section: &Section<RawMasquerade>) -> Option<Masquerade> {
        let absent = RawMasquerade::default();
        let (m, table) = section.contents(&absent)?;
        let non_masquerade_cidrs = self.value(
            table,
            "non_masquerade_cidrs",
            &m.non_masquerade_cidrs,
            defaults::non_masquerade_cidrs,
            |c, raw| {
                c.prefix_list("masquerade.non_masquerade_cidrs", raw, None)
                    .map(values)
            },
        );
        let masquerade_link_local = self.value(
            table,
            "masquerade_link_local",
            &m.masquerade_link_local,
            || defaults::MASQUERADE_LINK_LOCAL,
            |_, raw| Some(*raw),
        );
        Some(Masquerade {
            non_masquerade_cidrs: non_masquerade_cidrs?,
            masquerade_link_local: masquerade_link_local?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;

    #[test]
    fn non_masquerade_cidrs_may_be_empty_and_are_canonical() {
        let text = "[masquerade]\nnon_masquerade_cidrs = []\nmasquerade_link_local = true\n";
        let masquerade = accept(text).config.masquerade;
        assert!(masquerade.non_masquerade_cidrs.is_empty());
        assert!(masquerade.masquerade_link_local);
        let text =
            "[masquerade]\nnon_masquerade_cidrs = [\"10.1.2.3/8\", \"10.0.0.0/33\", \"10/8\"]\n";
        let lines = rendered(&refuse(text));
        assert_eq!(
            lines,
            [
                "2:25: error: masquerade.non_masquerade_cidrs[0]: \"10.1.2.3/8\": host bits are \
                 set; the prefix is 10.0.0.0/8; allowed: the prefix \"10.0.0.0/8\", or the \
                 address alone as \"10.1.2.3/32\"",
                "2:39: error: masquerade.non_masquerade_cidrs[1]: \"10.0.0.0/33\": prefix length \
                 33 is above 32; allowed: an IPv4 prefix without host bits, such as \"10.0.0.0/8\"",
                "2:54: error: masquerade.non_masquerade_cidrs[2]: \"10/8\": not an IPv4 prefix \
                 (expected ADDRESS/LENGTH, e.g. 10.0.0.0/8); allowed: an IPv4 prefix without host \
                 bits, such as \"10.0.0.0/8\"",
            ]
        );
    }

    #[test]
    fn a_repeated_prefix_is_a_warning_and_is_dropped() {
        let text = "[masquerade]\nnon_masquerade_cidrs = [\n  \"10.0.0.0/8\",\n  \
                    \"172.16.0.0/12\",\n  \"10.0.0.0/8\",\n]\n";
        let checked = accept(text);
        assert_eq!(
            rendered(&checked.warnings),
            [
                "5:3: warning: masquerade.non_masquerade_cidrs[2]: 10.0.0.0/8 is already listed \
              as masquerade.non_masquerade_cidrs[0] (line 3); the repeat is ignored; \
              recommended: each prefix once"
            ]
        );
        assert_eq!(
            checked.config.masquerade.non_masquerade_cidrs,
            prefixes(&["10.0.0.0/8", "172.16.0.0/12"])
        );
        let text = edit(
            "sources = [\"10.10.1.0/28\"]",
            "sources = [\"10.10.1.0/28\", \"10.10.1.0/28\"]",
        );
        let w = assert_warning(
            &text,
            "policy[0].sources[1]",
            "sources = [\"10.10.1.0/28\", ",
        );
        assert_eq!(w.column, 28);
        assert_eq!(
            accept(&text).config.policies[0].sources,
            prefixes(&["10.10.1.0/28"])
        );
    }
}
