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

/// Every service's audit chain and the checkpoints it holds.
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("cqrs.audit.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("cqrs.identity.v1");

        /// A finished second step is a sign-in like one without a second factor, so clients
        /// handle both answers with one code path.
        impl From<CompleteSignInResponse> for SignInResponse {
            fn from(done: CompleteSignInResponse) -> Self {
                SignInResponse {
                    session_token: done.session_token,
                    access_token: done.access_token,
                    expires_at: done.expires_at,
                    account: done.account,
                    grants: done.grants,
                    session: done.session,
                    ..SignInResponse::default()
                }
            }
        }
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
