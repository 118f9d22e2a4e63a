//! Opaque identifiers. UUIDv7 keeps ids sortable by creation time, which cursor paging relies on.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::ParseError;

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| ParseError::new(concat!("is not a valid ", $what, " id")))
            }
        }
    };
}

uuid_id!(RunnerId, "runner");
uuid_id!(UserId, "user");
uuid_id!(RunId, "run");
uuid_id!(TaskId, "task");
uuid_id!(ApiTokenId, "API token");

/// A runner as a request names it: by id, or by name (names are unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerRef {
    Id(RunnerId),
    Name(crate::RunnerName),
}

impl RunnerRef {
    /// An id if `key` is one, else a name; an error if it is neither.
    pub fn parse(key: &str) -> Result<Self, ParseError> {
        if let Ok(id) = key.parse() {
            return Ok(Self::Id(id));
        }
        crate::RunnerName::parse(key)
            .map(Self::Name)
            .map_err(|_| ParseError::new("is neither a runner id nor a runner name"))
    }
}

impl From<RunnerId> for RunnerRef {
    fn from(id: RunnerId) -> Self {
        Self::Id(id)
    }
}

impl fmt::Display for RunnerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(name) => f.write_str(name.as_str()),
        }
    }
}

/// Ties the steps of one client-driven rotation together in the audit log: `rot_` and 16 hex
/// digits, made by the control plane when the rotation starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RotationId(String);

impl RotationId {
    pub fn generate() -> Self {
        let hex: String = crate::random_bytes::<8>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self(format!("rot_{hex}"))
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let hex = s.strip_prefix("rot_").unwrap_or_default();
        if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "is not a rotation id (rot_ and 16 hex digits)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RotationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_is_named_by_id_or_name_and_nothing_else() {
        let id = RunnerId::new();
        assert_eq!(RunnerRef::parse(&id.to_string()), Ok(RunnerRef::Id(id)));
        let by_name = RunnerRef::parse("build-eu").expect("name");
        assert!(matches!(&by_name, RunnerRef::Name(n) if n.as_str() == "build-eu"));
        assert_eq!(by_name.to_string(), "build-eu");
        assert!(RunnerRef::parse("Not A Name").is_err());
        assert!(RunnerRef::parse("").is_err());
    }

    #[test]
    fn rotation_ids_are_made_and_checked_in_one_shape() {
        let made = RotationId::generate();
        assert_eq!(RotationId::parse(made.as_str()), Ok(made.clone()));
        assert_ne!(made, RotationId::generate());
        for bad in [
            "rot_",
            "rot_0123456789abcdeg",
            "rot_0123456789abcdef0",
            "x_0123456789abcdef",
        ] {
            assert!(RotationId::parse(bad).is_err(), "{bad}");
        }
    }
}
