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
