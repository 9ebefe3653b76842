//! File formats shared by several providers: a line-preserving INI editor
//! ([`ini`]), a one-entry `~/.netrc` editor ([`netrc`]), YAML helpers ([`yaml`]) and whole-file text secrets ([`whole`]).
//! Everything works on text in memory; errors name the file and line and a
//! category, never the content of the offending line.

pub mod ini;
pub mod netrc;
pub mod whole;
pub mod yaml;
