//! Kubernetes label selectors: a `metav1.LabelSelector` compiled once into a [`Selector`], then
//! matched against label maps.
//!
//! Semantics (apimachinery's `LabelSelectorAsSelector`): every `matchLabels` pair and every
//! `matchExpressions` requirement must hold (AND); `In` needs the key with one of the values,
//! `NotIn` holds when the key is absent or its value is none of the values, `Exists` and
//! `DoesNotExist` look at the key alone. An empty selector (`{}`) matches everything; so does
//! an absent one in an egress rule (the caller passes [`Selector::everything`]).
//!
//! Compilation validates as the apiserver does, so an object that bypassed validation (no
//! schema, an old object) is refused here rather than half-understood: an unknown operator,
//! `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values, a key that is not a
//! qualified name, a value that is not a label value. Invariant: a [`Selector`] holds only
//! valid requirements, each `In`/`NotIn` with a non-empty, sorted, distinct value list.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of a pod or a namespace, as the API returns them.
pub type Labels = BTreeMap<String, String>;

/// A compiled, valid label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// What the key must satisfy.
    pub op: Operator,
}

/// What a [`Requirement`] asks of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// The key is present with one of these values (sorted, distinct, never empty).
    In(Vec<String>),
    /// The key is absent, or its value is none of these (sorted, distinct, never empty).
    NotIn(Vec<String>),
    /// The key is present, whatever its value.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

/// Why a label selector was refused; the policy holding it is `Invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An operator other than `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error(
        "matchExpressions[{index}]: operator {operator:?} is not supported (valid: In, NotIn, Exists, DoesNotExist)"
    )]
    UnknownOperator {
        /// The requirement's index in `matchExpressions`.
        index: usize,
        /// The operator as written.
        operator: String,
    },
    /// `In` or `NotIn` with no values.
    #[error("matchExpressions[{index}]: values must be given with operator {operator}")]
    MissingValues {
        /// The requirement's index.
        index: usize,
        /// `In` or `NotIn`.
        operator: &'static str,
    },
    /// `Exists` or `DoesNotExist` with values.
    #[error("matchExpressions[{index}]: values may not be given with operator {operator}")]
    UnexpectedValues {
        /// The requirement's index.
        index: usize,
        /// `Exists` or `DoesNotExist`.
        operator: &'static str,
    },
    /// A key that is not a qualified name (`[prefix/]name`).
    #[error("{place}: key {key:?} is not a valid label key: {why}")]
    InvalidKey {
        /// `matchLabels` or `matchExpressions[i]`.
        place: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A value that is not a label value.
    #[error("{place}: value {value:?} is not a valid label value: {why}")]
    InvalidValue {
        /// `matchLabels` or `matchExpressions[i]`.
        place: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl SelectorError {
    /// Stable `snake_case` name, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            SelectorError::UnknownOperator { .. } => "unknown_operator",
            SelectorError::MissingValues { .. } => "missing_values",
            SelectorError::UnexpectedValues { .. } => "unexpected_values",
            SelectorError::InvalidKey { .. } => "invalid_key",
            SelectorError::InvalidValue { .. } => "invalid_value",
        }
    }
}

impl Selector {
    /// The selector that matches every label map (`{}`, or an absent selector).
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Compiles and validates `selector`.
    pub fn compile(selector: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let place = || "matchLabels".to_owned();
            check_key(key).map_err(|why| SelectorError::InvalidKey {
                place: place(),
                key: key.clone(),
                why,
            })?;
            check_value(value).map_err(|why| SelectorError::InvalidValue {
                place: place(),
                value: value.clone(),
                why,
            })?;
            requirements.push(Requirement {
                key: key.clone(),
                op: Operator::In(vec![value.clone()]),
            });
        }
        for (index, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let values = expression.values.as_deref().unwrap_or_default();
            let with_values = |operator: &'static str| {
                if values.is_empty() {
                    return Err(SelectorError::MissingValues { index, operator });
                }
                let mut values = values.to_vec();
                values.sort_unstable();
                values.dedup();
                Ok(values)
            };
            let without_values = |operator: &'static str| {
                if values.is_empty() {
                    Ok(())
                } else {
                    Err(SelectorError::UnexpectedValues { index, operator })
                }
            };
            let op = match expression.operator.as_str() {
                "In" => Operator::In(with_values("In")?),
                "NotIn" => Operator::NotIn(with_values("NotIn")?),
                "Exists" => without_values("Exists").map(|()| Operator::Exists)?,
                "DoesNotExist" => {
                    without_values("DoesNotExist").map(|()| Operator::DoesNotExist)?
                }
                other => {
                    return Err(SelectorError::UnknownOperator {
                        index,
                        operator: other.to_owned(),
                    });
                }
            };
            let place = || format!("matchExpressions[{index}]");
            check_key(&expression.key).map_err(|why| SelectorError::InvalidKey {
                place: place(),
                key: expression.key.clone(),
                why,
            })?;
            for value in values {
                check_value(value).map_err(|why| SelectorError::InvalidValue {
                    place: place(),
                    value: value.clone(),
                    why,
                })?;
            }
            requirements.push(Requirement {
                key: expression.key.clone(),
                op,
            });
        }
        Ok(Selector { requirements })
    }

    /// Compiles an optional selector: absent matches everything.
    pub fn compile_optional(selector: Option<&LabelSelector>) -> Result<Selector, SelectorError> {
        selector.map_or_else(|| Ok(Selector::everything()), Selector::compile)
    }

    /// Whether every label map matches.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, all of which must hold.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfies every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// Whether `labels` satisfies this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::In(values) => value.is_some_and(|v| values.binary_search(v).is_ok()),
            // Kubernetes semantics: an object without the key is not "in" the values.
            Operator::NotIn(values) => value.is_none_or(|v| values.binary_search(v).is_err()),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// apimachinery's `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
fn check_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        None => key,
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("the prefix before '/' is empty");
            }
            check_dns_subdomain(prefix)?;
            name
        }
    };
    if name.is_empty() {
        return Err("the name part is empty");
    }
    if name.len() > 63 {
        return Err("the name part is longer than 63 characters");
    }
    if name.contains('/') {
        return Err("it has more than one '/'");
    }
    check_label_chars(name)
}

/// apimachinery's `IsValidLabelValue`: empty, or 63 characters at most, alphanumeric at both
/// ends, with `-`, `_` and `.` inside.
fn check_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    check_label_chars(value)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` on a non-empty string.
fn check_label_chars(text: &str) -> Result<(), &'static str> {
    let bytes = text.as_bytes();
    let ends_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    if !ends_ok(bytes.first()) || !ends_ok(bytes.last()) {
        return Err("it must begin and end with a letter or digit");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// apimachinery's `IsDNS1123Subdomain`: 253 characters at most, lowercase dot-separated
/// labels of letters, digits and `-`, alphanumeric at both ends.
fn check_dns_subdomain(text: &str) -> Result<(), &'static str> {
    if text.len() > 253 {
        return Err("the prefix is longer than 253 characters");
    }
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        let end_ok =
            |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        end_ok(b.first())
            && end_ok(b.last())
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    if !text.split('.').all(label_ok) {
        return Err(
            "the prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.', alphanumeric at both ends)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        match_expressions: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!match_expressions.is_empty()).then_some(match_expressions),
        }
    }

    fn compiled(s: &LabelSelector) -> Selector {
        Selector::compile(s).expect("valid selector")
    }

    #[test]
    fn empty_and_absent_selectors_match_everything() {
        let empty = compiled(&LabelSelector::default());
        assert!(empty.is_everything());
        assert!(empty.matches(&Labels::new()));
        assert!(empty.matches(&labels(&[("a", "b")])));
        let absent = Selector::compile_optional(None).expect("absent is valid");
        assert!(absent.matches(&labels(&[("x", "y")])));
        // Present but empty lists are the same as `{}`.
        let lists = LabelSelector {
            match_labels: Some(Labels::new()),
            match_expressions: Some(vec![]),
        };
        assert!(compiled(&lists).is_everything());
    }

    #[test]
    fn match_labels_and_expressions_all_hold() {
        let s = compiled(&selector(
            &[("role", "frontend")],
            vec![
                expr("tier", "In", &["web", "api"]),
                expr("canary", "DoesNotExist", &[]),
                expr("env", "NotIn", &["prod"]),
                expr("team", "Exists", &[]),
            ],
        ));
        let base = [("role", "frontend"), ("tier", "web"), ("team", "a")];
        assert!(s.matches(&labels(&base)));
        assert!(s.matches(&labels(&[
            ("role", "frontend"),
            ("tier", "api"),
            ("team", ""),
            ("env", "dev")
        ])));
        assert!(!s.matches(&labels(&[
            ("role", "backend"),
            ("tier", "web"),
            ("team", "a")
        ])));
        assert!(!s.matches(&labels(&[
            ("role", "frontend"),
            ("tier", "db"),
            ("team", "a")
        ])));
        assert!(!s.matches(&labels(&[("role", "frontend"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[
            ("role", "frontend"),
            ("tier", "web"),
            ("team", "a"),
            ("canary", "")
        ])));
        assert!(!s.matches(&labels(&[
            ("role", "frontend"),
            ("tier", "web"),
            ("team", "a"),
            ("env", "prod")
        ])));
    }

    #[test]
    fn not_in_matches_objects_without_the_key() {
        let s = compiled(&selector(&[], vec![expr("env", "NotIn", &["prod"])]));
        assert!(s.matches(&Labels::new()));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn malformed_requirements_are_refused_as_the_apiserver_does() {
        let refuse = |s: LabelSelector| Selector::compile(&s).expect_err("refused");
        let e = refuse(selector(&[], vec![expr("a", "Gt", &["1"])]));
        assert_eq!(e.label(), "unknown_operator");
        assert_eq!(
            e.to_string(),
            "matchExpressions[0]: operator \"Gt\" is not supported (valid: In, NotIn, Exists, DoesNotExist)"
        );
        // Operators are case-sensitive.
        assert_eq!(
            refuse(selector(&[], vec![expr("a", "in", &["1"])])).label(),
            "unknown_operator"
        );
        let e = refuse(selector(
            &[],
            vec![expr("a", "Exists", &[]), expr("b", "NotIn", &[])],
        ));
        assert_eq!(
            e,
            SelectorError::MissingValues {
                index: 1,
                operator: "NotIn"
            }
        );
        assert_eq!(
            e.to_string(),
            "matchExpressions[1]: values must be given with operator NotIn"
        );
        // `values: []` is the same as no values.
        let empty_values = LabelSelectorRequirement {
            key: "a".into(),
            operator: "In".into(),
            values: Some(vec![]),
        };
        assert_eq!(
            refuse(selector(&[], vec![empty_values])).label(),
            "missing_values"
        );
        let e = refuse(selector(&[], vec![expr("a", "DoesNotExist", &["x"])]));
        assert_eq!(
            e,
            SelectorError::UnexpectedValues {
                index: 0,
                operator: "DoesNotExist"
            }
        );
    }

    #[test]
    fn keys_and_values_follow_the_label_syntax() {
        for key in [
            "app",
            "app.kubernetes.io/name",
            "a-b_c.d",
            "x/y",
            "A9",
            &"k".repeat(63),
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
        for key in [
            "",
            "/a",
            "a/",
            "-a",
            "a-",
            "a b",
            "Example.com/a",
            "a/b/c",
            "a..b/c",
            "a_b/c",
            &"k".repeat(64),
            &format!("{}/a", "p".repeat(254)),
        ] {
            assert!(check_key(key).is_err(), "{key:?} accepted");
        }
        for value in ["", "v", "v1.2-3_x", &"v".repeat(63)] {
            assert_eq!(check_value(value), Ok(()), "{value}");
        }
        for value in ["-v", "v-", "v/w", "v w", &"v".repeat(64)] {
            assert!(check_value(value).is_err(), "{value:?} accepted");
        }
        let e = Selector::compile(&selector(&[("bad key", "v")], vec![])).expect_err("refused");
        assert_eq!(e.label(), "invalid_key");
        assert_eq!(
            e.to_string(),
            "matchLabels: key \"bad key\" is not a valid label key: only letters, digits, '-', '_' and '.' are allowed"
        );
        let e = Selector::compile(&selector(&[], vec![expr("k", "In", &["ok", "-bad"])]))
            .expect_err("refused");
        assert_eq!(e.label(), "invalid_value");
        assert!(
            e.to_string()
                .starts_with("matchExpressions[0]: value \"-bad\""),
            "{e}"
        );
    }

    // Property test: the compiled selector against a brute-force reading of the semantics,
    // straight from the API object, over a small universe of keys and values.

    const KEYS: [&str; 3] = ["a", "b", "c"];
    const VALUES: [&str; 3] = ["x", "y", ""];
    const OPERATORS: [&str; 5] = ["In", "NotIn", "Exists", "DoesNotExist", "Bogus"];

    fn label_map() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map(
            prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
            prop::sample::select(&VALUES[..]).prop_map(str::to_owned),
            0..=3,
        )
    }

    fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
        (
            prop::sample::select(&KEYS[..]),
            prop::sample::select(&OPERATORS[..]),
            prop::option::of(prop::collection::vec(
                prop::sample::select(&VALUES[..]),
                0..3,
            )),
        )
            .prop_map(|(key, operator, values)| LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values: values.map(|v| v.into_iter().map(str::to_owned).collect()),
            })
    }

    fn label_selector() -> impl Strategy<Value = LabelSelector> {
        (
            prop::option::of(label_map()),
            prop::option::of(prop::collection::vec(requirement(), 0..3)),
        )
            .prop_map(|(match_labels, match_expressions)| LabelSelector {
                match_labels,
                match_expressions,
            })
    }

    /// `None` when the selector is invalid, else whether it matches; read off the API object.
    fn brute_force(selector: &LabelSelector, labels: &Labels) -> Option<bool> {
        let mut all = true;
        for (k, v) in selector.match_labels.iter().flatten() {
            all &= labels.get(k) == Some(v);
        }
        for r in selector.match_expressions.iter().flatten() {
            let values: &[String] = r.values.as_deref().unwrap_or(&[]);
            let has = labels.get(&r.key);
            let holds = match r.operator.as_str() {
                "In" if !values.is_empty() => has.is_some_and(|v| values.contains(v)),
                "NotIn" if !values.is_empty() => !has.is_some_and(|v| values.contains(v)),
                "Exists" if values.is_empty() => has.is_some(),
                "DoesNotExist" if values.is_empty() => has.is_none(),
                _ => return None,
            };
            all &= holds;
        }
        Some(all)
    }

    proptest! {
        #[test]
        fn compiled_selectors_match_as_the_semantics_say(
            selector in label_selector(),
            maps in prop::collection::vec(label_map(), 1..8),
        ) {
            match Selector::compile(&selector) {
                Ok(compiled) => {
                    for labels in &maps {
                        prop_assert_eq!(Some(compiled.matches(labels)), brute_force(&selector, labels));
                    }
                }
                Err(_) => prop_assert_eq!(brute_force(&selector, &maps[0]), None),
            }
        }
    }
}
