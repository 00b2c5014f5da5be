//! Shell completion. The scripts are thin: they hand the line typed so far to
//! `fv __complete LINE`, which answers from the same derived command table that runs
//! the commands, so completion can never disagree with the model.

use fv_xapi::model::{self, Class, Ty};

use crate::args;
use crate::commands::{self, class_cli, cli_name, Cmd, Special};
use crate::error::Error;

/// The completion script for `shell`.
pub fn script(shell: &str) -> Result<String, Error> {
    Ok(match shell {
        "bash" => BASH.to_owned(),
        // zsh runs the bash function through its bash compatibility layer.
        "zsh" => format!("autoload -U +X bashcompinit && bashcompinit\n{BASH}"),
        "fish" => FISH.to_owned(),
        other => {
            return Err(Error::usage(format!(
                "completion {other}: give bash, zsh or fish"
            )))
        }
    })
}

const BASH: &str = r#"# fv completion: source <(fv completion bash)
_fv() {
    local line="${COMP_LINE:0:COMP_POINT}"
    local cur="${line##*[[:space:]]}"
    # bash splits words at = and :, so offer only what follows the last of them.
    local pre="${cur%"${cur##*[=:]}"}"
    local IFS=$'\n'
    local cands=($(fv __complete "$line" 2>/dev/null))
    COMPREPLY=("${cands[@]#"$pre"}")
}
complete -o nospace -o default -F _fv fv
"#;

const FISH: &str = r#"# fv completion: fv completion fish | source
function __fv_complete
    fv __complete (commandline -cp)
end
complete -c fv -f -a '(__fv_complete)'
"#;

/// The valued global options, whose next word is their value.
fn takes_value(word: &str) -> bool {
    [
        "-s",
        "-p",
        "-u",
        "-pw",
        "-pwf",
        "--server",
        "--port",
        "--username",
        "--password",
        "--password-file",
        "--socket",
        "--fingerprint",
        "--cafile",
    ]
    .contains(&word)
}

/// Candidates for the last word of `line` (the text before the cursor, program name
/// first), each a whole word.
pub fn candidates(line: &str) -> Vec<String> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let cur = if line.is_empty() || line.ends_with(char::is_whitespace) {
        ""
    } else {
        words.pop().unwrap_or("")
    };
    // Skip the program name, option values, and find the command.
    let mut command = None;
    let mut before: Vec<&str> = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        if takes_value(w) {
            i += 2;
            continue;
        }
        if !w.starts_with('-') && !w.contains('=') && command.is_none() {
            command = Some(w);
        } else {
            before.push(w);
        }
        i += 1;
    }
    if let Some(prev) = words.last() {
        if takes_value(prev) && words.len() > 1 {
            return Vec::new();
        }
    }
    let out: Vec<String> = if cur.starts_with('-') {
        let mut flags: Vec<String> = args::global_options()
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if let Some(c) = command.and_then(commands::find) {
            flags.extend(command_flags(&c.cmd));
        }
        flags
    } else if command.is_none() {
        commands::all().iter().map(|c| c.name.clone()).collect()
    } else {
        let Some(c) = command.and_then(commands::find) else {
            return Vec::new();
        };
        match &c.cmd {
            Cmd::Special(Special::Help) => commands::all().iter().map(|c| c.name.clone()).collect(),
            Cmd::Special(Special::Completion) => vec!["bash".into(), "zsh".into(), "fish".into()],
            cmd => match cur.split_once('=') {
                Some((key, value)) => values_for(cmd, &before, key, value)
                    .into_iter()
                    .map(|v| format!("{key}={v}"))
                    .collect(),
                None => keys_for(cmd, &before),
            },
        }
    };
    let mut out: Vec<String> = out.into_iter().filter(|c| c.starts_with(cur)).collect();
    out.sort();
    out.dedup();
    out
}

fn command_flags(cmd: &Cmd) -> Vec<String> {
    match cmd {
        Cmd::Call(spec) => spec
            .params
            .iter()
            .filter(|p| p.ty == Ty::Bool)
            .map(|p| format!("--{}", cli_name(p.name)))
            .collect(),
        Cmd::CleanOrHard { .. } => vec!["--force".into()],
        _ => Vec::new(),
    }
}

fn field_keys(class: &'static Class, settable: bool) -> Vec<String> {
    class
        .fields
        .iter()
        .filter(|f| !settable || commands::setter(class, f.name).is_some())
        .map(|f| match f.ty {
            Ty::Map(..) if settable => format!("{}:", cli_name(f.name)),
            _ => format!("{}=", cli_name(f.name)),
        })
        .collect()
}

/// The class named by an earlier `class=` word (event-wait).
fn class_from(before: &[&str]) -> Option<&'static Class> {
    let name = before.iter().find_map(|w| w.strip_prefix("class="))?;
    model::CLASSES
        .iter()
        .copied()
        .find(|c| c.stored && (c.name.eq_ignore_ascii_case(name) || class_cli(c) == name))
}

fn keys_for(cmd: &Cmd, before: &[&str]) -> Vec<String> {
    let uuid = || vec!["uuid=".to_owned()];
    let coll = || vec!["uuid=".into(), "param-name=".into(), "param-key=".into()];
    match cmd {
        Cmd::List(c) => {
            let mut k = vec!["params=".to_owned()];
            k.extend(field_keys(c, false));
            k
        }
        Cmd::ParamList(_) => uuid(),
        Cmd::ParamGet(_) | Cmd::ParamAdd(_) | Cmd::ParamRemove(_) => coll(),
        Cmd::ParamClear(_) => vec!["uuid=".into(), "param-name=".into()],
        Cmd::ParamSet(c) => {
            let mut k = uuid();
            k.extend(field_keys(c, true));
            k
        }
        Cmd::Call(spec) | Cmd::CleanOrHard { clean: spec, .. } => {
            let mut k = Vec::new();
            for p in &spec.params {
                match p.ty {
                    Ty::Record(c) => {
                        if let Some(class) = model::class(c) {
                            for f in commands::record_fields(class) {
                                k.push(match f.ty {
                                    Ty::Map(..) => format!("{}:", cli_name(f.name)),
                                    _ => format!("{}=", cli_name(f.name)),
                                });
                            }
                        }
                    }
                    Ty::Map(..) => k.push(format!("{}:", commands::param_keys(spec, p)[0])),
                    _ => k.push(format!("{}=", commands::param_keys(spec, p)[0])),
                }
            }
            k
        }
        Cmd::Special(Special::VmInstall) => {
            vec![
                "template=".into(),
                "new-name-label=".into(),
                "sr-uuid=".into(),
            ]
        }
        Cmd::Special(Special::EventWait) => {
            let mut k = vec!["class=".to_owned(), "uuid=".to_owned()];
            if let Some(c) = class_from(before) {
                k.extend(field_keys(c, false));
            }
            k
        }
        Cmd::Special(_) => Vec::new(),
    }
}

fn ty_values(ty: &Ty) -> Vec<String> {
    match ty {
        Ty::Enum(e) => e.values.iter().map(|v| (*v).to_owned()).collect(),
        Ty::Bool => vec!["true".into(), "false".into()],
        _ => Vec::new(),
    }
}

fn values_for(cmd: &Cmd, before: &[&str], key: &str, value: &str) -> Vec<String> {
    let class = match cmd {
        Cmd::List(c)
        | Cmd::ParamList(c)
        | Cmd::ParamGet(c)
        | Cmd::ParamSet(c)
        | Cmd::ParamAdd(c)
        | Cmd::ParamRemove(c)
        | Cmd::ParamClear(c) => Some(*c),
        Cmd::Call(s) | Cmd::CleanOrHard { clean: s, .. } => Some(s.class),
        Cmd::Special(Special::EventWait) => class_from(before),
        Cmd::Special(_) => None,
    };
    let fields =
        |c: &'static Class| -> Vec<String> { c.fields.iter().map(|f| cli_name(f.name)).collect() };
    match (cmd, key) {
        (Cmd::List(c), "params") => {
            // Complete the last name of the comma list.
            let head = value.rfind(',').map_or("", |i| &value[..=i]);
            let mut names = fields(c);
            names.push("all".into());
            names.into_iter().map(|n| format!("{head}{n}")).collect()
        }
        (_, "param-name") => class.map(fields).unwrap_or_default(),
        (Cmd::Special(Special::EventWait), "class") => model::CLASSES
            .iter()
            .filter(|c| c.stored)
            .map(|c| class_cli(c))
            .collect(),
        (Cmd::Call(spec) | Cmd::CleanOrHard { clean: spec, .. }, _) => {
            let p = spec.params.iter().find(|p| {
                commands::param_keys(spec, p)
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(key))
            });
            match p {
                Some(p) => ty_values(&p.ty),
                None => spec
                    .params
                    .iter()
                    .filter_map(|p| match p.ty {
                        Ty::Record(c) => model::class(c),
                        _ => None,
                    })
                    .flat_map(|c| c.fields.iter())
                    .find(|f| commands::names(key, f.name))
                    .map(|f| ty_values(&f.ty))
                    .unwrap_or_default(),
            }
        }
        _ => class
            .and_then(|c| c.fields.iter().find(|f| commands::names(key, f.name)))
            .map(|f| ty_values(&f.ty))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(line: &str, want: &str) -> bool {
        candidates(line).iter().any(|c| c == want)
    }

    #[test]
    fn commands_then_keys_then_values() {
        assert!(has("fv vm-st", "vm-start"));
        assert!(has("fv -s host vm-st", "vm-start"));
        assert!(!has("fv vm-st", "vm-list"));
        assert!(has("fv vm-start ", "uuid="));
        assert!(has("fv vm-start u", "uuid="));
        assert!(has("fv vm-start --", "--start-paused"));
        assert!(has("fv vm-start --", "--force"));
        assert!(has("fv vm-shutdown --f", "--force"));
        assert!(has("fv vm-list power-state=R", "power-state=Running"));
        assert!(has(
            "fv vm-list params=uuid,name-l",
            "params=uuid,name-label"
        ));
        assert!(has("fv vm-list params=", "params=all"));
        assert!(has("fv vm-param-set uuid=x other-c", "other-config:"));
        assert!(
            !has("fv vm-param-set uuid=x power", "power-state="),
            "read-only"
        );
        assert!(has("fv vm-param-get param-name=PV", "param-name=PV-kernel"));
        assert!(has(
            "fv vm-start uuid=x start-paused=t",
            "start-paused=true"
        ));
        assert!(has("fv event-wait class=", "class=vm"));
        assert!(has("fv event-wait class=vm power", "power-state="));
        assert!(has("fv network-create name", "name-label="));
        assert!(has("fv help vm-in", "vm-install"));
        assert!(has("fv completion ", "fish"));
        assert!(
            candidates("fv -s ").is_empty(),
            "an option's value is not completed"
        );
        assert!(candidates("fv no-such-command ").is_empty());
        assert!(has("", "vm-list") || candidates("").is_empty());
    }

    #[test]
    fn scripts() {
        assert!(script("bash").unwrap().contains("complete -o nospace"));
        assert!(script("zsh").unwrap().contains("bashcompinit"));
        assert!(script("fish").unwrap().contains("__fv_complete"));
        assert!(matches!(script("tcsh"), Err(Error::Usage(_))));
    }
}
