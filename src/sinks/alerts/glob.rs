//! Simple globs for alert rules: `*` (any run of characters, also none),
//! `?` (exactly one character), `[abc]` / `[a-z]` / `[!abc]` (one
//! character of / not of a set) and `\` to escape the next character.
//! Matching ignores ASCII case (`department` matches `Department`) and is
//! anchored at both ends (`CHANGE_USER` does not match `CHANGE_USER_INFO`).

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

fn fold(c: char) -> char {
    c.to_ascii_lowercase()
}

impl Glob {
    /// Parses a pattern; errors say what is wrong and where.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern (use \"*\" to match anything)".into());
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '\\' => {
                    i += 1;
                    let Some(c) = chars.get(i) else {
                        return Err(format!(
                            "invalid glob `{pattern}`: trailing `\\` escapes nothing"
                        ));
                    };
                    tokens.push(Token::Lit(fold(*c)));
                }
                '[' => {
                    let start = i;
                    i += 1;
                    let negated = chars.get(i) == Some(&'!');
                    if negated {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    let mut closed = false;
                    while i < chars.len() {
                        let c = chars[i];
                        if c == ']' && !items.is_empty() {
                            closed = true;
                            break;
                        }
                        if c == ']' {
                            return Err(format!(
                                "invalid glob `{pattern}`: empty character class at position {}",
                                start + 1
                            ));
                        }
                        if chars.get(i + 1) == Some(&'-')
                            && chars.get(i + 2).is_some_and(|n| *n != ']')
                        {
                            let hi = chars[i + 2];
                            if hi < c {
                                return Err(format!(
                                    "invalid glob `{pattern}`: range `{c}-{hi}` is reversed"
                                ));
                            }
                            items.push((fold(c), fold(hi)));
                            i += 3;
                        } else {
                            items.push((fold(c), fold(c)));
                            i += 1;
                        }
                    }
                    if !closed {
                        return Err(format!(
                            "invalid glob `{pattern}`: `[` at position {} is never closed",
                            start + 1
                        ));
                    }
                    tokens.push(Token::Class { negated, items });
                }
                c => tokens.push(Token::Lit(fold(c))),
            }
            i += 1;
        }
        Ok(Glob {
            text: pattern.to_string(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().map(fold).collect();
        // Iterative wildcard matching with one backtrack point per star.
        let (mut ti, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            let step = match self.tokens.get(pi) {
                Some(Token::Star) => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                Some(Token::Any) => true,
                Some(Token::Lit(c)) => *c == t[ti],
                Some(Token::Class { negated, items }) => {
                    let inside = items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&t[ti]));
                    inside != *negated
                }
                None => false,
            };
            if step {
                ti += 1;
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        self.tokens[pi..].iter().all(|t| *t == Token::Star)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).expect("valid").matches(t)
    }

    #[test]
    fn basics() {
        assert!(m("CHANGE_USER_INFO", "CHANGE_USER_INFO"));
        assert!(m("change_user_info", "CHANGE_USER_INFO"));
        assert!(!m("CHANGE_USER", "CHANGE_USER_INFO"));
        assert!(m("CHANGE_USER_*", "CHANGE_USER_INFO"));
        assert!(m("*", ""));
        assert!(m("*MFA*", "CHANGE_MFA_SETTINGS"));
        assert!(!m("*MFA*", "CHANGE_USER_2FA"));
        assert!(m("?FA", "2FA"));
        assert!(m("[0-9]FA", "2FA"));
        assert!(!m("[!0-9]FA", "2FA"));
        assert!(m("a*b*c", "aXXbYYbc"));
        assert!(!m("a*b*c", "aXXbYYbd"));
        assert!(m(r"\*", "*"));
        assert!(!m(r"\*", "x"));
        assert!(m("Job[ _]Title", "Job Title"));
    }

    #[test]
    fn invalid_patterns_are_named() {
        assert!(Glob::new("CHANGE_[USER")
            .unwrap_err()
            .contains("never closed"));
        assert!(Glob::new("x\\").unwrap_err().contains("trailing"));
        assert!(Glob::new("[]")
            .unwrap_err()
            .contains("empty character class"));
        assert!(Glob::new("[z-a]").unwrap_err().contains("reversed"));
        assert!(Glob::new("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn literal_patterns_match_themselves(s in "[A-Za-z0-9_ ]{0,20}") {
            if !s.is_empty() {
                proptest::prop_assert!(m(&s, &s));
            }
            proptest::prop_assert!(m("*", &s));
        }
    }
}
