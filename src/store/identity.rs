//! Who a commit is by: git's rules for the author and the committer, so that
//! cairn's commits (and the ledger's actor, the author's name) are by the
//! same person as a hand `git commit` in the same shell.
//!
//! git takes the author's name from `GIT_AUTHOR_NAME`, else the
//! `author.name` config, else `user.name`; the e-mail from
//! `GIT_AUTHOR_EMAIL`, else `author.email`, else `user.email`, else `EMAIL`.
//! The committer likewise from `GIT_COMMITTER_*` and `committer.*`. The
//! config is git's layered config, the later layer winning: the system file
//! (skipped under `GIT_CONFIG_NOSYSTEM`, named by `GIT_CONFIG_SYSTEM`), the
//! global files (the one `GIT_CONFIG_GLOBAL` names, else
//! `$XDG_CONFIG_HOME/git/config` and `~/.gitconfig`), the repository's
//! `config`, then the `GIT_CONFIG_COUNT` / `GIT_CONFIG_KEY_n` /
//! `GIT_CONFIG_VALUE_n` pairs. Names and e-mails lose the characters git
//! strips (surrounding whitespace and punctuation, angle brackets).
//!
//! The library reads no environment: the caller hands the variables in as a
//! [`GitEnv`]. What git would fill in from the system (the login name, the
//! host name) is left to the caller's default instead.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use git2::{Config, ConfigLevel};

/// The environment variables git's identity and config lookup read, as the
/// caller saw them (see [`GitEnv::from_vars`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitEnv {
    vars: BTreeMap<String, String>,
}

impl GitEnv {
    /// Keeps, from a process environment, the variables git's identity
    /// lookup reads (`GIT_*`, `EMAIL`, `HOME`, `XDG_CONFIG_HOME`).
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> GitEnv {
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| {
                k.starts_with("GIT_") || matches!(k.as_str(), "EMAIL" | "HOME" | "XDG_CONFIG_HOME")
            })
            .collect();
        GitEnv { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// git's boolean spelling: unset, empty, `0`, `false`, `no` and `off` are false.
    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no" | "off"
            )
        })
    }

    /// The `-c`-like pairs of `GIT_CONFIG_COUNT`, in order.
    fn config_pairs(&self) -> Vec<(String, String)> {
        let count = self
            .get("GIT_CONFIG_COUNT")
            .and_then(|c| c.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let key = self.get(&format!("GIT_CONFIG_KEY_{i}"))?;
                let value = self.get(&format!("GIT_CONFIG_VALUE_{i}"))?;
                Some((key.to_ascii_lowercase(), value.to_string()))
            })
            .collect()
    }
}

/// One side of a commit's identity: a name and an e-mail, either of which
/// git's rules may leave unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ident {
    /// The name, when known.
    pub name: Option<String>,
    /// The e-mail, when known.
    pub email: Option<String>,
}

/// Git's config as `git commit` would read it for a repository whose
/// common git folder is `common_dir`.
fn layered_config(env: &GitEnv, common_dir: &Path) -> Option<Config> {
    let mut config = Config::new().ok()?;
    let mut add = |path: PathBuf, level: ConfigLevel| {
        // git reads a missing file, /dev/null or a folder as empty.
        if path.is_file() {
            // An unreadable layer is skipped, as git skips a missing one.
            let _ = config.add_file(&path, level, false);
        }
    };
    if !env.flag("GIT_CONFIG_NOSYSTEM") {
        let system = env.get("GIT_CONFIG_SYSTEM").unwrap_or("/etc/gitconfig");
        add(PathBuf::from(system), ConfigLevel::System);
    }
    match env.get("GIT_CONFIG_GLOBAL") {
        Some(global) => add(PathBuf::from(global), ConfigLevel::Global),
        None => {
            let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
            let xdg = match env.get("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
                Some(x) => Some(PathBuf::from(x)),
                None => home.as_ref().map(|h| h.join(".config")),
            };
            if let Some(x) = xdg {
                add(x.join("git").join("config"), ConfigLevel::XDG);
            }
            if let Some(h) = home {
                add(h.join(".gitconfig"), ConfigLevel::Global);
            }
        }
    }
    add(common_dir.join("config"), ConfigLevel::Local);
    Some(config)
}

/// The characters git trims from either end of a name or e-mail.
fn crud(c: char) -> bool {
    (c as u32) <= 32 || matches!(c, ',' | ':' | ';' | '<' | '>' | '"' | '\\' | '\'')
}

/// What git keeps of a name or e-mail: no crud at either end, no angle
/// brackets or newlines inside.
fn without_crud(s: &str) -> String {
    s.trim_matches(crud)
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '\n'))
        .collect()
}

/// The author (`role` "author") or committer (`role` "committer") git would
/// write for a repository whose common git folder is `common_dir`.
pub fn resolve(env: &GitEnv, common_dir: &Path, role: &str) -> Ident {
    let upper = role.to_ascii_uppercase();
    let config = layered_config(env, common_dir);
    let pairs = env.config_pairs();
    // The command-line pairs are the top layer; the last one of a key wins.
    let lookup = |key: &str| -> Option<String> {
        if let Some((_, v)) = pairs.iter().rev().find(|(k, _)| k == key) {
            return Some(v.clone());
        }
        config.as_ref()?.get_string(key).ok()
    };
    let name = env
        .get(&format!("GIT_{upper}_NAME"))
        .map(str::to_string)
        .or_else(|| lookup(&format!("{role}.name")))
        .or_else(|| lookup("user.name"));
    let email = env
        .get(&format!("GIT_{upper}_EMAIL"))
        .map(str::to_string)
        .or_else(|| lookup(&format!("{role}.email")))
        .or_else(|| lookup("user.email"))
        .or_else(|| env.get("EMAIL").map(str::to_string));
    let clean = |s: Option<String>| s.map(|s| without_crud(&s)).filter(|s| !s.is_empty());
    Ident {
        name: clean(name),
        email: clean(email),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> GitEnv {
        GitEnv::from_vars(pairs.iter().map(|(k, v)| (k.into(), v.into())))
    }

    #[test]
    fn env_beats_role_config_beats_user_config() {
        let dir = tempfile::TempDir::new().unwrap();
        let global = dir.path().join("global");
        std::fs::write(
            &global,
            "[user]\n\tname = User\n\temail = user@x\n[committer]\n\tname = Committer\n",
        )
        .unwrap();
        let g = global.to_str().unwrap();
        let e = env(&[("GIT_CONFIG_GLOBAL", g), ("GIT_CONFIG_NOSYSTEM", "1")]);
        let author = resolve(&e, dir.path(), "author");
        assert_eq!(author.name.as_deref(), Some("User"));
        let committer = resolve(&e, dir.path(), "committer");
        assert_eq!(committer.name.as_deref(), Some("Committer"));
        assert_eq!(committer.email.as_deref(), Some("user@x"));

        let e = env(&[
            ("GIT_CONFIG_GLOBAL", g),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_AUTHOR_NAME", "  <Env Name>. "),
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "User.Email"),
            ("GIT_CONFIG_VALUE_0", "pair@x"),
        ]);
        let author = resolve(&e, dir.path(), "author");
        assert_eq!(author.name.as_deref(), Some("Env Name."));
        assert_eq!(author.email.as_deref(), Some("pair@x"));
    }

    #[test]
    fn a_null_global_config_leaves_the_identity_unknown() {
        let dir = tempfile::TempDir::new().unwrap();
        let e = env(&[
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("HOME", dir.path().to_str().unwrap()),
        ]);
        std::fs::write(dir.path().join(".gitconfig"), "[user]\n\tname = Home\n").unwrap();
        assert_eq!(resolve(&e, dir.path(), "author"), Ident::default());
        let e = env(&[("EMAIL", "mail@x"), ("GIT_CONFIG_NOSYSTEM", "yes")]);
        assert_eq!(
            resolve(&e, dir.path(), "author").email.as_deref(),
            Some("mail@x")
        );
    }
}
