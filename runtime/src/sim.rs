//! How a simulated container behaves: from its command (obvious shell snippets) and from pod
//! annotations. Used by [`crate::FakeRuntime`]; documented here because users write them.
//!
//! # Commands
//! A container whose command (`command` + `args`) is a plain program or `sh -c '<script>'`
//! (also `/bin/sh`, `bash`, `ash`) exits by itself when every step of it is understood:
//! `exit N`, `true`, `:`, `false`, `sleep N` (seconds, fractions allowed; `sleep infinity`
//! never ends), `echo …`, `printf …`, `date`, `hostname`, `env`, `printenv`, `ls …`, `cat …`,
//! `uname …`, `whoami`, `id`, `pwd`, steps joined by `;`, `&&`, or new lines. The exit code is
//! the last step's (an `&&` chain stops at the first failure). Anything else — including no
//! command at all (the image's entrypoint, like nginx) — runs until stopped.
//!
//! # Annotations (on the pod; a `.<container>` suffix limits one to that container)
//! - `sim.k8slite.io/exit-code: "N"`: the container exits with N (after `run-seconds`, default 0).
//! - `sim.k8slite.io/run-seconds: "S"`: it exits after S seconds (code from `exit-code`, else 0).
//! - `sim.k8slite.io/ready: "false"`: readiness probes fail (the pod never becomes Ready).
//! - `sim.k8slite.io/live: "false"`: liveness probes fail (the container is restarted).
//! - `sim.k8slite.io/startup: "false"`: startup probes fail.
//! - `sim.k8slite.io/termination-seconds: "S"`: after SIGTERM the container takes S seconds to
//!   exit (default 0); if the grace period is shorter it is killed (exit code 137).
//! - `sim.k8slite.io/pull-error: "message"`: pulling the container's image fails.

use std::collections::BTreeMap;
use std::time::Duration;

/// Annotation: exit code.
pub const EXIT_CODE: &str = "sim.k8slite.io/exit-code";
/// Annotation: seconds until the container exits.
pub const RUN_SECONDS: &str = "sim.k8slite.io/run-seconds";
/// Annotation: `"false"` makes readiness probes fail.
pub const READY: &str = "sim.k8slite.io/ready";
/// Annotation: `"false"` makes liveness probes fail.
pub const LIVE: &str = "sim.k8slite.io/live";
/// Annotation: `"false"` makes startup probes fail.
pub const STARTUP: &str = "sim.k8slite.io/startup";
/// Annotation: seconds a container takes to exit after SIGTERM.
pub const TERMINATION_SECONDS: &str = "sim.k8slite.io/termination-seconds";
/// Annotation: pulling the image fails with this message.
pub const PULL_ERROR: &str = "sim.k8slite.io/pull-error";

/// What a simulated container does once started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Runs until stopped.
    RunForever,
    /// Exits by itself.
    Exit {
        /// Time after start.
        after: Duration,
        /// Exit code.
        code: i32,
    },
}

/// The annotation `key` for `container`: `key.<container>` wins over `key`.
pub fn annotation<'a>(
    annotations: &'a BTreeMap<String, String>,
    key: &str,
    container: &str,
) -> Option<&'a str> {
    annotations
        .get(&format!("{key}.{container}"))
        .or_else(|| annotations.get(key))
        .map(|s| s.trim())
}

fn seconds(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().trim_end_matches('s').parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v))
}

/// The plan of `container` given its command/args and the pod's annotations.
pub fn plan(
    container: &str,
    command: &[String],
    args: &[String],
    annotations: &BTreeMap<String, String>,
) -> Plan {
    let code = annotation(annotations, EXIT_CODE, container).and_then(|s| s.parse::<i32>().ok());
    let after = annotation(annotations, RUN_SECONDS, container).and_then(seconds);
    match (code, after) {
        (Some(code), after) => Plan::Exit {
            after: after.unwrap_or_default(),
            code,
        },
        (None, Some(after)) => Plan::Exit { after, code: 0 },
        (None, None) => {
            let argv: Vec<String> = command.iter().chain(args).cloned().collect();
            plan_of_argv(&argv)
        }
    }
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// The plan of a command line (`argv`).
pub fn plan_of_argv(argv: &[String]) -> Plan {
    let Some(first) = argv.first() else {
        return Plan::RunForever;
    };
    let shells = ["sh", "bash", "ash", "dash", "zsh"];
    if shells.contains(&basename(first)) {
        // sh -c 'script' [name args…]; also combined flags like -ec.
        let mut it = argv[1..].iter();
        while let Some(a) = it.next() {
            if a.starts_with('-') && a.contains('c') {
                return match it.next() {
                    Some(script) => plan_of_script(script),
                    None => Plan::RunForever,
                };
            }
            if !a.starts_with('-') {
                break;
            }
        }
        return Plan::RunForever;
    }
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    match step(&words) {
        Some(Step::Exit(code)) | Some(Step::Status(code)) => Plan::Exit {
            after: Duration::ZERO,
            code,
        },
        Some(Step::Sleep(d)) => Plan::Exit { after: d, code: 0 },
        None => Plan::RunForever,
    }
}

enum Step {
    Exit(i32),
    Status(i32),
    Sleep(Duration),
}

fn step(words: &[&str]) -> Option<Step> {
    let (cmd, rest) = words.split_first()?;
    let cmd = basename(cmd);
    match cmd {
        "exit" => Some(Step::Exit(match rest.first() {
            Some(n) => n.parse().ok()?,
            None => 0,
        })),
        "true" | ":" => Some(Step::Status(0)),
        "false" => Some(Step::Status(1)),
        "sleep" => {
            let arg = rest.first()?;
            if *arg == "infinity" {
                return None;
            }
            seconds(arg).map(Step::Sleep)
        }
        "echo" | "printf" | "date" | "hostname" | "env" | "printenv" | "ls" | "cat" | "uname"
        | "whoami" | "id" | "pwd" => Some(Step::Status(0)),
        _ => None,
    }
}

/// Split a shell word list, dropping simple quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

/// The plan of a shell script.
pub fn plan_of_script(script: &str) -> Plan {
    // Tokenise into steps separated by `;`, newline or `&&` (outside quotes).
    let mut steps: Vec<(String, bool)> = Vec::new(); // (text, joined to the next by &&)
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let chars: Vec<char> = script.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                cur.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                ';' | '\n' => steps.push((std::mem::take(&mut cur), false)),
                '&' if chars.get(i + 1) == Some(&'&') => {
                    steps.push((std::mem::take(&mut cur), true));
                    i += 1;
                }
                '|' | '&' | '>' | '<' | '$' | '`' | '(' | ')' => return Plan::RunForever,
                _ => cur.push(c),
            },
        }
        i += 1;
    }
    steps.push((cur, false));
    let mut elapsed = Duration::ZERO;
    let mut status = 0;
    let mut skip_rest_of_chain = false;
    for (text, and_next) in steps {
        let w = words(&text);
        if w.is_empty() {
            continue;
        }
        if skip_rest_of_chain {
            skip_rest_of_chain = and_next;
            continue;
        }
        let refs: Vec<&str> = w.iter().map(String::as_str).collect();
        match step(&refs) {
            Some(Step::Exit(code)) => {
                return Plan::Exit {
                    after: elapsed,
                    code,
                };
            }
            Some(Step::Status(code)) => status = code,
            Some(Step::Sleep(d)) => {
                elapsed += d;
                status = 0;
            }
            None => return Plan::RunForever,
        }
        if and_next && status != 0 {
            skip_rest_of_chain = true;
        }
    }
    Plan::Exit {
        after: elapsed,
        code: status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn exit(secs: f64, code: i32) -> Plan {
        Plan::Exit {
            after: Duration::from_secs_f64(secs),
            code,
        }
    }

    #[test]
    fn shell_snippets() {
        assert_eq!(plan_of_argv(&argv(&["sh", "-c", "exit 3"])), exit(0.0, 3));
        assert_eq!(
            plan_of_argv(&argv(&["/bin/sh", "-c", "exit 0"])),
            exit(0.0, 0)
        );
        assert_eq!(plan_of_argv(&argv(&["true"])), exit(0.0, 0));
        assert_eq!(plan_of_argv(&argv(&["false"])), exit(0.0, 1));
        assert_eq!(plan_of_argv(&argv(&["sleep", "2"])), exit(2.0, 0));
        assert_eq!(plan_of_argv(&argv(&["echo", "hi"])), exit(0.0, 0));
        assert_eq!(
            plan_of_argv(&argv(&["sh", "-c", "echo 'a; b'; sleep 1.5; exit 4"])),
            exit(1.5, 4)
        );
        assert_eq!(
            plan_of_argv(&argv(&["sh", "-c", "false && sleep 5; true"])),
            exit(0.0, 0)
        );
        assert_eq!(
            plan_of_argv(&argv(&["sh", "-c", "sleep 1 && false"])),
            exit(1.0, 1)
        );
    }

    #[test]
    fn unknown_commands_run_forever() {
        assert_eq!(plan_of_argv(&[]), Plan::RunForever);
        assert_eq!(
            plan_of_argv(&argv(&["nginx", "-g", "daemon off;"])),
            Plan::RunForever
        );
        assert_eq!(
            plan_of_argv(&argv(&["sleep", "infinity"])),
            Plan::RunForever
        );
        assert_eq!(
            plan_of_argv(&argv(&["sh", "-c", "while true; do sleep 1; done"])),
            Plan::RunForever
        );
        assert_eq!(
            plan_of_argv(&argv(&["sh", "-c", "echo $HOME | tee x"])),
            Plan::RunForever
        );
        assert_eq!(plan_of_argv(&argv(&["sh"])), Plan::RunForever);
    }

    #[test]
    fn annotations_win_and_can_target_one_container() {
        let ann = BTreeMap::from([
            (EXIT_CODE.to_string(), "2".to_string()),
            (format!("{EXIT_CODE}.side"), "0".to_string()),
            (RUN_SECONDS.to_string(), "3".to_string()),
        ]);
        let forever = argv(&["nginx"]);
        assert_eq!(plan("main", &forever, &[], &ann), exit(3.0, 2));
        assert_eq!(plan("side", &forever, &[], &ann), exit(3.0, 0));
        let only_secs = BTreeMap::from([(RUN_SECONDS.to_string(), "1".to_string())]);
        assert_eq!(plan("c", &forever, &[], &only_secs), exit(1.0, 0));
        assert_eq!(
            plan(
                "c",
                &argv(&["sh"]),
                &argv(&["-c", "exit 5"]),
                &BTreeMap::new()
            ),
            exit(0.0, 5)
        );
    }
}
