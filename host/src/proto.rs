//! The flyteidl2 protobuf types and tonic services, generated at build time
//! from `proto/` (see `build.rs`), with proto3-JSON serde implementations.
//!
//! Module paths mirror the protobuf packages, as the generated code refers to
//! sibling packages through `super::`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `flyteidl2.*` packages.
pub mod flyteidl2 {
    pub mod common {
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.common.rs"));
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.common.serde.rs"));
    }
    pub mod connector {
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.connector.rs"));
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.connector.serde.rs"));
    }
    pub mod core {
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.core.rs"));
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.core.serde.rs"));
    }
    pub mod logs {
        pub mod dataplane {
            include!(concat!(env!("OUT_DIR"), "/flyteidl2.logs.dataplane.rs"));
            include!(concat!(
                env!("OUT_DIR"),
                "/flyteidl2.logs.dataplane.serde.rs"
            ));
        }
    }
    pub mod task {
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.task.rs"));
        include!(concat!(env!("OUT_DIR"), "/flyteidl2.task.serde.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every file in `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flyteidl2_descriptor.bin"));

pub use flyteidl2::{connector, core, task};
