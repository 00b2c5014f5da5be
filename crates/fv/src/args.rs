//! The command line, xe's way: connection options, one command, `key=value` parameters
//! and `--flag`s, in any order.
//!
//! Hand-written rather than clap: xe's single-dash long options (`-pw`, `-pwf`) and its
//! `key=value` and `map:key=value` parameters are not clap's grammar, and the parameters
//! a command takes come from the object model at run time, not from a derive.

use std::path::PathBuf;

use crate::error::Error;

/// How to reach fvd and who to be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnOpts {
    /// `-s HOST`: a TCP server; without it, the local Unix socket.
    pub server: Option<String>,
    /// `-p PORT`; default 443, or 80 with `--nossl`.
    pub port: Option<u16>,
    /// `--nossl`: plain HTTP to `-s` (fvd's `--insecure-http`).
    pub nossl: bool,
    /// `-u USER`; default root.
    pub user: Option<String>,
    /// `-pw PASSWORD`.
    pub password: Option<String>,
    /// `-pwf FILE`: the password is the file's first line.
    pub password_file: Option<PathBuf>,
    /// `--socket PATH`: the local socket; default `$FV_SOCKET` or DATA_DIR/fvd.sock.
    pub socket: Option<PathBuf>,
    /// `--fingerprint HEX`: accept exactly the server certificate with this SHA-256.
    pub fingerprint: Option<String>,
    /// `--cafile FILE`: verify the server's certificate against these PEM certificates.
    pub cafile: Option<PathBuf>,
    /// `--no-verify`: accept any server certificate (warned about on every use).
    pub no_verify: bool,
    /// `--jsonrpc`: speak JSON-RPC at `/jsonrpc` instead of XML-RPC at `/`.
    pub jsonrpc: bool,
}

/// How to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutOpts {
    /// `--json`: machine-readable output of lists, records and results.
    pub json: bool,
    /// `--minimal`: a list prints its uuids, comma-separated (xe's `--minimal`).
    pub minimal: bool,
}

/// One parsed command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invocation {
    pub conn: ConnOpts,
    pub out: OutOpts,
    /// The first bare word: `vm-list`, `help`...
    pub command: Option<String>,
    /// Further bare words (`help vm-start`, `completion bash`).
    pub words: Vec<String>,
    /// `key=value` parameters in order; `key` may be `map:key`.
    pub params: Vec<(String, String)>,
    /// Other `--flag`s, without the dashes (`force`, `start-paused`).
    pub flags: Vec<String>,
    /// `--help` or `-h`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
}

/// Options taking a value, by every spelling.
const VALUED: &[(&[&str], Opt)] = &[
    (&["-s", "--server"], Opt::Server),
    (&["-p", "--port"], Opt::Port),
    (&["-u", "--username"], Opt::User),
    (&["-pw", "--password"], Opt::Password),
    (&["-pwf", "--password-file"], Opt::PasswordFile),
    (&["--socket"], Opt::Socket),
    (&["--fingerprint"], Opt::Fingerprint),
    (&["--cafile"], Opt::CaFile),
];

#[derive(Debug, Clone, Copy)]
enum Opt {
    Server,
    Port,
    User,
    Password,
    PasswordFile,
    Socket,
    Fingerprint,
    CaFile,
}

/// Every global option's spelling, for completion and help.
pub fn global_options() -> Vec<&'static str> {
    let mut out: Vec<&str> = VALUED
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect();
    out.extend([
        "--nossl",
        "--no-verify",
        "--jsonrpc",
        "--json",
        "--minimal",
        "--help",
        "--version",
    ]);
    out
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Invocation, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut inv = Invocation::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        // `--opt=value` for the long valued options.
        let (head, inline) = match arg.split_once('=') {
            Some((h, v)) if h.starts_with("--") => (h.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if let Some((_, opt)) = VALUED
            .iter()
            .find(|(names, _)| names.contains(&head.as_str()))
        {
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| Error::usage(format!("{head} needs a value")))?,
            };
            set_valued(&mut inv.conn, *opt, &head, value)?;
            continue;
        }
        match arg.as_str() {
            "--nossl" => inv.conn.nossl = true,
            "--no-verify" => inv.conn.no_verify = true,
            "--jsonrpc" => inv.conn.jsonrpc = true,
            "--json" => inv.out.json = true,
            "--minimal" => inv.out.minimal = true,
            "--help" | "-h" => inv.help = true,
            "--version" | "-V" => inv.version = true,
            "--" => {
                return Err(Error::usage(
                    "`--` is not accepted: parameters are key=value",
                ));
            }
            flag if flag.starts_with("--") => {
                let name = &flag[2..];
                if name.contains('=') {
                    return Err(Error::usage(format!(
                        "{flag}: flags take no value; give parameters as key=value"
                    )));
                }
                inv.flags.push(name.to_owned());
            }
            opt if opt.starts_with('-') && opt.len() > 1 => {
                return Err(Error::usage(format!("unknown option {opt}")));
            }
            kv if kv.contains('=') => {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if k.is_empty() {
                    return Err(Error::usage(format!(
                        "{kv}: a parameter needs a name before '='"
                    )));
                }
                inv.params.push((k.to_owned(), v.to_owned()));
            }
            word => {
                if inv.command.is_none() {
                    inv.command = Some(word.to_owned());
                } else {
                    inv.words.push(word.to_owned());
                }
            }
        }
    }
    Ok(inv)
}

fn set_valued(c: &mut ConnOpts, opt: Opt, name: &str, value: String) -> Result<(), Error> {
    match opt {
        Opt::Server => c.server = Some(value),
        Opt::Port => {
            c.port = Some(value.parse().map_err(|_| {
                Error::usage(format!("{name} {value}: not a port number (1-65535)"))
            })?);
            if c.port == Some(0) {
                return Err(Error::usage(format!(
                    "{name} 0: not a port number (1-65535)"
                )));
            }
        }
        Opt::User => c.user = Some(value),
        Opt::Password => c.password = Some(value),
        Opt::PasswordFile => c.password_file = Some(PathBuf::from(value)),
        Opt::Socket => c.socket = Some(PathBuf::from(value)),
        Opt::Fingerprint => c.fingerprint = Some(value),
        Opt::CaFile => c.cafile = Some(PathBuf::from(value)),
    }
    Ok(())
}

/// The environment variables that stand in for options not given on the command line:
/// `FV_SERVER`, `FV_PORT`, `FV_USERNAME`, `FV_PASSWORD`, `FV_SOCKET`, `FV_FINGERPRINT`,
/// `FV_CAFILE` (xe has `XE_EXTRA_ARGS` for the same purpose).
pub fn apply_env(c: &mut ConnOpts, env: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if c.server.is_none() {
        c.server = get("FV_SERVER");
    }
    if c.port.is_none() {
        if let Some(p) = get("FV_PORT") {
            set_valued(c, Opt::Port, "FV_PORT", p)?;
        }
    }
    if c.user.is_none() {
        c.user = get("FV_USERNAME");
    }
    if c.password.is_none() && c.password_file.is_none() {
        c.password = get("FV_PASSWORD");
    }
    if c.socket.is_none() {
        c.socket = get("FV_SOCKET").map(PathBuf::from);
    }
    if c.fingerprint.is_none() && c.cafile.is_none() {
        c.fingerprint = get("FV_FINGERPRINT");
        c.cafile = get("FV_CAFILE").map(PathBuf::from);
    }
    Ok(())
}

impl Invocation {
    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Invocation {
        parse(args.iter().copied()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn xe_style_options_anywhere() {
        let inv = p(&[
            "-s",
            "host1",
            "vm-list",
            "-u",
            "alice",
            "-pw",
            "secret",
            "params=uuid,name-label",
            "power-state=running",
            "--minimal",
            "-p",
            "8443",
        ]);
        assert_eq!(inv.conn.server.as_deref(), Some("host1"));
        assert_eq!(inv.conn.user.as_deref(), Some("alice"));
        assert_eq!(inv.conn.password.as_deref(), Some("secret"));
        assert_eq!(inv.conn.port, Some(8443));
        assert_eq!(inv.command.as_deref(), Some("vm-list"));
        assert!(inv.out.minimal && !inv.out.json);
        assert_eq!(
            inv.params,
            [
                ("params".to_owned(), "uuid,name-label".to_owned()),
                ("power-state".to_owned(), "running".to_owned())
            ]
        );
    }

    #[test]
    fn values_keep_their_equals_signs_and_maps_their_colons() {
        let inv = p(&[
            "vm-param-set",
            "uuid=u",
            "other-config:a=b=c",
            "PV-args=console=ttyS0 quiet",
        ]);
        assert_eq!(inv.params[1], ("other-config:a".into(), "b=c".into()));
        assert_eq!(
            inv.params[2],
            ("PV-args".into(), "console=ttyS0 quiet".into())
        );
        let inv = p(&["vm-param-set", "name-label="]);
        assert_eq!(inv.params[0], ("name-label".into(), "".into()));
    }

    #[test]
    fn flags_words_and_long_forms() {
        let inv = p(&[
            "--server=h",
            "--password-file",
            "/pw",
            "vm-shutdown",
            "--force",
            "help",
            "--nossl",
            "--json",
            "--fingerprint=AB:CD",
            "--socket",
            "/s",
        ]);
        assert_eq!(inv.conn.server.as_deref(), Some("h"));
        assert_eq!(inv.conn.password_file, Some(PathBuf::from("/pw")));
        assert_eq!(inv.conn.socket, Some(PathBuf::from("/s")));
        assert_eq!(inv.conn.fingerprint.as_deref(), Some("AB:CD"));
        assert!(inv.conn.nossl && inv.out.json);
        assert!(inv.flag("force") && !inv.flag("nossl"));
        assert_eq!(inv.words, ["help"]);
        assert!(p(&["-h"]).help && p(&["--version"]).version);
        assert!(p(&["-pwf", "f"]).conn.password_file.is_some());
    }

    #[test]
    fn bad_command_lines_are_refused_with_a_reason() {
        for (args, want) in [
            (&["-s"][..], "-s needs a value"),
            (&["-p", "http"], "not a port number"),
            (&["-p", "0"], "not a port number"),
            (&["-p", "70000"], "not a port number"),
            (&["-x"], "unknown option -x"),
            (&["vm-list", "=v"], "needs a name"),
            (&["vm-start", "--force=yes"], "flags take no value"),
            (&["--"], "not accepted"),
        ] {
            let e = parse(args.iter().copied()).expect_err(want);
            assert!(matches!(e, Error::Usage(_)));
            assert!(e.to_string().contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn environment_fills_only_what_the_command_line_left_out() {
        let env = |k: &str| match k {
            "FV_SERVER" => Some("envhost".to_owned()),
            "FV_PORT" => Some("444".to_owned()),
            "FV_PASSWORD" => Some("envpw".to_owned()),
            "FV_USERNAME" => Some("".to_owned()),
            _ => None,
        };
        let mut c = ConnOpts {
            server: Some("cli".into()),
            ..ConnOpts::default()
        };
        apply_env(&mut c, env).unwrap();
        assert_eq!(c.server.as_deref(), Some("cli"));
        assert_eq!(c.port, Some(444));
        assert_eq!(c.password.as_deref(), Some("envpw"));
        assert_eq!(c.user, None, "an empty variable counts as unset");
        // A password file on the command line beats FV_PASSWORD.
        let mut c = ConnOpts {
            password_file: Some("/f".into()),
            ..ConnOpts::default()
        };
        apply_env(&mut c, env).unwrap();
        assert_eq!(c.password, None);
        let bad = |k: &str| (k == "FV_PORT").then(|| "x".to_owned());
        assert!(apply_env(&mut ConnOpts::default(), bad).is_err());
    }
}
