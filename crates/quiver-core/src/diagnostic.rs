//! Errors a person can act on: each [`Diagnostic`] names the file, line and column,
//! shows the offending line with a caret under the culprit, and, for unknown names,
//! suggests the closest known one.
//!
//! ```text
//! error: unknown source `driver_stat`; did you mean `driver_stats`?
//!   --> features/views.sql:9:9
//!    |
//!  9 |    FROM driver_stat
//!    |         ^^^^^^^^^^^
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// One definition file as read from disk, kept so diagnostics can quote its lines.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path shown to the user (relative to the repository when possible).
    pub display_path: String,
    /// The absolute path.
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
}

/// Index of a file in [`SourceFiles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub usize);

/// A position in a definition file: 1-based line and column, and how many characters
/// the caret underlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub file: FileId,
    pub line: u64,
    pub column: u64,
    pub width: u64,
}

/// All definition files of a repository.
#[derive(Debug, Clone, Default)]
pub struct SourceFiles {
    files: Vec<SourceFile>,
}

impl SourceFiles {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0]
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i), f))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Resolves a location into a self-contained pointer that quotes the line.
    pub fn pointer(&self, loc: Loc) -> Pointer {
        let file = self.get(loc.file);
        let line_text = file
            .text
            .lines()
            .nth(loc.line.saturating_sub(1) as usize)
            .unwrap_or("")
            .to_string();
        Pointer {
            path: file.display_path.clone(),
            line: loc.line,
            column: loc.column.max(1),
            width: loc.width.max(1),
            line_text,
        }
    }

    /// A diagnostic pointing at `loc`.
    pub fn error_at(&self, loc: Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            at: Some(self.pointer(loc)),
            help: None,
        }
    }
}

/// Where a diagnostic points, with the quoted line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pointer {
    pub path: String,
    pub line: u64,
    pub column: u64,
    #[serde(skip)]
    pub width: u64,
    #[serde(skip)]
    pub line_text: String,
}

/// One problem found in the definitions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Pointer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic that points at no file (e.g. "no definition files found").
    pub fn global(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            at: None,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// A diagnostic for a file that could not be read.
    pub fn unreadable(path: &Path, err: &std::io::Error) -> Self {
        Diagnostic::global(format!("cannot read {}: {err}", path.display()))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(at) = &self.at {
            let number = at.line.to_string();
            let pad = " ".repeat(number.len());
            writeln!(f, "{pad}--> {}:{}:{}", at.path, at.line, at.column)?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{number} | {}", at.line_text)?;
            let lead: String = at
                .line_text
                .chars()
                .take(at.column.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(at.width as usize))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one pass over the definitions.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok(())` when empty, otherwise the diagnostics as an error.
    pub fn into_result(self) -> crate::Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::InvalidDefinitions(self))
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        match self.0.len() {
            0 | 1 => Ok(()),
            n => write!(f, "\n{n} errors in the definitions"),
        }
    }
}

/// The candidate closest to `name` by edit distance, when it is close enough to be a
/// plausible typo (at most a third of the name's length, and at least 1 edit allowed).
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.to_string()))
        .map(|(_, c)| c.to_string())
}

/// `"; did you mean `x`?"` or nothing.
pub fn suggestion_suffix(suggestion: Option<String>) -> String {
    did_you_mean(&suggestion)
}

/// `"; did you mean `x`?"` or nothing (for `thiserror` messages).
pub fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["driver_stats", "customer_profile"];
        assert_eq!(
            closest("driver_stat", names).as_deref(),
            Some("driver_stats")
        );
        assert_eq!(
            closest("Driver_Stats", names).as_deref(),
            Some("driver_stats")
        );
        assert_eq!(closest("orders", names), None);
    }

    #[test]
    fn renders_caret_under_column() {
        let mut files = SourceFiles::default();
        let id = files.add(SourceFile {
            display_path: "a.sql".into(),
            path: "a.sql".into(),
            text: "line one\n  FROM bad_name;\n".into(),
        });
        let d = files.error_at(
            Loc {
                file: id,
                line: 2,
                column: 8,
                width: 8,
            },
            "unknown source `bad_name`",
        );
        assert_eq!(
            d.to_string(),
            "error: unknown source `bad_name`\n --> a.sql:2:8\n  |\n2 |   FROM bad_name;\n  |        ^^^^^^^^\n"
        );
    }
}
