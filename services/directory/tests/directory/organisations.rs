//! Organisations: kinds and parents, ODS codes, keyed creates, search, listing, approval level.

use std::collections::HashSet;

use cqrs_auth::Role;
use cqrs_proto::directory::v1::{self as pb, OrganisationKind as K};
use cqrs_testkit::{assert_reason, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::{DirectoryCalls, Tree, directory_alone};

fn id(o: &pb::Organisation) -> Uuid {
    Uuid::parse_str(&o.id).unwrap()
}

#[tokio::test]
async fn kinds_nest_and_parents_are_checked() {
    let h = directory_alone().await;
    let region = h
        .create_org(K::Region, "y56", " North ", None)
        .await
        .unwrap();
    assert_eq!(region.ods_code, "Y56");
    assert_eq!(region.name, "North");
    assert_eq!(region.parent_id, "");
    assert_eq!(region.kind, K::Region as i32);
    assert!(!region.multi_level_approval);
    let ccg = h
        .create_org(
            K::CommissioningOrganisation,
            "15N",
            "CCG",
            Some(id(&region)),
        )
        .await
        .unwrap();
    assert_eq!(ccg.parent_id, region.id);
    let practice = h
        .create_org(K::ServiceProvider, "A81001", "Surgery", Some(id(&ccg)))
        .await
        .unwrap();
    assert_eq!(practice.parent_id, ccg.id);
    let desk = h
        .create_org(K::ServiceDesk, "DSK", "Desk", None)
        .await
        .unwrap();
    assert_eq!(desk.parent_id, "");

    // Wrong parent kinds.
    for (kind, ods, parent) in [
        (K::ServiceProvider, "A81009", id(&region)),
        (K::ServiceProvider, "A81008", id(&practice)),
        (K::CommissioningOrganisation, "15X", id(&ccg)),
        (K::CommissioningOrganisation, "15Y", id(&desk)),
    ] {
        let err = h
            .create_org(kind, ods, "X", Some(parent))
            .await
            .unwrap_err();
        assert_reason(&err, Code::FailedPrecondition, "PARENT_KIND_MISMATCH");
    }
    // Missing parent where one is required; a parent where none is allowed.
    for (kind, parent) in [
        (K::ServiceProvider, None),
        (K::CommissioningOrganisation, None),
        (K::Region, Some(id(&region))),
        (K::ServiceDesk, Some(id(&region))),
    ] {
        let err = h.create_org(kind, "ZZ1", "X", parent).await.unwrap_err();
        assert_reason(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&err), ["parent_id"], "{kind:?}");
    }
    // An unknown parent.
    let err = h
        .create_org(K::ServiceProvider, "ZZ2", "X", Some(Uuid::new_v4()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(h.count("organisations").await, 4);

    // Only providers have an approval level.
    let err = h
        .directory()
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                request_id: Uuid::new_v4().to_string(),
                kind: K::Region as i32,
                ods_code: "Y99".into(),
                name: "R".into(),
                parent_id: String::new(),
                multi_level_approval: true,
            },
            &h.svc(),
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["multi_level_approval"]);
}

#[tokio::test]
async fn ods_codes_are_validated_and_unique() {
    let h = directory_alone().await;
    for bad in ["", "AB", "A810011", "123456", "A8-01", "ÄB1"] {
        let err = h.create_org(K::Region, bad, "R", None).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["ods_code"], "{bad:?}");
    }
    h.create_org(K::Region, "Y56", "North", None).await.unwrap();
    // Case and spaces do not make a different code.
    let err = h
        .create_org(K::Region, " y56 ", "Other", None)
        .await
        .unwrap_err();
    assert_reason(&err, Code::AlreadyExists, "ODS_CODE_TAKEN");
    assert_eq!(h.count("organisations").await, 1);
    assert_eq!(h.count("request_keys").await, 1);
}

#[tokio::test]
async fn bad_input_lists_every_field_and_changes_nothing() {
    let h = directory_alone().await;
    let err = h
        .directory()
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                request_id: "not-a-uuid".into(),
                kind: 42,
                ods_code: "!".into(),
                name: "x".repeat(201),
                parent_id: String::new(),
                multi_level_approval: false,
            },
            &h.svc(),
        ))
        .await
        .unwrap_err();
    assert_reason(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&err),
        ["request_id", "kind", "ods_code", "name"]
    );
    let err = h
        .directory()
        .create_organisation(with_token(
            pb::CreateOrganisationRequest::default(),
            &h.svc(),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["request_id", "kind", "ods_code", "name"]
    );
    for table in ["organisations", "request_keys", "audit_events"] {
        assert_eq!(h.count(table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn keyed_creates_answer_retries_and_refuse_reuse() {
    let h = directory_alone().await;
    let key = Uuid::new_v4().to_string();
    let first = h
        .create_org_as(&h.svc(), &key, K::Region, "Y56", "North", None)
        .await
        .unwrap();
    let again = h
        .create_org_as(&h.svc(), &key, K::Region, "y56", " North", None)
        .await
        .unwrap();
    assert_eq!(again, first);
    let err = h
        .create_org_as(&h.svc(), &key, K::Region, "Y57", "North", None)
        .await
        .unwrap_err();
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    // The same id on another keyed RPC is refused too.
    let err = h
        .grant_keyed(&key, Uuid::new_v4(), id(&first), Role::CommissioningUser)
        .await
        .unwrap_err();
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    assert_eq!(h.count("organisations").await, 1);
    assert_eq!(h.audit_rows("CREATE_ORGANISATION").await.len(), 1);

    // Parallel retries: one organisation, every caller gets it.
    let key = Uuid::new_v4().to_string();
    let calls = (0..8).map(|_| {
        let (h, key) = (&h, key.clone());
        async move {
            h.create_org_as(&h.svc(), &key, K::Region, "Y60", "South", None)
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let ids: HashSet<String> = answers.into_iter().map(|a| a.unwrap().id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(h.count("organisations").await, 2);
    assert_eq!(h.audit_rows("CREATE_ORGANISATION").await.len(), 2);
}

#[tokio::test]
async fn only_the_service_desk_or_internal_creates() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let (_, desk) = h.member(tree.desk, Role::ServiceDesk).await;
    let org = h
        .create_org_as(
            &desk,
            &Uuid::new_v4().to_string(),
            K::ServiceProvider,
            "A81099",
            "New Surgery",
            Some(tree.c1),
        )
        .await
        .unwrap();
    assert_eq!(org.parent_id, tree.c1.to_string());
    // A desk user gets NOT_FOUND for a missing parent: its scope is the whole suite.
    let err = h
        .create_org_as(
            &desk,
            &Uuid::new_v4().to_string(),
            K::ServiceProvider,
            "A81098",
            "X",
            Some(Uuid::new_v4()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for role in Role::ALL.into_iter().filter(|r| *r != Role::ServiceDesk) {
        let org = if matches!(role, Role::PracticeManager | Role::PracticeUser) {
            tree.p1
        } else {
            tree.r1
        };
        let (_, token) = h.member(org, role).await;
        let err = h
            .create_org_as(
                &token,
                &Uuid::new_v4().to_string(),
                K::ServiceProvider,
                "A81097",
                "X",
                Some(tree.c1),
            )
            .await
            .unwrap_err();
        assert_reason(&err, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
    }
    // A user without an active grant, and no token at all.
    let token = h.user(Uuid::new_v4(), None).await;
    let err = h
        .create_org_as(
            &token,
            &Uuid::new_v4().to_string(),
            K::Region,
            "Y77",
            "R",
            None,
        )
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "NO_ACTIVE_GRANT");
    let err = h
        .directory()
        .create_organisation(pb::CreateOrganisationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Refusals are audited, changes are not made.
    let denied: Vec<_> = h
        .audit_rows("CREATE_ORGANISATION")
        .await
        .into_iter()
        .filter(|(outcome, _, _)| outcome == "denied")
        .collect();
    assert_eq!(denied.len(), 7);
    assert_eq!(h.count("organisations").await, 11);
}

#[tokio::test]
async fn search_by_name_prefix_and_code_with_paging() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let search = |query: &str, kind: K, page_size: i32, token: &str| {
        let req = pb::SearchOrganisationsRequest {
            query: query.into(),
            kind: kind as i32,
            page_size,
            page_token: token.into(),
        };
        let mut client = h.directory();
        async move { client.search_organisations(req).await }
    };
    // Public: no token needed. Case-insensitive prefix, name order.
    let found = search("riVer", K::Unspecified, 0, "")
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = found
        .organisations
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, ["Riverside CCG", "Riverside Surgery"]);
    assert_eq!(found.next_page_token, "");
    let found = search("riverside s", K::Unspecified, 0, "")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.organisations.len(), 1);
    // Kind filter.
    let found = search("river", K::ServiceProvider, 0, "")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.organisations[0].id, tree.p1.to_string());
    assert_eq!(found.organisations.len(), 1);
    // Exact ODS code, any case.
    let found = search("a81002", K::Unspecified, 0, "")
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = found
        .organisations
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, ["Hill Practice"]);
    // Paging, one at a time.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = search("so", K::Unspecified, 1, &token)
            .await
            .unwrap()
            .into_inner();
        assert!(page.organisations.len() <= 1);
        names.extend(page.organisations.into_iter().map(|o| o.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(names, ["South Region"]);
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = search("mo", K::Unspecified, 1, &token)
            .await
            .unwrap()
            .into_inner();
        names.extend(page.organisations.into_iter().map(|o| o.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(names, ["Moor CCG", "Moor Surgery"]);
    // A query that is both a name prefix and an ODS code: one answer in name order, each
    // organisation once, in one page or page by page.
    h.create_org(K::ServiceProvider, "MOO", "Aardvark Surgery", Some(tree.c2))
        .await
        .unwrap();
    h.create_org(
        K::ServiceProvider,
        "MOOR",
        "Moorland Practice",
        Some(tree.c2),
    )
    .await
    .unwrap();
    for (query, kind, want) in [
        (
            "moo",
            K::Unspecified,
            &[
                "Aardvark Surgery",
                "Moor CCG",
                "Moor Surgery",
                "Moorland Practice",
            ][..],
        ),
        (
            "moor",
            K::Unspecified,
            &["Moor CCG", "Moor Surgery", "Moorland Practice"][..],
        ),
        (
            "moo",
            K::ServiceProvider,
            &["Aardvark Surgery", "Moor Surgery", "Moorland Practice"][..],
        ),
    ] {
        let found = search(query, kind, 0, "").await.unwrap().into_inner();
        let names: Vec<_> = found.organisations.into_iter().map(|o| o.name).collect();
        assert_eq!(names, want, "{query} {kind:?}");
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = search(query, kind, 1, &token).await.unwrap().into_inner();
            names.extend(page.organisations.into_iter().map(|o| o.name));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(names, want, "{query} {kind:?} page by page");
    }
    // Bad input.
    let err = search("x", K::Unspecified, 101, "junk!").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["query", "page_size", "page_token"]);
    let none = search("xx", K::Unspecified, 0, "")
        .await
        .unwrap()
        .into_inner();
    assert!(none.organisations.is_empty());
}

#[tokio::test]
async fn get_and_list_organisations() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let token = h.user(Uuid::new_v4(), None).await;
    let got = h
        .directory()
        .get_organisation(with_token(
            pb::GetOrganisationRequest {
                organisation_id: tree.p1.to_string(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(got.ods_code, "A81001");
    assert_eq!(got.parent_id, tree.c1.to_string());
    let err = h
        .directory()
        .get_organisation(with_token(
            pb::GetOrganisationRequest {
                organisation_id: Uuid::new_v4().to_string(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .directory()
        .get_organisation(pb::GetOrganisationRequest {
            organisation_id: tree.p1.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let list = |parent: Option<Uuid>, page_size: i32, page_token: String| {
        let req = with_token(
            pb::ListOrganisationsRequest {
                parent_id: parent.map(|p| p.to_string()).unwrap_or_default(),
                page_size,
                page_token,
            },
            &token,
        );
        let mut client = h.directory();
        async move { client.list_organisations(req).await.map(|r| r.into_inner()) }
    };
    let roots = list(None, 0, String::new()).await.unwrap();
    let names: Vec<_> = roots
        .organisations
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["National Service Desk", "North Region", "South Region"]
    );
    let first = list(Some(tree.c1), 1, String::new()).await.unwrap();
    assert_eq!(first.organisations[0].name, "Hill Practice");
    let second = list(Some(tree.c1), 1, first.next_page_token).await.unwrap();
    assert_eq!(second.organisations[0].name, "Riverside Surgery");
    assert_eq!(second.next_page_token, "");
    let err = list(Some(tree.c1), 0, "garbage".into()).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn approval_level_on_providers_only() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let (_, approver) = h.member(tree.c1, Role::CommissioningApprover).await;
    let set = |token: String, org: Uuid, on: bool| {
        let req = with_token(
            pb::SetApprovalLevelRequest {
                organisation_id: org.to_string(),
                multi_level_approval: on,
            },
            &token,
        );
        let mut client = h.directory();
        async move {
            client
                .set_approval_level(req)
                .await
                .map(|r| r.into_inner().organisation.unwrap())
        }
    };
    let org = set(approver.clone(), tree.p1, true).await.unwrap();
    assert!(org.multi_level_approval);
    // Setting the same value again changes and audits nothing.
    set(approver.clone(), tree.p1, true).await.unwrap();
    assert_eq!(
        h.audit_rows("SET_APPROVAL_LEVEL")
            .await
            .iter()
            .filter(|(o, _, _)| o == "success")
            .count(),
        1
    );
    let err = set(approver.clone(), tree.c1, true).await.unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "NOT_A_SERVICE_PROVIDER");
    // Out of scope, and the administrator role.
    let err = set(approver.clone(), tree.p3, true).await.unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "NO_GRANT_IN_SCOPE");
    let (_, admin) = h
        .member(tree.c1, Role::CommissioningAccountAdministrator)
        .await;
    let err = set(admin, tree.p1, false).await.unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
    let org = set(h.svc(), tree.p1, false).await.unwrap();
    assert!(!org.multi_level_approval);
}

#[tokio::test]
async fn audit_trail_for_the_desk_and_internal_only() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let list = |token: String, action: &str| {
        let req = with_token(
            pb::ListAuditEventsRequest {
                action: action.into(),
                page_size: 3,
                ..Default::default()
            },
            &token,
        );
        let mut client = h.directory();
        async move { client.list_audit_events(req).await.map(|r| r.into_inner()) }
    };
    let page = list(h.svc(), "CREATE_ORGANISATION").await.unwrap();
    assert_eq!(page.audit_events.len(), 3);
    assert!(!page.next_page_token.is_empty());
    let event = &page.audit_events[0];
    assert_eq!(
        event.actor_kind,
        cqrs_proto::common::v1::ActorKind::Service as i32
    );
    assert_eq!(event.actor_id, "access");
    assert_eq!(
        event.outcome,
        cqrs_proto::common::v1::AuditOutcome::Success as i32
    );
    assert_eq!(event.target_type, "organisation");
    let (_, desk) = h.member(tree.desk, Role::ServiceDesk).await;
    assert!(list(desk, "").await.is_ok());
    // The account administrator holds ViewAuditEvents only over its subtree, and the trail
    // is not split by organisation.
    let (_, admin) = h
        .member(tree.r1, Role::CommissioningAccountAdministrator)
        .await;
    let err = list(admin, "").await.unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "NO_GRANT_IN_SCOPE");
    let (_, user) = h.member(tree.r1, Role::CommissioningUser).await;
    let err = list(user, "").await.unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
}
