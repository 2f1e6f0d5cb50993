//! Compose's variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`,
//! `${VAR+alt}`, `$$` for a literal `$`; defaults may nest. An unset variable
//! without a default is empty, as compose makes it (with a warning).

/// `lookup` answers `None` for an unset variable, `Some("")` for an empty one.
pub type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A `${VAR?}` / `${VAR:?}` whose variable is missing: compose stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub var: String,
    pub message: String,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Resolve `s`; `seen` collects every variable named, defaults included.
fn resolve(
    s: &str,
    lookup: &Lookup,
    seen: &mut Vec<String>,
    evaluate: bool,
) -> Result<String, Required> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&n) if is_name_start(n) => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && is_name(chars[j]) {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if evaluate {
                    out.push_str(&lookup(&name).unwrap_or_default());
                }
                seen.push(name);
                i = j;
            }
            Some('{') => {
                // The braced expression ends at the `}` that closes it.
                let mut depth = 0;
                let mut j = i + 1;
                let mut end = None;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let Some(end) = end else {
                    // Unclosed: compose rejects it; keep the text as it is.
                    out.extend(&chars[i..]);
                    break;
                };
                let inner: String = chars[i + 2..end].iter().collect();
                out.push_str(&braced(&inner, lookup, seen, evaluate)?);
                i = end + 1;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn braced(
    inner: &str,
    lookup: &Lookup,
    seen: &mut Vec<String>,
    evaluate: bool,
) -> Result<String, Required> {
    let name_len = inner.chars().take_while(|c| is_name(*c)).count();
    let name: String = inner.chars().take(name_len).collect();
    let rest: String = inner.chars().skip(name_len).collect();
    seen.push(name.clone());
    let value = if evaluate { lookup(&name) } else { None };
    let (op, arg) = ["-", ":-", "?", ":?", "+", ":+"]
        .iter()
        .filter(|op| rest.starts_with(**op))
        .max_by_key(|op| op.len())
        .map(|op| (*op, &rest[op.len()..]))
        .unwrap_or(("", ""));
    // Every branch is resolved (for `seen`), but only the chosen one counts.
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let take_arg = match op {
        "-" => !set,
        ":-" => !non_empty,
        "+" => set,
        ":+" => non_empty,
        _ => false,
    };
    let arg_value = resolve(arg, lookup, seen, evaluate && take_arg)?;
    if !evaluate {
        return Ok(String::new());
    }
    match op {
        "?" | ":?" if (op == "?" && !set) || (op == ":?" && !non_empty) => Err(Required {
            var: name,
            message: arg.to_string(),
        }),
        "-" | ":-" if take_arg => Ok(arg_value),
        "+" | ":+" => Ok(if take_arg { arg_value } else { String::new() }),
        _ => Ok(value.unwrap_or_default()),
    }
}

/// The value compose makes of `s`.
pub fn interpolate(s: &str, lookup: &Lookup) -> Result<String, Required> {
    resolve(s, lookup, &mut Vec::new(), true)
}

/// Every variable `s` names, in defaults and alternatives too.
pub fn variables(s: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let _ = resolve(s, &|_| None, &mut seen, false);
    let mut unique: Vec<String> = Vec::new();
    for v in seen {
        if !v.is_empty() && !unique.contains(&v) {
            unique.push(v);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "CUSTOM_IMAGE" => Some("me/erp".into()),
            "CUSTOM_TAG" => Some("1.2.0".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn i(s: &str) -> Result<String, Required> {
        interpolate(s, &env)
    }

    #[test]
    fn compose_forms() {
        assert_eq!(i("${CUSTOM_IMAGE}:${CUSTOM_TAG}").unwrap(), "me/erp:1.2.0");
        assert_eq!(i("$CUSTOM_IMAGE:$CUSTOM_TAG").unwrap(), "me/erp:1.2.0");
        assert_eq!(
            i("${CUSTOM_IMAGE:-frappe/erpnext}:${CUSTOM_TAG:-$ERPNEXT_VERSION}").unwrap(),
            "me/erp:1.2.0"
        );
        assert_eq!(
            i("${NOPE:-frappe/erpnext}:${NOPE:-${ALSO:-v15}}").unwrap(),
            "frappe/erpnext:v15"
        );
        assert_eq!(i("${EMPTY-a}|${EMPTY:-b}|${NOPE-c}").unwrap(), "|b|c");
        assert_eq!(
            i("${EMPTY+a}|${EMPTY:+b}|${NOPE+c}|${CUSTOM_TAG:+d}").unwrap(),
            "a|||d"
        );
        assert_eq!(i("$$HOST ${NOPE} $").unwrap(), "$HOST  $");
        assert_eq!(i("pre-${CUSTOM_TAG}-post").unwrap(), "pre-1.2.0-post");
    }

    #[test]
    fn required_variables_stop() {
        assert_eq!(
            i("${NOPE:?set NOPE in .env}").unwrap_err(),
            Required {
                var: "NOPE".into(),
                message: "set NOPE in .env".into()
            }
        );
        assert!(i("${EMPTY:?}").is_err());
        assert_eq!(i("${EMPTY?}").unwrap(), "");
        assert_eq!(i("${CUSTOM_TAG:?x}").unwrap(), "1.2.0");
        // A required variable inside a default that is not taken does not stop.
        assert_eq!(i("${CUSTOM_TAG:-${NOPE:?x}}").unwrap(), "1.2.0");
    }

    #[test]
    fn variables_named_anywhere() {
        assert_eq!(
            variables("${CUSTOM_IMAGE:-frappe/erpnext}:${CUSTOM_TAG:-$ERPNEXT_VERSION}"),
            vec!["CUSTOM_IMAGE", "CUSTOM_TAG", "ERPNEXT_VERSION"]
        );
        assert_eq!(variables("$$NOT_A_VAR mariadb:11.8"), Vec::<String>::new());
    }
}
