//! Environment interpolation on the raw config text, before YAML parsing:
//! `${VAR}`, `${VAR:-default}` (default when unset or empty) and `$$` for a literal `$`.
//! Whole-line comments are left alone, so a commented-out `${VAR}` never fails a load.

/// Replaces variables in `text` using `lookup`. Returns every unresolved variable with its
/// 1-based line, so one run reports all of them.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                match body.find('}') {
                    Some(end) => {
                        let expr = &body[..end];
                        let (name, default) = match expr.split_once(":-") {
                            Some((name, default)) => (name, Some(default)),
                            None => (expr, None),
                        };
                        let value = lookup(name).filter(|v| !(default.is_some() && v.is_empty()));
                        match (value, default) {
                            (Some(value), _) => out.push_str(&value),
                            (None, Some(default)) => out.push_str(default),
                            (None, None) => missing.push((index + 1, name.to_string())),
                        }
                        rest = &body[end + 1..];
                    }
                    None => {
                        out.push('$');
                        rest = after;
                    }
                }
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let text = "uri: http://${HOST}:${PORT:-8080}/x\nlevel: ${EMPTY:-info}\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "uri: http://example.com:8080/x\nlevel: info\n"
        );
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(
            interpolate("a: $${HOST} $$5\n", env).unwrap(),
            "a: ${HOST} $5\n"
        );
    }

    #[test]
    fn unset_variable_without_default_is_reported_with_its_line() {
        let err = interpolate("a: 1\nb: ${NOPE}\nc: ${ALSO_NOPE}\n", env).unwrap_err();
        assert_eq!(
            err,
            vec![(2, "NOPE".to_string()), (3, "ALSO_NOPE".to_string())]
        );
    }

    #[test]
    fn comments_are_not_interpolated() {
        assert_eq!(
            interpolate("# ${NOPE}\na: b\n", env).unwrap(),
            "# ${NOPE}\na: b\n"
        );
    }

    #[test]
    fn lone_dollar_signs_stay() {
        assert_eq!(
            interpolate("a: cost $5 and ${\n", env).unwrap(),
            "a: cost $5 and ${\n"
        );
    }
}
