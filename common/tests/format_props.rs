//! Property tests for the hand-written format editors (`formats::ini`,
//! `formats::netrc`): parse -> merge -> render keeps every byte the edit
//! does not own. Documents are generated as structures and rendered here,
//! so each property can say exactly which bytes an edit may change: the
//! generated document with the edit applied, rendered the same way.

use common::formats::ini::IniDoc;
use common::formats::netrc::{self, Set};
use common::secret_value::SecretText;
use proptest::prelude::*;

// ---------------------------------------------------------------- INI --

/// One line of a generated INI section body.
#[derive(Debug, Clone)]
enum IniLine {
    Blank(String),
    Comment(String),
    /// key, separator (`=` or `:` with spaces around), value
    Key(String, String, String),
}

#[derive(Debug, Clone)]
struct IniSection {
    name: String,
    lines: Vec<IniLine>,
}

#[derive(Debug, Clone)]
struct Ini {
    sections: Vec<IniSection>,
    eol: &'static str,
    /// Whether the last line ends with the end-of-line sequence.
    final_eol: bool,
}

impl Ini {
    fn render(&self) -> String {
        let mut lines: Vec<String> = vec![];
        for s in &self.sections {
            lines.push(format!("[{}]", s.name));
            for l in &s.lines {
                lines.push(match l {
                    IniLine::Blank(ws) => ws.clone(),
                    IniLine::Comment(c) => c.clone(),
                    IniLine::Key(k, sep, v) => format!("{k}{sep}{v}"),
                });
            }
        }
        let mut out = lines.join(self.eol);
        if self.final_eol && !out.is_empty() {
            out.push_str(self.eol);
        }
        out
    }

    /// Every (section, key) of the document.
    fn keys(&self) -> Vec<(usize, usize)> {
        let mut out = vec![];
        for (si, s) in self.sections.iter().enumerate() {
            for (li, l) in s.lines.iter().enumerate() {
                if matches!(l, IniLine::Key(..)) {
                    out.push((si, li));
                }
            }
        }
        out
    }
}

fn value() -> impl Strategy<Value = String> {
    // No outer whitespace (the format trims it), no newline; inner spaces
    // and INI-looking characters allowed.
    "[A-Za-z0-9/+=_.:;#\\[\\]-]([A-Za-z0-9/+=_.:;#\\[\\] -]{0,24}[A-Za-z0-9/+=_.-])?"
}

fn ini_line() -> impl Strategy<Value = IniLine> {
    prop_oneof![
        "[ \t]{0,3}".prop_map(IniLine::Blank),
        "[#;][ A-Za-z0-9=\\[\\]]{0,20}".prop_map(IniLine::Comment),
        (
            "[a-z][a-z0-9_]{0,10}",
            prop_oneof![
                Just("=".to_owned()),
                Just(" = ".to_owned()),
                Just(" =".to_owned()),
                Just("= ".to_owned()),
                Just(" : ".to_owned()),
                Just("\t=\t".to_owned()),
            ],
            value(),
        )
            .prop_map(|(k, sep, v)| IniLine::Key(k, sep, v)),
    ]
}

fn ini() -> impl Strategy<Value = Ini> {
    (
        prop::collection::vec(
            (
                "(default|profile [a-z]{1,6}|[a-z][a-z0-9_-]{0,8})",
                prop::collection::vec(ini_line(), 0..8),
            ),
            1..6,
        ),
        prop_oneof![Just("\n"), Just("\r\n")],
        any::<bool>(),
    )
        .prop_map(|(sections, eol, final_eol)| {
            // Section names and keys within a section are unique, as the
            // parser requires.
            let mut seen = std::collections::HashSet::new();
            let sections = sections
                .into_iter()
                .filter(|(name, _)| seen.insert(name.clone()))
                .map(|(name, lines)| {
                    let mut keys = std::collections::HashSet::new();
                    let lines = lines
                        .into_iter()
                        .filter(|l| match l {
                            IniLine::Key(k, ..) => keys.insert(k.clone()),
                            _ => true,
                        })
                        .collect();
                    IniSection { name, lines }
                })
                .collect();
            Ini {
                sections,
                eol,
                final_eol,
            }
        })
}

fn parse(text: &str) -> IniDoc {
    IniDoc::parse("~/.aws/credentials", text, false).expect("a generated document parses")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Parsing and rendering an untouched document gives its bytes back.
    #[test]
    fn ini_untouched_round_trips(doc in ini()) {
        let text = doc.render();
        prop_assert_eq!(parse(&text).render().expose_secret().to_owned(), text);
    }

    /// Setting an existing key changes that value's bytes and nothing else;
    /// every other key reads as before.
    #[test]
    fn ini_set_in_place_changes_only_that_value(
        doc in ini(),
        pick in any::<prop::sample::Index>(),
        new in value(),
    ) {
        let keys = doc.keys();
        prop_assume!(!keys.is_empty());
        let (si, li) = keys[pick.index(keys.len())];
        let section = doc.sections[si].name.clone();
        let IniLine::Key(key, _, _) = doc.sections[si].lines[li].clone() else { unreachable!() };

        let mut parsed = parse(&doc.render());
        parsed.set(&section, &key, &new);
        let mut expected = doc.clone();
        if let IniLine::Key(_, _, v) = &mut expected.sections[si].lines[li] {
            *v = new.clone();
        }
        prop_assert_eq!(parsed.render().expose_secret().to_owned(), expected.render());
        let again = parse(parsed.render().expose_secret());
        for (sj, lj) in doc.keys() {
            if let IniLine::Key(k, _, v) = &expected.sections[sj].lines[lj] {
                prop_assert_eq!(again.get(&expected.sections[sj].name, k), Some(v.as_str()));
            }
        }
    }

    /// A key added to an existing section and removed again leaves the file
    /// as it was (when it ended with a newline: adding one to the last line
    /// is the one byte an append may add). Sections that hold a key: one
    /// left with nothing but blank lines loses its header, by design.
    #[test]
    fn ini_added_then_removed_key_leaves_the_file_as_it_was(
        mut doc in ini(),
        pick in any::<prop::sample::Index>(),
        v in value(),
    ) {
        doc.final_eol = true;
        let with_keys: Vec<usize> = (0..doc.sections.len())
            .filter(|&i| doc.sections[i].lines.iter().any(|l| matches!(l, IniLine::Key(..))))
            .collect();
        prop_assume!(!with_keys.is_empty());
        let si = with_keys[pick.index(with_keys.len())];
        let section = doc.sections[si].name.clone();
        let key = "rh_prop_added_key";
        let text = doc.render();
        let mut parsed = parse(&text);
        parsed.set(&section, key, &v);
        let added = parse(parsed.render().expose_secret());
        prop_assert_eq!(added.get(&section, key), Some(v.as_str()));
        // Every other byte of the file is still there, in order.
        let rendered = parsed.render();
        let added_line = format!("{key} = {v}\n");
        prop_assert_eq!(rendered.expose_secret().replacen(&added_line, "", 1), text.clone());
        prop_assert!(parsed.remove(&section, key));
        prop_assert_eq!(parsed.render().expose_secret().to_owned(), text);
    }
}

// -------------------------------------------------------------- netrc --

#[derive(Debug, Clone)]
enum NetrcItem {
    Machine {
        name: String,
        login: String,
        password: Option<String>,
        one_line: bool,
    },
    Comment(String),
    Default(String),
}

fn netrc_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.@+/=-]{1,20}"
}

fn netrc_item() -> impl Strategy<Value = NetrcItem> {
    prop_oneof![
        4 => (
            "[a-z][a-z0-9-]{0,8}\\.(com|org|ai)",
            netrc_token(),
            prop::option::of(netrc_token()),
            any::<bool>(),
        )
            .prop_map(|(name, login, password, one_line)| NetrcItem::Machine {
                name,
                login,
                password,
                one_line,
            }),
        1 => "# [a-z0-9 .]{0,20}".prop_map(NetrcItem::Comment),
        1 => netrc_token().prop_map(NetrcItem::Default),
    ]
}

/// A netrc whose `default` entry (which ends every entry list) comes last.
fn netrc_doc() -> impl Strategy<Value = Vec<NetrcItem>> {
    prop::collection::vec(netrc_item(), 0..8).prop_map(|items| {
        let mut names = std::collections::HashSet::new();
        let (mut rest, defaults): (Vec<_>, Vec<_>) = items
            .into_iter()
            .filter(|i| match i {
                NetrcItem::Machine { name, .. } => names.insert(name.clone()),
                _ => true,
            })
            .partition(|i| !matches!(i, NetrcItem::Default(_)));
        rest.extend(defaults.into_iter().take(1));
        rest
    })
}

fn render_netrc(items: &[NetrcItem]) -> String {
    let mut out = String::new();
    for i in items {
        match i {
            NetrcItem::Machine {
                name,
                login,
                password,
                one_line,
            } => {
                let sep = if *one_line { " " } else { "\n  " };
                out.push_str(&format!("machine {name}{sep}login {login}"));
                if let Some(p) = password {
                    out.push_str(&format!("{sep}password {p}"));
                }
                out.push('\n');
            }
            NetrcItem::Comment(c) => {
                out.push_str(c);
                out.push('\n');
            }
            NetrcItem::Default(l) => out.push_str(&format!("default login {l}\n")),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Replacing a machine's password changes that token alone.
    #[test]
    fn netrc_replaced_password_changes_only_that_token(
        doc in netrc_doc(),
        pick in any::<prop::sample::Index>(),
        new in netrc_token(),
    ) {
        let with_password: Vec<usize> = doc
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, NetrcItem::Machine { password: Some(_), .. }))
            .map(|(n, _)| n)
            .collect();
        prop_assume!(!with_password.is_empty());
        let at = with_password[pick.index(with_password.len())];
        let NetrcItem::Machine { name, login, password: Some(old), .. } = doc[at].clone() else {
            unreachable!()
        };
        prop_assume!(old != new);
        let text = SecretText::new(render_netrc(&doc));
        let mut expected = doc.clone();
        if let NetrcItem::Machine { password, .. } = &mut expected[at] {
            *password = Some(new.clone());
        }
        match netrc::set_password(Some(&text), &name, &login, &new, true) {
            Set::Text(t) => prop_assert_eq!(t.expose_secret().to_owned(), render_netrc(&expected)),
            other => prop_assert!(false, "expected new text, got {:?}", other),
        }
        prop_assert_eq!(
            netrc::set_password(Some(&text), &name, &login, &new, false),
            Set::Differs
        );
        prop_assert_eq!(
            netrc::set_password(Some(&text), &name, &login, &old, false),
            Set::Same
        );
    }

    /// An entry appended for a new machine and removed again leaves the file
    /// as it was; other machines' passwords read as before while it is there.
    #[test]
    fn netrc_appended_then_removed_entry_leaves_the_file_as_it_was(
        doc in netrc_doc(),
        password in netrc_token(),
    ) {
        // `default` ends the entry list; appending after it is what
        // `wandb login` does too, but a reader stops at it, so the property
        // is checked on files without one.
        let doc: Vec<NetrcItem> =
            doc.into_iter().filter(|i| !matches!(i, NetrcItem::Default(_))).collect();
        let machine = "api.rh-prop.example";
        let text = SecretText::new(render_netrc(&doc));
        let Set::Text(added) = netrc::set_password(Some(&text), machine, "user", &password, false)
        else {
            return Err(TestCaseError::fail("a new machine is appended"));
        };
        prop_assert!(added.expose_secret().starts_with(text.expose_secret()));
        prop_assert_eq!(netrc::password(&added, machine), Some(password.as_str()));
        for i in &doc {
            if let NetrcItem::Machine { name, password: p, .. } = i {
                prop_assert_eq!(netrc::password(&added, name), p.as_deref());
            }
        }
        let removed = netrc::remove_entry(&added, machine, &password).expect("the entry is found");
        prop_assert_eq!(removed.expose_secret(), text.expose_secret());
    }
}
