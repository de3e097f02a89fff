//! Generated code for the cqrs v1 gRPC contracts, plus the encoded descriptor set that
//! servers hand to tonic-reflection.

/// Every cqrs v1 file and its imports, encoded as a `google.protobuf.FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cqrs_descriptor.bin"));

/// Types every service's contract shares: roles and the audit trail.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("cqrs.common.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("cqrs.identity.v1");
    }
}

pub mod directory {
    pub mod v1 {
        tonic::include_proto!("cqrs.directory.v1");
    }
}

pub mod access {
    pub mod v1 {
        tonic::include_proto!("cqrs.access.v1");
    }
}

pub mod notifications {
    pub mod v1 {
        tonic::include_proto!("cqrs.notifications.v1");
    }
}

/// Benchmark baseline only; not part of any deployed service.
pub mod testing {
    pub mod v1 {
        tonic::include_proto!("cqrs.testing.v1");
    }
}
