//! Set-up shared by the journeys, built only through the public gRPC APIs: organisations,
//! people onboarded by invitation or by self-registration, and [`World`] — "a suite with a
//! region, a CCG, two practices and a registered administrator".

use cqrs_proto::access::v1::{self as access_pb, submit_registration_request};
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::{self as dir_pb, OrganisationKind};
use cqrs_testkit::with_token;
use tonic::Status;
use uuid::Uuid;

use crate::suite::{SignedIn, Suite, subject};

/// A password every profile accepts that contains no part of the User IDs of the people
/// below (their initials are not in it, and it has no run of three digits).
pub const PASSWORD: &str = "Velvet#Harbor42";
/// Another such password, for resets and changes.
pub const NEW_PASSWORD: &str = "Copper!Meadow73";

/// An organisation as the journeys refer to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub ods_code: String,
    pub name: String,
}

impl From<dir_pb::Organisation> for Org {
    fn from(org: dir_pb::Organisation) -> Self {
        Org {
            id: org.id,
            ods_code: org.ods_code,
            name: org.name,
        }
    }
}

/// The organisations of a [`World`]: a region, a commissioning organisation (CCG) and two of
/// its practices.
#[derive(Clone, Debug)]
pub struct Tree {
    pub region: Org,
    pub ccg: Org,
    pub practice: Org,
    pub second_practice: Org,
}

/// A registered person (NATIONAL account: signs in with `user_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub account_id: String,
    pub user_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password: String,
}

impl Suite {
    /// CreateOrganisation with `token`.
    pub async fn create_organisation(
        &self,
        token: &str,
        kind: OrganisationKind,
        ods_code: &str,
        name: &str,
        parent: Option<&Org>,
    ) -> Result<Org, Status> {
        self.directory()
            .create_organisation(with_token(
                dir_pb::CreateOrganisationRequest {
                    request_id: Uuid::new_v4().to_string(),
                    kind: kind as i32,
                    ods_code: ods_code.into(),
                    name: name.into(),
                    parent_id: parent.map(|p| p.id.clone()).unwrap_or_default(),
                    multi_level_approval: false,
                },
                token,
            ))
            .await
            .map(|r| {
                r.into_inner()
                    .organisation
                    .expect("CreateOrganisation answers the organisation")
                    .into()
            })
    }

    /// The service desk (`desk_token`) creates a region, a CCG and two practices in it.
    pub async fn create_tree(&self, desk_token: &str) -> Tree {
        let create = |kind, ods, name, parent: Option<Org>| async move {
            self.create_organisation(desk_token, kind, ods, name, parent.as_ref())
                .await
                .unwrap_or_else(|s| panic!("CreateOrganisation {ods}: {s:?}"))
        };
        let region = create(OrganisationKind::Region, "Y56", "North Region", None).await;
        let ccg = create(
            OrganisationKind::CommissioningOrganisation,
            "15N",
            "Riverside CCG",
            Some(region.clone()),
        )
        .await;
        let practice = create(
            OrganisationKind::ServiceProvider,
            "A81001",
            "Bridge Street Surgery",
            Some(ccg.clone()),
        )
        .await;
        let second_practice = create(
            OrganisationKind::ServiceProvider,
            "A81002",
            "Mill Lane Practice",
            Some(ccg.clone()),
        )
        .await;
        Tree {
            region,
            ccg,
            practice,
            second_practice,
        }
    }

    /// CreateInvitation with `token`.
    pub async fn invite(
        &self,
        token: &str,
        email: &str,
        (first_name, last_name): (&str, &str),
        organisation: &Org,
        role: Role,
    ) -> Result<access_pb::Invitation, Status> {
        self.access()
            .create_invitation(with_token(
                access_pb::CreateInvitationRequest {
                    request_id: Uuid::new_v4().to_string(),
                    email: email.into(),
                    first_name: first_name.into(),
                    last_name: last_name.into(),
                    organisation_id: organisation.id.clone(),
                    role: role as i32,
                },
                token,
            ))
            .await
            .map(|r| {
                r.into_inner()
                    .invitation
                    .expect("CreateInvitation answers the invitation")
            })
    }

    /// AcceptInvitation (public) with the link token, keeping the inviter's names.
    pub async fn accept_invitation(&self, token: &str) -> Result<access_pb::Invitation, Status> {
        self.access()
            .accept_invitation(access_pb::AcceptInvitationRequest {
                token: token.into(),
                first_name: String::new(),
                last_name: String::new(),
            })
            .await
            .map(|r| {
                r.into_inner()
                    .invitation
                    .expect("AcceptInvitation answers the invitation")
            })
    }

    /// The person at `email` sets `password` from their newest registration mail.
    pub async fn register_from_mail(&self, email: &str, password: &str) -> Person {
        let token = self.link_token(email, subject::REGISTRATION_LINK).await;
        let account = self
            .complete_registration(&token, password)
            .await
            .unwrap_or_else(|s| panic!("{email} cannot complete the registration: {s:?}"));
        Person {
            account_id: account.id,
            user_id: account.user_id,
            email: email.into(),
            first_name: account.first_name,
            last_name: account.last_name,
            password: password.into(),
        }
    }

    /// `inviter_token` invites `email` to (`organisation`, `role`); the invitee accepts from
    /// the invitation mail and registers with `password` from the registration mail.
    pub async fn onboard_by_invitation(
        &self,
        inviter_token: &str,
        email: &str,
        names: (&str, &str),
        organisation: &Org,
        role: Role,
        password: &str,
    ) -> Person {
        self.invite(inviter_token, email, names, organisation, role)
            .await
            .unwrap_or_else(|s| panic!("inviting {email}: {s:?}"));
        let link = self.link_token(email, subject::INVITATION).await;
        self.accept_invitation(&link)
            .await
            .unwrap_or_else(|s| panic!("{email} cannot accept the invitation: {s:?}"));
        self.register_from_mail(email, password).await
    }

    /// SubmitRegistration (public) for (`ods_code`, `role`).
    pub async fn submit_registration(
        &self,
        email: &str,
        (first_name, last_name): (&str, &str),
        ods_code: &str,
        role: Role,
    ) -> Result<access_pb::Registration, Status> {
        self.access()
            .submit_registration(access_pb::SubmitRegistrationRequest {
                request_id: Uuid::new_v4().to_string(),
                email: email.into(),
                organisation: Some(submit_registration_request::Organisation::OdsCode(
                    ods_code.into(),
                )),
                role: role as i32,
                first_name: first_name.into(),
                last_name: last_name.into(),
            })
            .await
            .map(|r| {
                r.into_inner()
                    .registration
                    .expect("SubmitRegistration answers the registration")
            })
    }

    /// ReviewRegistration with `token`.
    pub async fn review_registration(
        &self,
        token: &str,
        registration_id: &str,
        decision: access_pb::Decision,
        reason: &str,
    ) -> Result<access_pb::Registration, Status> {
        self.access()
            .review_registration(with_token(
                access_pb::ReviewRegistrationRequest {
                    registration_id: registration_id.into(),
                    decision: decision as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| {
                r.into_inner()
                    .registration
                    .expect("ReviewRegistration answers the registration")
            })
    }

    /// `email` self-registers for (`ods_code`, `role`), `reviewer_token` approves, and the
    /// applicant registers with `password` from the mail.
    pub async fn onboard_by_registration(
        &self,
        reviewer_token: &str,
        email: &str,
        names: (&str, &str),
        ods_code: &str,
        role: Role,
        password: &str,
    ) -> Person {
        let registration = self
            .submit_registration(email, names, ods_code, role)
            .await
            .unwrap_or_else(|s| panic!("{email} cannot submit a registration: {s:?}"));
        self.review_registration(
            reviewer_token,
            &registration.id,
            access_pb::Decision::Approve,
            "",
        )
        .await
        .unwrap_or_else(|s| panic!("approving {email}'s registration: {s:?}"));
        self.register_from_mail(email, password).await
    }

    /// RequestAccess with `token`.
    pub async fn request_access(
        &self,
        token: &str,
        organisation: &Org,
        role: Role,
        reason: &str,
    ) -> Result<access_pb::AccessRequest, Status> {
        self.access()
            .request_access(with_token(
                access_pb::RequestAccessRequest {
                    request_id: Uuid::new_v4().to_string(),
                    organisation_id: organisation.id.clone(),
                    role: role as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| {
                r.into_inner()
                    .access_request
                    .expect("RequestAccess answers the request")
            })
    }

    /// ReviewAccessRequest with `token`.
    pub async fn review_access_request(
        &self,
        token: &str,
        access_request_id: &str,
        decision: access_pb::Decision,
        reason: &str,
    ) -> Result<access_pb::AccessRequest, Status> {
        self.access()
            .review_access_request(with_token(
                access_pb::ReviewAccessRequestRequest {
                    access_request_id: access_request_id.into(),
                    decision: decision as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| {
                r.into_inner()
                    .access_request
                    .expect("ReviewAccessRequest answers the request")
            })
    }

    /// `person` signs in and selects (`organisation`, `role`).
    pub async fn sign_in_person(
        &self,
        person: &Person,
        organisation: &Org,
        role: Role,
    ) -> SignedIn {
        self.sign_in_as(&person.user_id, &person.password, &organisation.id, role)
            .await
    }
}

/// A suite with a registered service desk (signed in), a region, a CCG with two practices,
/// and a Commissioning Account Administrator of the CCG — invited by the desk, registered
/// from the mails and signed in through that role.
#[derive(Debug)]
pub struct World {
    pub suite: Suite,
    pub desk: SignedIn,
    pub tree: Tree,
    pub admin: Person,
    pub admin_session: SignedIn,
}

/// Addresses and names of the people the journeys use. Initials (the letters of a User ID)
/// never occur in [`PASSWORD`] or [`NEW_PASSWORD`].
pub mod people {
    pub const ADMIN: (&str, (&str, &str)) = ("alex.turner@riverside.nhs.uk", ("Alex", "Turner"));
    pub const APPROVER: (&str, (&str, &str)) = ("priya.shah@riverside.nhs.uk", ("Priya", "Shah"));
    pub const PRACTICE_USER: (&str, (&str, &str)) =
        ("sam.patel@bridgestreet.nhs.uk", ("Sam", "Patel"));
    pub const OTHER_ADMIN: (&str, (&str, &str)) = ("grace.lee@hillside.nhs.uk", ("Grace", "Lee"));
}

impl World {
    /// See [`World`].
    pub async fn start() -> World {
        Self::over(Suite::start_registered().await).await
    }

    /// The same world with two replicas of every service ([`crate::SuiteBuilder::replicated`]).
    pub async fn start_replicated() -> World {
        let mut suite = Suite::standard().replicated().start().await;
        suite.register_desk().await;
        Self::over(suite).await
    }

    async fn over(suite: Suite) -> World {
        let desk = suite.desk_sign_in().await;
        let tree = suite.create_tree(&desk.token).await;
        let (email, names) = people::ADMIN;
        let admin = suite
            .onboard_by_invitation(
                &desk.token,
                email,
                names,
                &tree.ccg,
                Role::CommissioningAccountAdministrator,
                PASSWORD,
            )
            .await;
        let admin_session = suite
            .sign_in_person(&admin, &tree.ccg, Role::CommissioningAccountAdministrator)
            .await;
        World {
            suite,
            desk,
            tree,
            admin,
            admin_session,
        }
    }

    /// A practice user of [`Tree::practice`]: self-registered with the practice's ODS code,
    /// approved by the administrator, registered from the mail.
    pub async fn practice_user(&self) -> Person {
        let (email, names) = people::PRACTICE_USER;
        self.suite
            .onboard_by_registration(
                &self.admin_session.token,
                email,
                names,
                &self.tree.practice.ods_code,
                Role::PracticeUser,
                PASSWORD,
            )
            .await
    }

    /// A Commissioning Approver of the CCG, invited by the service desk, signed in through
    /// that role.
    pub async fn approver(&self) -> (Person, SignedIn) {
        let (email, names) = people::APPROVER;
        let approver = self
            .suite
            .onboard_by_invitation(
                &self.desk.token,
                email,
                names,
                &self.tree.ccg,
                Role::CommissioningApprover,
                PASSWORD,
            )
            .await;
        let session = self
            .suite
            .sign_in_person(&approver, &self.tree.ccg, Role::CommissioningApprover)
            .await;
        (approver, session)
    }

    /// A second CCG in the region with one practice, created by the service desk.
    pub async fn other_ccg(&self) -> (Org, Org) {
        let ccg = self
            .suite
            .create_organisation(
                &self.desk.token,
                OrganisationKind::CommissioningOrganisation,
                "QWO",
                "Hillside CCG",
                Some(&self.tree.region),
            )
            .await
            .unwrap_or_else(|s| panic!("CreateOrganisation QWO: {s:?}"));
        let practice = self
            .suite
            .create_organisation(
                &self.desk.token,
                OrganisationKind::ServiceProvider,
                "B82001",
                "Haxby Group Practice",
                Some(&ccg),
            )
            .await
            .unwrap_or_else(|s| panic!("CreateOrganisation B82001: {s:?}"));
        (ccg, practice)
    }
}
