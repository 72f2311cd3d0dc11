//! String-valued enums with the original's spellings (stored and sent as these strings).

use std::fmt;
use std::str::FromStr;

/// A string that names no member of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind} (expected one of: {expected})")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident as $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum! {
    /// `users.role` (stored by value).
    UserRole as "user role" {
        Superadmin => "superadmin",
        Admin => "admin",
        User => "user",
        Monitor => "monitor",
    }
}

string_enum! {
    /// How a keypair resource policy treats slots it does not list (stored by name).
    DefaultForUnspecified as "default_for_unspecified value" {
        Limited => "LIMITED",
        Unlimited => "UNLIMITED",
    }
}

string_enum! {
    /// `agents.status` (stored by name).
    AgentStatus as "agent status" {
        Alive => "ALIVE",
        Lost => "LOST",
        Restarting => "RESTARTING",
        Terminated => "TERMINATED",
    }
}

string_enum! {
    /// `kernels.status` (stored by name). `PENDING` and `PULLING` come from the 19.09
    /// scheduler, which this implementation has from the start.
    KernelStatus as "kernel status" {
        Pending => "PENDING",
        Preparing => "PREPARING",
        Building => "BUILDING",
        Pulling => "PULLING",
        Running => "RUNNING",
        Restarting => "RESTARTING",
        Resizing => "RESIZING",
        Suspended => "SUSPENDED",
        Terminating => "TERMINATING",
        Terminated => "TERMINATED",
        Error => "ERROR",
    }
}

impl KernelStatus {
    /// Whether a kernel in this status holds slots on its agent (reserved when it is
    /// placed, released when it becomes TERMINATED).
    pub fn holds_slots(self) -> bool {
        use KernelStatus::*;
        matches!(
            self,
            Preparing | Pulling | Running | Restarting | Terminating | Error
        )
    }

    /// The event announcing a change to this status (the original's names).
    pub fn event_name(self) -> &'static str {
        use KernelStatus::*;
        match self {
            Pending => "session_pending",
            Preparing => "session_preparing",
            Pulling => "session_pulling",
            Running => "session_started",
            Restarting => "session_restarting",
            Terminating => "session_terminating",
            Terminated => "session_terminated",
            Error => "session_failed",
            Building | Resizing | Suspended => "session_changed",
        }
    }
}

string_enum! {
    /// Permission on a shared virtual folder (stored by value); `wd` is the owner's.
    VFolderPermission as "vfolder permission" {
        ReadOnly => "ro",
        ReadWrite => "rw",
        RwDelete => "wd",
    }
}

string_enum! {
    /// The manager's service status, kept in the shared config under `manager/status`.
    ManagerStatus as "manager status" {
        Terminated => "terminated",
        Preparing => "preparing",
        Running => "running",
        Frozen => "frozen",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_original_spellings() {
        for role in UserRole::ALL {
            assert_eq!(role.as_str().parse::<UserRole>(), Ok(*role));
        }
        assert_eq!("UNLIMITED".parse(), Ok(DefaultForUnspecified::Unlimited));
        assert_eq!(
            serde_json::to_string(&VFolderPermission::RwDelete).unwrap(),
            "\"wd\""
        );
    }

    #[test]
    fn unknown_spelling_names_the_choices() {
        let err = "root".parse::<UserRole>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'root' is not a valid user role (expected one of: superadmin, admin, user, monitor)"
        );
    }
}
