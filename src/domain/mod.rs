//! Plain domain types shared by every layer: roles, statuses, resource slots, keys, and what
//! a kernel is created from ([`spec`]).
//!
//! Nothing here knows about HTTP, SQL or etcd; those layers convert to and from these types
//! at their edges.

mod enums;
pub mod keys;
pub mod slots;
pub mod spec;

pub use enums::{
    AgentStatus, DefaultForUnspecified, KernelStatus, ManagerStatus, UnknownVariant, UserRole,
    VFolderPermission,
};
pub use keys::{generate_keypair, AccessKey};
pub use slots::{ResourceSlots, SlotError};
pub use spec::{
    ImageRegistry, KernelCreation, KernelInfo, KernelSpec, MountSpec, RegistryCredentials,
    ServicePort, SessionSpec,
};

/// The API version this server speaks natively.
pub const LATEST_API_VERSION: &str = "v4.20190315";
/// The manager release string reported by `GET /` (the original's at the reference commit).
pub const MANAGER_VERSION: &str = "19.06.0a1";

/// The default domain and group every installation has; the group id is the one the
/// original's example fixture uses, so that fixture loads on top of a bootstrapped database.
pub const DEFAULT_DOMAIN: &str = "default";
pub const DEFAULT_GROUP: &str = "default";
pub const DEFAULT_GROUP_ID: &str = "2de2b969-1d04-48a6-af16-0bc8adb3c831";
pub const DEFAULT_RESOURCE_POLICY: &str = "default";
