//! The configuration error: every problem at once, each naming its variable.

use std::fmt;

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One or more variables are invalid; each problem names its variable and never holds a password.
    #[error("invalid configuration: {}", ProblemList(problems))]
    Invalid {
        /// Every problem found, in the order of the configuration table.
        problems: Vec<Problem>,
    },
}

impl Error {
    /// Every problem found, in the order of the configuration table.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid { problems } => problems,
        }
    }
}

/// One invalid variable, or one missing combination of variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable at fault (for a missing combination, the first one the message names).
    pub variable: &'static str,
    /// What is wrong and what is expected, starting with the variable's name; never a password.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
