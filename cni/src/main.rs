//! `egret-cni`: the CNI plugin binary. The container runtime runs it with the CNI
//! environment variables and the network config on stdin; it answers on stdout (a result,
//! or an error result with a non-zero exit) and logs on stderr, which runtimes keep.
//! Without `CNI_COMMAND` it is the operator's tool: `install` and `uninstall`.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use egret_cni::cli::{self, Cli};
use egret_cni::conflist::Entry;
use egret_cni::install::{self, Dirs, Outcome};
use egret_cni::protocol::{self, Answer, AskError, Pod, Request};
use egret_cni::spec::{
    self, Code, Command, Environment, Error, FailurePolicy, LATEST_VERSION, NetConf,
};

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_none() {
        return operator(Cli::parse());
    }
    plugin()
}

/// `egret-cni install` and `uninstall`.
fn operator(cli: Cli) -> ExitCode {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        eprintln!("egret-cni: {what}: {error}");
        ExitCode::FAILURE
    };
    match cli.command {
        cli::Command::Install {
            dirs,
            socket,
            timeout,
            failure_policy,
            watch,
        } => {
            let entry = match Entry::new(socket, timeout, failure_policy) {
                Ok(entry) => entry,
                Err(e) => return failed("install", &e),
            };
            let binary = match std::env::current_exe().and_then(std::fs::read) {
                Ok(bytes) => bytes,
                Err(e) => return failed("cannot read this program's binary", &e),
            };
            let dirs = Dirs {
                bin: dirs.bin_dir,
                conf: dirs.conf_dir,
            };
            if !watch {
                return match install::install(&dirs, &binary, &entry) {
                    Ok(outcome) => {
                        println!("{outcome}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => failed("install", &e),
                };
            }
            exit_on_term();
            // Say what changed, and each new error once: the primary CNI may take a while
            // to finish its file.
            let mut last = String::new();
            let error = install::watch(&dirs, &binary, &entry, |result| {
                let line = match result {
                    Ok(Outcome::Unchanged(_)) => String::new(),
                    Ok(outcome) => outcome.to_string(),
                    Err(error) => format!("error: {error} (retried on the next change)"),
                };
                if !line.is_empty() && line != last {
                    eprintln!("egret-cni: {line}");
                }
                last = line;
            });
            failed("install --watch", &error)
        }
        cli::Command::Uninstall { dirs } => {
            let dirs = Dirs {
                bin: dirs.bin_dir,
                conf: dirs.conf_dir,
            };
            let mut warnings = Vec::new();
            let result = install::uninstall(&dirs, &mut warnings);
            for warning in &warnings {
                eprintln!("egret-cni: warning: {warning}");
            }
            match result {
                Ok(changed) if changed.is_empty() => {
                    println!("egret-cni is not installed: nothing to remove");
                    ExitCode::SUCCESS
                }
                Ok(changed) => {
                    for path in changed {
                        println!("changed {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => failed("uninstall", &e),
            }
        }
    }
}

/// SIGTERM and SIGINT end `install --watch` at once and leave the plugin installed: a
/// rolling update of the DaemonSet must not open a window where pods start unguarded. As
/// a container's PID 1 the process would otherwise ignore them.
fn exit_on_term() {
    extern "C" fn exit(_signal: libc::c_int) {
        // SAFETY: _exit is async-signal-safe; nothing is left half-written, as every file
        // is renamed into place complete.
        unsafe { libc::_exit(0) }
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls an async-signal-safe function.
        unsafe {
            libc::signal(signal, exit as *const () as libc::sighandler_t);
        }
    }
}

fn plugin() -> ExitCode {
    let mut stdin = Vec::new();
    let env = Environment::read(|key| std::env::var(key).ok());
    let outcome = env.and_then(|env| {
        if env.command != Command::Version {
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
                Error::new(Code::Io, "cannot read the network config", e.to_string())
            })?;
        }
        run(&env, &stdin)
    });
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(output) => {
            if let Some(output) = output {
                let _ = writeln!(stdout, "{output}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            // The error result in the config's version when it can be read.
            let version = spec::parse_config(&stdin)
                .map(|c| c.cni_version)
                .unwrap_or_else(|_| LATEST_VERSION.to_owned());
            let _ = writeln!(stdout, "{}", error.to_json(&version));
            eprintln!("egret-cni: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Carries out `env.command`; returns what goes to stdout.
fn run(env: &Environment, stdin: &[u8]) -> Result<Option<String>, Error> {
    if env.command == Command::Version {
        return Ok(Some(spec::version_result()));
    }
    let conf = spec::parse_config(stdin)?;
    match env.command {
        Command::Version => Ok(Some(spec::version_result())),
        Command::Add => add(env, &conf).map(Some),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => check(env, &conf).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        // The agent forgets pods the API no longer has; nothing is kept per attachment.
        Command::Gc => Ok(None),
    }
}

/// The pod of an ADD, DEL or CHECK: its namespace and name from `CNI_ARGS`, its addresses
/// from `prevResult`.
fn pod(env: &Environment, conf: &NetConf) -> Result<Pod, Error> {
    let (Some(namespace), Some(name)) = (&env.pod.namespace, &env.pod.name) else {
        return Err(Error::new(
            Code::InvalidEnvironment,
            "CNI_ARGS does not name the pod (K8S_POD_NAMESPACE and K8S_POD_NAME)",
            "",
        ));
    };
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        Error::new(
            Code::InvalidConfig,
            "no prevResult: egret-cni is chained after the cluster's CNI in a conflist",
            "",
        )
    })?;
    Ok(Pod {
        container_id: env.container_id.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        uid: env.pod.uid.clone(),
        ips: spec::pod_ips(prev)?,
    })
}

fn add(env: &Environment, conf: &NetConf) -> Result<String, Error> {
    let pod = pod(env, conf)?;
    let what = format!("{}/{}", pod.namespace, pod.name);
    let failed = |reason: String| match conf.failure_policy {
        FailurePolicy::Fail => Err(Error::new(
            Code::TryAgainLater,
            format!("egret-agent did not program pod {what}"),
            format!("{reason} (failure_policy Fail: the runtime retries)"),
        )),
        FailurePolicy::Ignore => {
            eprintln!(
                "egret-cni: pod {what} starts unprogrammed (failure_policy Ignore): {reason}; \
                 its first connections may leave with the node's address"
            );
            Ok(spec::add_result(conf))
        }
    };
    match protocol::ask(&conf.socket, &Request::Add(pod.clone()), conf.timeout) {
        Ok(Answer::Programmed { .. } | Answer::NotSelected) => Ok(spec::add_result(conf)),
        Ok(Answer::Refused { reason }) => failed(reason),
        Ok(other) => failed(format!("unexpected answer {other:?}")),
        Err(error) => failed(error.to_string()),
    }
}

/// DEL succeeds when the agent is away: it removes a gone pod's entries itself when the API
/// says the pod is gone, and a runtime must be able to delete a sandbox whatever happens.
fn del(env: &Environment, conf: &NetConf) -> Result<(), Error> {
    let Ok(pod) = pod(env, conf) else {
        // A DEL of a sandbox whose ADD never got this far: nothing was programmed.
        return Ok(());
    };
    match protocol::ask(&conf.socket, &Request::Del(pod), conf.timeout) {
        Ok(_) => Ok(()),
        Err(error) => {
            eprintln!("egret-cni: DEL: {error}; the agent cleans up from the API");
            Ok(())
        }
    }
}

fn check(env: &Environment, conf: &NetConf) -> Result<(), Error> {
    let pod = pod(env, conf)?;
    match protocol::ask(&conf.socket, &Request::Check(pod), conf.timeout) {
        Ok(Answer::Done | Answer::Programmed { .. } | Answer::NotSelected) => Ok(()),
        Ok(Answer::Refused { reason }) => Err(Error::new(
            Code::InvalidConfig,
            "the pod is not programmed as its policies say",
            reason,
        )),
        Err(error @ (AskError::Unreachable(_) | AskError::TimedOut(_))) => Err(Error::new(
            Code::TryAgainLater,
            "egret-agent cannot check the pod",
            error.to_string(),
        )),
        Err(error) => Err(Error::new(
            Code::Io,
            "egret-agent cannot check the pod",
            error.to_string(),
        )),
    }
}

fn status(conf: &NetConf) -> Result<(), Error> {
    match protocol::ask(&conf.socket, &Request::Status, conf.timeout) {
        Ok(Answer::Done) => Ok(()),
        Ok(Answer::Refused { reason }) => Err(Error::new(
            Code::NotAvailable,
            "egret-agent cannot program pods yet",
            reason,
        )),
        Ok(other) => Err(Error::new(
            Code::NotAvailable,
            "egret-agent's status is not understood",
            format!("{other:?}"),
        )),
        // Pods would start unprogrammed under Ignore; under Fail their ADD would fail.
        Err(error) if conf.failure_policy == FailurePolicy::Ignore => {
            eprintln!("egret-cni: STATUS: {error} (failure_policy Ignore)");
            Ok(())
        }
        Err(error) => Err(Error::new(
            Code::NotAvailable,
            "egret-agent is not available",
            error.to_string(),
        )),
    }
}
