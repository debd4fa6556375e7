//! Configuration errors: each names the file and line where known, the component path and
//! field (`sinks.out.uri`), and the cause. Loading collects every error before failing, so a
//! user fixes a config in one pass.

use std::fmt;

/// One problem in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// `file:line` where known.
    pub location: Option<(String, usize)>,
    /// The dotted path of the component or field, e.g. `sources.app.include`. Empty for a
    /// problem with a whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((file, line)) = &self.location {
            write!(f, "{file}:{line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        // A message may quote a value, and a value may be a secret.
        f.write_str(&super::secrets::redact(&self.message))
    }
}

/// Every problem found while loading or validating a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            diagnostics: vec![Diagnostic {
                location: None,
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl ConfigError {
    /// Orders the diagnostics as a reader meets them: by file (in the order the files were
    /// read, which is the order their first diagnostic was found in), then line; those with no
    /// line keep their order, after the rest.
    pub fn sort_in_file_order(&mut self) {
        let mut files: Vec<String> = Vec::new();
        for diagnostic in &self.diagnostics {
            if let Some((file, _)) = &diagnostic.location {
                if !files.contains(file) {
                    files.push(file.clone());
                }
            }
        }
        self.diagnostics
            .sort_by_key(|diagnostic| match &diagnostic.location {
                Some((file, line)) => (0, files.iter().position(|f| f == file), *line),
                None => (1, None, 0),
            });
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.diagnostics.len();
        writeln!(
            f,
            "configuration has {count} error{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for diagnostic in &self.diagnostics {
            writeln!(f, "  x {diagnostic}")?;
        }
        Ok(())
    }
}

/// Suggests the closest candidate to a misspelt name, if one is close enough.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance);
    match best {
        Some((_, candidate)) => format!(" (did you mean `{candidate}`?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("fiel", ["file", "stdin"]),
            " (did you mean `file`?)"
        );
        assert_eq!(did_you_mean("kafka", ["file", "stdin"]), "");
    }
}
