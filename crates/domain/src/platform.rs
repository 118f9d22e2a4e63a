//! Where a runner is deployed. It decides how its secret is applied and how it is restarted.

use std::fmt;

use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    AwsFargate,
    AzureContainerApp,
    Gke,
    Snowflake,
    Local,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Platform::AwsFargate,
        Platform::AzureContainerApp,
        Platform::Gke,
        Platform::Snowflake,
        Platform::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::AwsFargate => "aws_fargate",
            Platform::AzureContainerApp => "azure_container_app",
            Platform::Gke => "gke",
            Platform::Snowflake => "snowflake",
            Platform::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
                ParseError::new(format!("must be one of {}", names.join(", ")))
            })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for p in Platform::ALL {
            assert_eq!(Platform::parse(p.as_str()), Ok(p));
        }
        let err = Platform::parse("aws").expect_err("not a platform");
        assert!(err.0.contains("aws_fargate"));
    }
}
