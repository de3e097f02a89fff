//! `cqrs-demo`: loads a small, realistic data set into a suite started by `make run` and
//! prints how to sign in (`make demo`).
//!
//! It finishes the service desk's registration from the link the mail sink captured, then
//! creates a region, two commissioning organisations and three practices, and one user in
//! every role, each registered from its own mailed link with a demo password. Everything is
//! keyed (request ids derived from the ODS code or address), so running it again changes
//! nothing and prints the same table.
//!
//! Environment (as `make run` sets it): `IDENTITY_URL`, `DIRECTORY_URL`, `MAILSINK_DIR`,
//! `CQRS_TOKEN_SIGNING_KEY` (to sign the service token the loader acts with),
//! `CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL`, and optionally `DEMO_PASSWORD`.

use std::process::ExitCode;

use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::OrganisationKind;
use cqrs_testkit::loader::{Error, Loader, var};

struct Org {
    ods: &'static str,
    name: &'static str,
    kind: OrganisationKind,
    parent: Option<&'static str>,
}

const ORGS: [Org; 6] = [
    Org {
        ods: "Y63",
        name: "North East and Yorkshire",
        kind: OrganisationKind::Region,
        parent: None,
    },
    Org {
        ods: "15F",
        name: "Leeds Commissioning",
        kind: OrganisationKind::CommissioningOrganisation,
        parent: Some("Y63"),
    },
    Org {
        ods: "03Q",
        name: "Vale of York Commissioning",
        kind: OrganisationKind::CommissioningOrganisation,
        parent: Some("Y63"),
    },
    Org {
        ods: "B86001",
        name: "Burley Park Medical Centre",
        kind: OrganisationKind::ServiceProvider,
        parent: Some("15F"),
    },
    Org {
        ods: "B86002",
        name: "Oakwood Lane Surgery",
        kind: OrganisationKind::ServiceProvider,
        parent: Some("15F"),
    },
    Org {
        ods: "B82001",
        name: "Haxby Group Practice",
        kind: OrganisationKind::ServiceProvider,
        parent: Some("03Q"),
    },
];

struct Person {
    email: &'static str,
    first: &'static str,
    last: &'static str,
    role: Role,
    ods: &'static str,
}

const PEOPLE: [Person; 6] = [
    Person {
        email: "alex.turner@leeds.nhs.uk",
        first: "Alex",
        last: "Turner",
        role: Role::CommissioningAccountAdministrator,
        ods: "15F",
    },
    Person {
        email: "priya.shah@leeds.nhs.uk",
        first: "Priya",
        last: "Shah",
        role: Role::CommissioningApprover,
        ods: "15F",
    },
    Person {
        email: "owen.hughes@leeds.nhs.uk",
        first: "Owen",
        last: "Hughes",
        role: Role::CommissioningUser,
        ods: "15F",
    },
    Person {
        email: "fatima.khan@leeds.nhs.uk",
        first: "Fatima",
        last: "Khan",
        role: Role::CommissioningFinance,
        ods: "15F",
    },
    Person {
        email: "grace.lee@burleypark.nhs.uk",
        first: "Grace",
        last: "Lee",
        role: Role::PracticeManager,
        ods: "B86001",
    },
    Person {
        email: "sam.patel@burleypark.nhs.uk",
        first: "Sam",
        last: "Patel",
        role: Role::PracticeUser,
        ods: "B86001",
    },
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cqrs-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One row of the sign-in table.
struct Login {
    user_id: String,
    password: String,
    role: &'static str,
    organisation: String,
}

async fn run() -> Result<(), Error> {
    let loader = Loader::from_env("demo").await?;
    let password = std::env::var("DEMO_PASSWORD").ok();

    let mut logins = Vec::new();
    let desk_email = var("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL")?;
    let desk = loader
        .lookup(&desk_email)
        .await?
        .ok_or("the bootstrap service-desk account does not exist yet: start with `make run`")?;
    let (user_id, desk_password) = loader.register(&desk, password.as_deref()).await?;
    logins.push(Login {
        user_id,
        password: desk_password,
        role: "SERVICE_DESK",
        organisation: "service desk".to_owned(),
    });

    let mut ids = std::collections::HashMap::new();
    for org in &ORGS {
        let parent = org.parent.and_then(|p| ids.get(p).cloned());
        let id = loader
            .organisation(org.kind, org.ods, org.name, parent)
            .await?;
        println!("organisation {} {} ({:?})", org.ods, org.name, org.kind);
        ids.insert(org.ods, id);
    }
    for person in &PEOPLE {
        let account = loader
            .account(person.email, person.first, person.last)
            .await?;
        let organisation = ids
            .get(person.ods)
            .cloned()
            .ok_or_else(|| format!("no organisation {}", person.ods))?;
        loader
            .grant(&account.id, &organisation, person.role)
            .await?;
        let (user_id, password) = loader.register(&account, password.as_deref()).await?;
        logins.push(Login {
            user_id,
            password,
            role: person.role.as_str_name().trim_start_matches("ROLE_"),
            organisation: person.ods.to_owned(),
        });
    }

    println!("\nSign in with a User ID and its password (identity SignIn, then SelectRole):");
    println!(
        "  {:<8} {:<20} {:<36} organisation",
        "user id", "password", "role"
    );
    for login in &logins {
        println!(
            "  {:<8} {:<20} {:<36} {}",
            login.user_id, login.password, login.role, login.organisation
        );
    }
    Ok(())
}
