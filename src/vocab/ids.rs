//! Identifiers. The ECS ids are newtypes over their text so that a task id
//! cannot be passed where a container instance id is expected; they
//! serialize as plain strings (the raft log and the checkpoint keep the same
//! bytes), and read as `&str` where only the text matters. Request ids make
//! a retried write apply once.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// The last `/`-separated segment of `text`: the id of an ARN (a plain id
/// is its own), the last path component of an image reference.
pub fn last_segment(text: &str) -> &str {
    text.rsplit('/').next().unwrap_or(text)
}

/// A fresh random request id.
pub fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                $name(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                $name(text.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(text: &String) -> Self {
                $name(text.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

string_id! {
    /// A cluster's name (not its ARN), e.g. `default`.
    ClusterName
}

string_id! {
    /// A container instance's id within its cluster (the last part of its ARN).
    ContainerInstanceId
}

string_id! {
    /// A task's id within its cluster (the last part of its ARN).
    TaskId
}

string_id! {
    /// A service's name within its cluster.
    ServiceName
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_segment_is_an_arns_id_or_the_id_itself() {
        assert_eq!(
            last_segment("arn:aws:ecs:orc:000000000000:task/default/0f3c"),
            "0f3c"
        );
        assert_eq!(last_segment("0f3c"), "0f3c");
        assert_eq!(last_segment("192.168.1.5:5000/team/web:1"), "web:1");
    }

    #[test]
    fn ids_serialize_as_their_plain_text() {
        let task = TaskId::from("0123abcd");
        assert_eq!(serde_json::to_string(&task).unwrap(), "\"0123abcd\"");
        let back: TaskId = serde_json::from_str("\"0123abcd\"").unwrap();
        assert_eq!(back, task);
        assert_eq!(back, "0123abcd");
        assert_eq!(back.to_string(), "0123abcd");
    }
}
