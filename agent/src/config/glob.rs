//! Interface-name patterns for `[agent].pod_interfaces`: `*` matches any run of characters
//! (also none), `?` exactly one, everything else itself. No classes, no escapes: interface
//! names are short and never contain `*` or `?` in practice.

/// Whether `name` matches the glob `pattern` as a whole.
///
/// Linear in practice: on a mismatch after a `*`, only the most recent `*` is retried one
/// character further, which is enough because a later `*` can absorb whatever an earlier
/// one would have.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // The position after the last `*` seen, and the name position it is matched up to.
    let mut retry: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                p += 1;
                retry = Some((p, n));
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match retry {
                Some((after_star, matched)) => {
                    p = after_star;
                    n = matched + 1;
                    retry = Some((after_star, n));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(glob_match("eth0", "eth0"));
        assert!(!glob_match("eth0", "eth01"));
        assert!(!glob_match("eth0", "eth"));
        assert!(!glob_match("eth0", ""));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn star_matches_any_run_also_none() {
        assert!(glob_match("veth*", "veth"));
        assert!(glob_match("veth*", "veth1a2b3c"));
        assert!(!glob_match("veth*", "xveth1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "lxc_health"));
        assert!(glob_match("*0", "egret0"));
        assert!(!glob_match("*0", "egret1"));
        assert!(glob_match("c*i*", "cali1234"));
        assert!(glob_match("a*b*c", "a_b_b_c"));
        assert!(!glob_match("a*b*c", "a_b_b_c_"));
        assert!(glob_match("**x", "x"));
        assert!(glob_match("*ab", "aab"));
        assert!(!glob_match("*ab", "aba"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(glob_match("eth?", "eth0"));
        assert!(!glob_match("eth?", "eth"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("?*", "a"));
        assert!(!glob_match("?*", ""));
        assert!(glob_match("gke?*", "gke1f2e"));
        // One character, not one byte.
        assert!(glob_match("vé?", "véx"));
        assert!(glob_match("v?x", "véx"));
    }

    #[test]
    fn the_default_pod_patterns_pick_pod_interfaces_only() {
        let patterns = ["veth*", "cali*", "lxc*", "gke*"];
        let pod = |name: &str| patterns.iter().any(|p| glob_match(p, name));
        for name in ["veth9a8b7c", "cali12ab34cd56e", "lxc0a1b2c", "gke3f2a1b"] {
            assert!(pod(name), "{name}");
        }
        for name in ["eth0", "egret0", "lo", "cilium_host", "flannel.1", "cni0"] {
            assert!(!pod(name), "{name}");
        }
    }
}
