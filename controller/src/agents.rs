//! The agent binaries `controller cluster bootstrap` sends to nodes: one
//! static (musl) agent per node architecture, built by
//! `scripts/build-agents.sh` into `DIR/<target>/agent` next to
//! `DIR/<target>/agent.sha256`, and the one table ([`NODE_TARGETS`]) that
//! maps a node's `uname -m` to its target. The directories searched:
//! `$RH_AGENTS_DIR` alone when set, else `~/.rh/agents` then `target/agents`
//! beside the build profile directory of this controller
//! (`target/release/controller` finds `target/agents`). `--agent-bin FILE` overrides the lookup for every
//! node. Each binary's SHA-256 is computed here, checked against its
//! `agent.sha256`, and later verified on the node before it is installed;
//! every binary must be a Linux ELF for the node's machine. Handles no
//! secret: binaries and their hashes only.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A node's `uname -m` -> the Rust target of the static agent it runs.
pub const NODE_TARGETS: &[(&str, &str)] = &[
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("amd64", "x86_64-unknown-linux-musl"),
    ("aarch64", "aarch64-unknown-linux-musl"),
    ("arm64", "aarch64-unknown-linux-musl"),
];

/// The static agent target for a node answering `uname_m`.
pub fn node_target(uname_m: &str) -> Option<&'static str> {
    let arch = uname_m.trim();
    NODE_TARGETS
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, t)| *t)
}

/// Why no agent can be sent to a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentsError {
    #[error(
        "node architecture {arch:?} has no agent (supported: x86_64/amd64, aarch64/arm64); \
         give --agent-bin with a Linux agent built for it"
    )]
    UnsupportedArch { arch: String },
    #[error(
        "no agent for {arch} nodes: {target}/agent is in none of {searched}; \
         build it with scripts/build-agents.sh or give --agent-bin"
    )]
    Missing {
        arch: String,
        target: &'static str,
        searched: String,
    },
    #[error("agent binary {path}: {detail}")]
    Unusable { path: String, detail: String },
    #[error(
        "agent binary {path} does not match its agent.sha256 (sha256 {actual}, expected \
         {expected}): rebuild it with scripts/build-agents.sh"
    )]
    Mismatch {
        path: String,
        actual: String,
        expected: String,
    },
    #[error("agent binary {path} is {found}, not a Linux {arch} agent")]
    WrongMachine {
        path: String,
        found: String,
        arch: String,
    },
}

/// One agent binary to send: where it is, its SHA-256 (lowercase hex) and
/// what it is (the target, or `--agent-bin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBin {
    pub path: PathBuf,
    pub sha256: String,
    pub what: String,
    /// The ELF machine it was built for (`x86_64`, `aarch64`, ...).
    pub machine: String,
}

/// The agents one bootstrap can send: `--agent-bin`, or the static agents
/// found for each target, hashed once.
#[derive(Debug)]
pub struct Agents {
    explicit: Option<Result<AgentBin, AgentsError>>,
    searched: Vec<PathBuf>,
    by_target: BTreeMap<&'static str, Result<AgentBin, AgentsError>>,
}

impl Agents {
    /// `--agent-bin` when given, else the static agents in [`search_dirs`].
    pub fn new(explicit: Option<&Path>, home: &Path) -> Self {
        if let Some(p) = explicit {
            return Self {
                explicit: Some(load(p, "--agent-bin".into(), None)),
                searched: vec![],
                by_target: BTreeMap::new(),
            };
        }
        Self::in_dirs(search_dirs(home))
    }

    /// The static agents in `dirs` (the first that has a target's agent wins).
    pub fn in_dirs(dirs: Vec<PathBuf>) -> Self {
        let mut by_target = BTreeMap::new();
        for (_, target) in NODE_TARGETS {
            if by_target.contains_key(target) {
                continue;
            }
            if let Some(dir) = dirs.iter().find(|d| d.join(target).join("agent").is_file()) {
                let path = dir.join(target).join("agent");
                let sums = dir.join(target).join("agent.sha256");
                by_target.insert(*target, load(&path, (*target).into(), Some(&sums)));
            }
        }
        Self {
            explicit: None,
            searched: dirs,
            by_target,
        }
    }

    /// The agent for a node whose `uname -m` answered `uname_m`, checked to
    /// be a Linux ELF for that machine.
    pub fn for_arch(&self, uname_m: &str) -> Result<AgentBin, AgentsError> {
        let arch = uname_m.trim();
        let unsupported = || AgentsError::UnsupportedArch { arch: arch.into() };
        let bin = match &self.explicit {
            Some(bin) => bin.clone()?,
            None => {
                let target = node_target(arch).ok_or_else(unsupported)?;
                match self.by_target.get(target) {
                    Some(bin) => bin.clone()?,
                    None => {
                        return Err(AgentsError::Missing {
                            arch: arch.into(),
                            target,
                            searched: self
                                .searched
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
        };
        let want = node_target(arch)
            .map(|t| t.split('-').next().unwrap_or(t))
            .ok_or_else(unsupported)?;
        if bin.machine != want {
            return Err(AgentsError::WrongMachine {
                path: bin.path.display().to_string(),
                found: bin.machine.clone(),
                arch: arch.into(),
            });
        }
        Ok(bin)
    }
}

/// Where static agents are looked for: `$RH_AGENTS_DIR` alone when set,
/// else `~/.rh/agents` then `target/agents` beside this controller's
/// profile dir.
pub fn search_dirs(home: &Path) -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os("RH_AGENTS_DIR").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(d)];
    }
    let mut dirs = vec![];
    dirs.push(home.join(".rh").join("agents"));
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("agents")))
    {
        dirs.push(target);
    }
    dirs
}

/// Hash `path`, check it against the `sha256sum`-format file `sums` when
/// given, and read its ELF machine.
fn load(path: &Path, what: String, sums: Option<&Path>) -> Result<AgentBin, AgentsError> {
    let unusable = |detail: String| AgentsError::Unusable {
        path: path.display().to_string(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(|e| unusable(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| unusable(e.to_string()))?;
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            let take = n.min(4096 - head.len());
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
    }
    let sha256 = hex::encode(hasher.finalize());
    if let Some(sums) = sums {
        let text = std::fs::read_to_string(sums).map_err(|e| {
            unusable(format!(
                "{}: {e} (rebuild with scripts/build-agents.sh)",
                sums.display()
            ))
        })?;
        let expected = text.split_whitespace().next().unwrap_or("").to_lowercase();
        if expected != sha256 {
            return Err(AgentsError::Mismatch {
                path: path.display().to_string(),
                actual: sha256,
                expected,
            });
        }
    }
    let machine = elf_machine(&head).map_err(|found| AgentsError::WrongMachine {
        path: path.display().to_string(),
        found,
        arch: "node".into(),
    })?;
    Ok(AgentBin {
        path: path.to_owned(),
        sha256,
        what,
        machine: machine.into(),
    })
}

/// What a 64-bit little-endian ELF header says about a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `x86_64`, `aarch64`, or `machine N`.
    pub machine: String,
    /// No `PT_INTERP`: needs no dynamic loader (statically linked).
    pub is_static: bool,
}

/// The machine of a Linux ELF binary from its first bytes, or what the
/// bytes are instead (`Mach-O`, `not an executable`, ...).
fn elf_machine(head: &[u8]) -> Result<&'static str, String> {
    let info = elf_info(head)?;
    match info.machine.as_str() {
        "x86_64" => Ok("x86_64"),
        "aarch64" => Ok("aarch64"),
        other => Err(format!("an ELF for {other}")),
    }
}

/// Parse the ELF header (and program headers, when within `head`) of a
/// binary: its machine and whether it is statically linked.
pub fn elf_info(head: &[u8]) -> Result<ElfInfo, String> {
    const MACHO: [[u8; 4]; 4] = [
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
        [0xfe, 0xed, 0xfa, 0xcf],
    ];
    if head.len() >= 4 && MACHO.iter().any(|m| head[..4] == *m) {
        return Err("a Mach-O (macOS) binary".into());
    }
    if head.len() < 64 || head[..4] != *b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    if head[4] != 2 || head[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let machine = match u16_at(18) {
        62 => "x86_64".to_string(),
        183 => "aarch64".to_string(),
        n => format!("machine {n}"),
    };
    let phoff = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54) as usize, u16_at(56) as usize);
    let mut is_static = true;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(p_type) = head.get(at..at + 4) else {
            return Err("an ELF whose program headers are not near its start".into());
        };
        // PT_INTERP: the path of the dynamic loader.
        if u32::from_le_bytes(p_type.try_into().expect("4 bytes")) == 3 {
            is_static = false;
        }
    }
    Ok(ElfInfo { machine, is_static })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit ELF header for `machine` with one program header
    /// of type `ph_type`.
    fn elf(machine: u16, ph_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ph_type.to_le_bytes());
        b
    }

    /// `dir/<target>/agent` with `bytes` and a matching (or given) agent.sha256.
    fn put(dir: &Path, target: &str, bytes: &[u8], sum: Option<&str>) -> PathBuf {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("agent"), bytes).unwrap();
        let real = hex::encode(Sha256::digest(bytes));
        std::fs::write(
            d.join("agent.sha256"),
            format!("{}  agent\n", sum.unwrap_or(&real)),
        )
        .unwrap();
        d.join("agent")
    }

    #[test]
    fn the_arch_table_maps_both_spellings_and_nothing_else() {
        assert_eq!(node_target("x86_64\n"), Some("x86_64-unknown-linux-musl"));
        assert_eq!(node_target("amd64"), Some("x86_64-unknown-linux-musl"));
        assert_eq!(node_target("aarch64"), Some("aarch64-unknown-linux-musl"));
        assert_eq!(node_target("arm64"), Some("aarch64-unknown-linux-musl"));
        for other in ["riscv64", "armv7l", "ppc64le", "", "x86_64 "] {
            assert_eq!(node_target(other).is_some(), other.trim() == "x86_64");
        }
    }

    #[test]
    fn a_node_answering_aarch64_gets_the_aarch64_agent_and_x86_64_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let arm = put(dir.path(), "aarch64-unknown-linux-musl", &elf(183, 1), None);
        let x86 = put(dir.path(), "x86_64-unknown-linux-musl", &elf(62, 1), None);
        let agents = Agents::in_dirs(vec![dir.path().to_owned()]);
        for arch in ["aarch64", "arm64\n"] {
            let bin = agents.for_arch(arch).unwrap();
            assert_eq!(bin.path, arm);
            assert_eq!(bin.what, "aarch64-unknown-linux-musl");
            assert_eq!(bin.sha256, hex::encode(Sha256::digest(elf(183, 1))));
        }
        assert_eq!(agents.for_arch("x86_64").unwrap().path, x86);
        assert!(matches!(
            agents.for_arch("riscv64"),
            Err(AgentsError::UnsupportedArch { .. })
        ));
    }

    #[test]
    fn the_first_directory_with_the_target_wins() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        put(b.path(), "x86_64-unknown-linux-musl", &elf(62, 1), None);
        let arm_b = put(b.path(), "aarch64-unknown-linux-musl", &elf(183, 1), None);
        let x86_a = put(a.path(), "x86_64-unknown-linux-musl", &elf(62, 1), None);
        let agents = Agents::in_dirs(vec![a.path().to_owned(), b.path().to_owned()]);
        assert_eq!(agents.for_arch("x86_64").unwrap().path, x86_a);
        assert_eq!(agents.for_arch("aarch64").unwrap().path, arm_b);
    }

    #[test]
    fn a_missing_agent_names_the_arch_and_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "x86_64-unknown-linux-musl", &elf(62, 1), None);
        let agents = Agents::in_dirs(vec![dir.path().to_owned()]);
        let e = agents.for_arch("aarch64").unwrap_err();
        assert!(matches!(e, AgentsError::Missing { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("aarch64") && text.contains("build-agents.sh"));
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
    }

    #[test]
    fn a_binary_that_does_not_match_its_sha256_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            "x86_64-unknown-linux-musl",
            &elf(62, 1),
            Some(&"0".repeat(64)),
        );
        let agents = Agents::in_dirs(vec![dir.path().to_owned()]);
        assert!(matches!(
            agents.for_arch("x86_64"),
            Err(AgentsError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_binary_for_another_machine_is_refused_even_with_agent_bin() {
        let dir = tempfile::tempdir().unwrap();
        // An x86_64 build misplaced under the aarch64 target.
        put(dir.path(), "aarch64-unknown-linux-musl", &elf(62, 1), None);
        let agents = Agents::in_dirs(vec![dir.path().to_owned()]);
        let e = agents.for_arch("aarch64").unwrap_err();
        assert!(matches!(e, AgentsError::WrongMachine { .. }), "{e}");
        // --agent-bin overrides the lookup, not the machine check.
        let macho = dir.path().join("agent-macos");
        let mut bytes = vec![0xcf, 0xfa, 0xed, 0xfe];
        bytes.resize(4096, 0);
        std::fs::write(&macho, bytes).unwrap();
        let e = Agents::new(Some(&macho), dir.path())
            .for_arch("x86_64")
            .unwrap_err();
        assert!(e.to_string().contains("Mach-O"), "{e}");
        let x86 = dir.path().join("agent-x86");
        std::fs::write(&x86, elf(62, 1)).unwrap();
        let explicit = Agents::new(Some(&x86), dir.path());
        assert_eq!(explicit.for_arch("x86_64").unwrap().what, "--agent-bin");
        assert!(matches!(
            explicit.for_arch("aarch64"),
            Err(AgentsError::WrongMachine { .. })
        ));
    }

    #[test]
    fn elf_headers_tell_machine_and_static_linking() {
        assert_eq!(
            elf_info(&elf(183, 1)).unwrap(),
            ElfInfo {
                machine: "aarch64".into(),
                is_static: true
            }
        );
        // PT_INTERP: dynamically linked.
        assert!(!elf_info(&elf(62, 3)).unwrap().is_static);
        assert!(elf_info(b"#!/bin/sh\necho hi\n").is_err());
        let mut big_endian = elf(62, 1);
        big_endian[5] = 2;
        assert!(elf_info(&big_endian).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_host_build_of_this_test_is_read_as_an_elf_of_this_machine() {
        let exe = std::env::current_exe().unwrap();
        let mut head = vec![0u8; 4096];
        let n = std::fs::File::open(exe).unwrap().read(&mut head).unwrap();
        let info = elf_info(&head[..n]).unwrap();
        assert_eq!(info.machine, std::env::consts::ARCH);
    }
}
