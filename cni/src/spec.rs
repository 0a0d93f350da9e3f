//! The CNI protocol (<https://www.cni.dev/docs/spec/>, versions 1.0 and 1.1) as pure
//! functions: what the runtime hands the plugin (environment variables and the network
//! config on stdin) and what the plugin answers (a result, or an error result).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The CNI versions this plugin speaks; the network config names one of them.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version the plugin reports its own answers in when the config cannot be read.
pub const LATEST_VERSION: &str = "1.1.0";
/// The `type` of the plugin in a conflist.
pub const PLUGIN_TYPE: &str = "egret-cni";
/// Where the agent listens, unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/egret/cni.sock";
/// How long ADD waits for the agent, unless the config says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// An operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// 1.1: is the plugin ready to ADD?
    Status,
    /// 1.1: garbage collection of attachments the runtime no longer knows.
    Gc,
}

/// CNI error codes the plugin returns (the spec's well-known ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot ADD now.
    NotAvailable = 50,
}

/// A CNI error result: printed as JSON on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl Error {
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error result in `version` (the config's, or [`LATEST_VERSION`]).
    pub fn to_json(&self, version: &str) -> String {
        json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The pod the runtime names in `CNI_ARGS` (Kubernetes runtimes set these keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// What the runtime says in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Command,
    /// `CNI_CONTAINERID`: required except for VERSION, STATUS and GC.
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub pod: PodArgs,
}

impl Environment {
    /// Reads the environment through `var` (`std::env::var` in the binary).
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<Environment, Error> {
        let invalid = |msg: String| Error::new(Code::InvalidEnvironment, msg, "");
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => return Err(invalid(format!("unknown CNI_COMMAND {other:?}"))),
            None => return Err(invalid("CNI_COMMAND is not set".to_owned())),
        };
        let container_id = var("CNI_CONTAINERID").unwrap_or_default();
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        if needs_container && container_id.is_empty() {
            return Err(invalid("CNI_CONTAINERID is not set".to_owned()));
        }
        let pod = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
        Ok(Environment {
            command,
            container_id,
            netns: var("CNI_NETNS").filter(|v| !v.is_empty()),
            ifname: var("CNI_IFNAME").filter(|v| !v.is_empty()),
            pod,
        })
    }
}

/// Parses `CNI_ARGS`, `KEY=VALUE` pairs separated by `;`. Keys other than the pod's are
/// ignored (runtimes pass more, such as `IgnoreUnknown`); a pair without `=` is an error.
pub fn parse_args(text: &str) -> Result<PodArgs, Error> {
    let mut pod = PodArgs::default();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::new(
                Code::InvalidEnvironment,
                "CNI_ARGS is not KEY=VALUE pairs separated by ';'",
                format!("{pair:?}"),
            ));
        };
        let value = Some(value.to_owned()).filter(|v| !v.is_empty());
        match key {
            "K8S_POD_NAMESPACE" => pod.namespace = value,
            "K8S_POD_NAME" => pod.name = value,
            "K8S_POD_UID" => pod.uid = value,
            _ => {}
        }
    }
    Ok(pod)
}

/// What happens when the agent does not answer an ADD in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The ADD fails (code 11, try again later): the runtime tears the sandbox down and
    /// retries, so no pod runs before it is programmed. A node whose agent is down starts
    /// no pods.
    Fail,
    /// The pod starts and the plugin logs why: its first connections may leave with the
    /// node's IP until the agent programs it from the API.
    Ignore,
}

impl FailurePolicy {
    /// The value of `failure_policy` in the network config.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// The plugin's entry in the conflist, and what the previous plugins produced.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The network's name.
    pub name: String,
    /// `socket`: the agent's Unix socket.
    pub socket: PathBuf,
    /// `timeout`: how long ADD waits for the agent ("5s", "500ms").
    pub timeout: Duration,
    /// `failure_policy`: `"Fail"` or `"Ignore"`, as Kubernetes webhooks say it.
    pub failure_policy: FailurePolicy,
    /// The previous plugin's result, passed through.
    pub prev_result: Option<Value>,
}

/// The keys of a plugin entry the spec defines or runtimes add; anything else not ours is
/// refused, so a typo in `failure_policy` never silently falls back to the default.
const STANDARD_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "args",
    "ipMasq",
    "ipam",
    "dns",
    "capabilities",
    "runtimeConfig",
    "prevResult",
    "cniVersions",
    "disableCheck",
    "disableGC",
];
const OUR_KEYS: &[&str] = &["socket", "timeout", "failure_policy"];

/// Parses the network config the runtime writes on stdin.
pub fn parse_config(bytes: &[u8]) -> Result<NetConf, Error> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            Code::Decode,
            "the network config on stdin is not JSON",
            e.to_string(),
        )
    })?;
    let Value::Object(config) = value else {
        return Err(Error::new(
            Code::InvalidConfig,
            "the network config is not a JSON object",
            "",
        ));
    };
    let string = |key: &str| -> Result<Option<String>, Error> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::new(
                Code::InvalidConfig,
                format!("{key} must be a string"),
                format!("got {other}"),
            )),
        }
    };
    let cni_version = string("cniVersion")?
        .ok_or_else(|| Error::new(Code::InvalidConfig, "cniVersion is missing", ""))?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(Error::new(
            Code::IncompatibleVersion,
            format!("CNI version {cni_version} is not supported"),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let name = string("name")?.unwrap_or_default();
    match string("type")?.as_deref() {
        Some(PLUGIN_TYPE) => {}
        other => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("type must be {PLUGIN_TYPE:?}"),
                format!("got {other:?}"),
            ));
        }
    }
    if let Some(key) = config
        .keys()
        .find(|k| !STANDARD_KEYS.contains(&k.as_str()) && !OUR_KEYS.contains(&k.as_str()))
    {
        return Err(Error::new(
            Code::UnsupportedField,
            format!("unknown key {key:?} in the egret-cni entry"),
            format!("egret-cni's keys: {}", OUR_KEYS.join(", ")),
        ));
    }
    let socket = string("socket")?.map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
    if !socket.is_absolute() {
        return Err(Error::new(
            Code::InvalidConfig,
            "socket must be an absolute path",
            socket.display().to_string(),
        ));
    }
    let timeout = match string("timeout")? {
        None => DEFAULT_TIMEOUT,
        Some(text) => humantime::parse_duration(&text)
            .ok()
            .filter(|t| !t.is_zero() && *t <= Duration::from_secs(300))
            .ok_or_else(|| {
                Error::new(
                    Code::InvalidConfig,
                    "timeout must be a duration above 0 and at most 5m, such as \"5s\"",
                    format!("got {text:?}"),
                )
            })?,
    };
    let failure_policy = match string("failure_policy")?.as_deref() {
        None | Some("Fail") => FailurePolicy::Fail,
        Some("Ignore") => FailurePolicy::Ignore,
        Some(other) => {
            return Err(Error::new(
                Code::InvalidConfig,
                "failure_policy must be \"Fail\" or \"Ignore\"",
                format!("got {other:?}"),
            ));
        }
    };
    Ok(NetConf {
        cni_version,
        name,
        socket,
        timeout,
        failure_policy,
        prev_result: config.get("prevResult").cloned(),
    })
}

/// The pod's addresses from the previous plugin's result (`ips[].address`, CIDR notation).
pub fn pod_ips(prev_result: &Value) -> Result<Vec<IpAddr>, Error> {
    let invalid = |details: String| {
        Error::new(
            Code::InvalidConfig,
            "prevResult holds no usable ips[].address",
            details,
        )
    };
    let ips = prev_result
        .get("ips")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no ips list".to_owned()))?;
    let mut out = Vec::with_capacity(ips.len());
    for ip in ips {
        let text = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{ip}")))?;
        let address = text.split('/').next().unwrap_or_default();
        let address: IpAddr = address.parse().map_err(|_| invalid(format!("{text:?}")))?;
        out.push(address);
    }
    if out.is_empty() {
        return Err(invalid("the list is empty".to_owned()));
    }
    Ok(out)
}

/// The ADD result: the previous result, unchanged but for `cniVersion`, which must be the
/// config's.
pub fn add_result(conf: &NetConf) -> String {
    let mut result = match &conf.prev_result {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    result.insert("cniVersion".to_owned(), json!(conf.cni_version));
    Value::Object(result).to_string()
}

/// The VERSION answer.
pub fn version_result() -> String {
    json!({
        "cniVersion": LATEST_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=alice;K8S_POD_NAME=frontend-7d4;\
             K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=1234",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn the_environment_of_an_add_names_the_pod() {
        let env = Environment::read(env(ADD)).expect("valid");
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.container_id, "c0ffee");
        assert_eq!(env.netns.as_deref(), Some("/var/run/netns/cni-1"));
        assert_eq!(
            env.pod,
            PodArgs {
                namespace: Some("alice".into()),
                name: Some("frontend-7d4".into()),
                uid: Some("1234".into()),
            }
        );
    }

    #[test]
    fn a_broken_environment_is_error_4_with_what_is_wrong() {
        for (pairs, says) in [
            (&[][..], "CNI_COMMAND is not set"),
            (
                &[("CNI_COMMAND", "ATTACH")][..],
                "unknown CNI_COMMAND \"ATTACH\"",
            ),
            (&[("CNI_COMMAND", "ADD")][..], "CNI_CONTAINERID is not set"),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "x"),
                    ("CNI_ARGS", "K8S_POD_NAME"),
                ][..],
                "CNI_ARGS is not KEY=VALUE",
            ),
        ] {
            let error = Environment::read(env(pairs)).expect_err(says);
            assert_eq!(error.code, Code::InvalidEnvironment);
            assert!(error.to_string().contains(says), "{error}");
        }
        // VERSION and STATUS need no container.
        assert!(Environment::read(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert!(Environment::read(env(&[("CNI_COMMAND", "STATUS")])).is_ok());
    }

    fn config(extra: &str) -> String {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "egret-cni"{extra},
               "prevResult": {{"cniVersion": "1.0.0",
                 "interfaces": [{{"name": "eth0", "sandbox": "/var/run/netns/cni-1"}}],
                 "ips": [{{"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 0}},
                         {{"address": "fd00::7/64", "interface": 0}}],
                 "routes": [{{"dst": "0.0.0.0/0"}}]}}}}"#
        )
    }

    #[test]
    fn a_chained_config_gives_the_defaults_and_the_pods_addresses() {
        let conf = parse_config(config("").as_bytes()).expect("valid");
        assert_eq!(conf.cni_version, "1.0.0");
        assert_eq!(conf.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(conf.timeout, DEFAULT_TIMEOUT);
        assert_eq!(conf.failure_policy, FailurePolicy::Fail);
        let ips = pod_ips(conf.prev_result.as_ref().expect("prevResult")).expect("ips");
        assert_eq!(
            ips,
            vec![
                "10.244.1.7".parse::<IpAddr>().expect("ip"),
                "fd00::7".parse().expect("ip")
            ]
        );
        let conf = parse_config(
            config(r#", "socket": "/run/x.sock", "timeout": "750ms", "failure_policy": "Ignore""#)
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(conf.socket, PathBuf::from("/run/x.sock"));
        assert_eq!(conf.timeout, Duration::from_millis(750));
        assert_eq!(conf.failure_policy, FailurePolicy::Ignore);
    }

    #[test]
    fn the_add_result_is_the_previous_one_in_the_configs_version() {
        let conf = parse_config(config("").as_bytes()).expect("valid");
        let result: Value = serde_json::from_str(&add_result(&conf)).expect("json");
        let mut expected = conf.prev_result.clone().expect("prevResult");
        expected["cniVersion"] = json!("1.0.0");
        assert_eq!(result, expected);
    }

    #[test]
    fn bad_configs_are_refused_with_the_specs_codes() {
        for (text, code, says) in [
            ("{not json".to_owned(), Code::Decode, "not JSON"),
            (
                "[1, 2]".to_owned(),
                Code::InvalidConfig,
                "not a JSON object",
            ),
            (
                config("").replace("1.0.0\", \"name", "9.9.9\", \"name"),
                Code::IncompatibleVersion,
                "9.9.9 is not supported",
            ),
            (
                config(r#", "failure_policy": "fail-open""#),
                Code::InvalidConfig,
                "failure_policy must be",
            ),
            (
                config(r#", "failurePolicy": "Ignore""#),
                Code::UnsupportedField,
                "unknown key \"failurePolicy\"",
            ),
            (
                config(r#", "timeout": "0s""#),
                Code::InvalidConfig,
                "timeout",
            ),
            (
                config(r#", "timeout": 5"#),
                Code::InvalidConfig,
                "timeout must be a string",
            ),
            (
                config(r#", "socket": "cni.sock""#),
                Code::InvalidConfig,
                "absolute",
            ),
            (
                config("").replace("egret-cni", "bridge"),
                Code::InvalidConfig,
                "type must be",
            ),
        ] {
            let error = parse_config(text.as_bytes()).expect_err(says);
            assert_eq!(error.code, code, "{error}");
            assert!(error.to_string().contains(says), "{says}: {error}");
            let json: Value = serde_json::from_str(&error.to_json("1.0.0")).expect("json");
            assert_eq!(json["code"], json!(code as u32));
        }
    }

    #[test]
    fn a_prev_result_without_addresses_is_refused() {
        for prev in [
            json!({}),
            json!({"ips": []}),
            json!({"ips": [{"address": "nope"}]}),
        ] {
            let error = pod_ips(&prev).expect_err("no addresses");
            assert_eq!(error.code, Code::InvalidConfig);
        }
    }

    #[test]
    fn version_lists_every_supported_version() {
        let json: Value = serde_json::from_str(&version_result()).expect("json");
        assert_eq!(json["cniVersion"], "1.1.0");
        assert_eq!(json["supportedVersions"].as_array().map(Vec::len), Some(5));
    }
}
