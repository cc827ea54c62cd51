//! The journal's own enums: each variant has an explicit code, the byte written on disk, pinned by
//! a unit test. The command line maps its flags onto them (`cli::to_journal`), so reordering a
//! flag's values can never change what a recorded run means.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A unit enum written as one byte (its code) in the journal's postcard payloads and as its
/// kebab-case name in JSON (`journal export`). Codes below 128 are the bytes format 1 wrote for
/// the variant indices of the same values, so format-1 payloads decode unchanged.
macro_rules! coded_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $code:literal, $text:literal;)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The byte written on disk.
            pub fn code(self) -> u8 {
                match self { $($name::$v => $code),+ }
            }
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some($name::$v),)+ _ => None }
            }
            /// The name in JSON and in `journal show`.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $text),+ }
            }
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some($name::$v),)+ _ => None }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(self.as_str())
                } else {
                    s.serialize_u8(self.code())
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    $name::from_name(&s).ok_or_else(|| {
                        D::Error::custom(format!(concat!("unknown ", stringify!($name), " {:?}"), s))
                    })
                } else {
                    let c = u8::deserialize(d)?;
                    $name::from_code(c).ok_or_else(|| {
                        D::Error::custom(format!(concat!("unknown ", stringify!($name), " code {}"), c))
                    })
                }
            }
        }
    };
}

coded_enum! {
    /// How the target is activated at the end (`switch-to-configuration ACTION`).
    Action {
        Switch = 0, "switch";
        Boot = 1, "boot";
        Test = 2, "test";
    }
}

coded_enum! {
    /// The strategy the user asked for.
    Strategy {
        Auto = 0, "auto";
        Direct = 1, "direct";
        Stepwise = 2, "stepwise";
    }
}

coded_enum! {
    /// What a failed run does.
    OnFailure {
        Unwind = 0, "unwind";
        Hold = 1, "hold";
    }
}

coded_enum! {
    /// Whether the run may reboot between steps.
    RebootPolicy {
        Never = 0, "never";
        WhenNeeded = 1, "when-needed";
    }
}

coded_enum! {
    /// Format 3: what a run does when activation switched but some units failed
    /// (`switch-to-configuration` exit 4).
    #[derive(Default)]
    OnFailedUnits {
        #[default]
        Continue = 0, "continue";
        Stop = 1, "stop";
    }
}

impl From<crate::effects::store::Action> for Action {
    fn from(a: crate::effects::store::Action) -> Self {
        use crate::effects::store::Action as A;
        match a {
            A::Switch => Action::Switch,
            A::Boot => Action::Boot,
            A::Test => Action::Test,
        }
    }
}

impl From<Action> for crate::effects::store::Action {
    fn from(a: Action) -> Self {
        use crate::effects::store::Action as A;
        match a {
            Action::Switch => A::Switch,
            Action::Boot => A::Boot,
            Action::Test => A::Test,
        }
    }
}

/// When a run may reboot: local wall-clock minutes after midnight, `lower` inclusive to `upper`
/// exclusive; a window with `lower > upper` spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebootWindow {
    pub lower_minute: u16,
    pub upper_minute: u16,
}

impl RebootWindow {
    /// Whether `minute` (after local midnight) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.lower_minute <= self.upper_minute {
            (self.lower_minute..self.upper_minute).contains(&minute)
        } else {
            minute >= self.lower_minute || minute < self.upper_minute
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte<T: Serialize>(v: T) -> Vec<u8> {
        postcard::to_stdvec(&v).unwrap()
    }

    #[test]
    fn action_codes_are_pinned() {
        assert_eq!(byte(Action::Switch), [0]);
        assert_eq!(byte(Action::Boot), [1]);
        assert_eq!(byte(Action::Test), [2]);
        assert_eq!(Action::ALL.len(), 3);
    }

    #[test]
    fn strategy_codes_are_pinned() {
        assert_eq!(byte(Strategy::Auto), [0]);
        assert_eq!(byte(Strategy::Direct), [1]);
        assert_eq!(byte(Strategy::Stepwise), [2]);
        assert_eq!(Strategy::ALL.len(), 3);
    }

    #[test]
    fn on_failure_codes_are_pinned() {
        assert_eq!(byte(OnFailure::Unwind), [0]);
        assert_eq!(byte(OnFailure::Hold), [1]);
        assert_eq!(OnFailure::ALL.len(), 2);
    }

    #[test]
    fn reboot_policy_codes_are_pinned() {
        assert_eq!(byte(RebootPolicy::Never), [0]);
        assert_eq!(byte(RebootPolicy::WhenNeeded), [1]);
        assert_eq!(RebootPolicy::ALL.len(), 2);
    }

    #[test]
    fn on_failed_units_codes_are_pinned() {
        assert_eq!(byte(OnFailedUnits::Continue), [0]);
        assert_eq!(byte(OnFailedUnits::Stop), [1]);
        assert_eq!(OnFailedUnits::ALL.len(), 2);
    }

    #[test]
    fn codes_and_names_round_trip() {
        for a in Action::ALL {
            let b = byte(*a);
            assert_eq!(postcard::from_bytes::<Action>(&b).unwrap(), *a);
            let j = serde_json::to_string(a).unwrap();
            assert_eq!(j, format!("\"{}\"", a.as_str()));
            assert_eq!(serde_json::from_str::<Action>(&j).unwrap(), *a);
        }
        assert_eq!(
            serde_json::to_string(&RebootPolicy::WhenNeeded).unwrap(),
            "\"when-needed\""
        );
        assert!(postcard::from_bytes::<Strategy>(&[3]).is_err());
    }

    #[test]
    fn a_window_may_span_midnight() {
        let night = RebootWindow {
            lower_minute: 23 * 60,
            upper_minute: 60,
        };
        assert!(night.contains(23 * 60 + 30) && night.contains(0) && !night.contains(60));
        let day = RebootWindow {
            lower_minute: 60,
            upper_minute: 120,
        };
        assert!(day.contains(60) && !day.contains(120) && !day.contains(0));
    }
}
