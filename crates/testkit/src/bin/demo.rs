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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cqrs_auth::{SigningKey, TokenIssuer};
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::{
    self as dir, OrganisationKind, directory_service_client::DirectoryServiceClient,
};
use cqrs_proto::identity::v1::{
    self as idp, AccountState, Realm, identity_service_client::IdentityServiceClient,
};
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_testkit::CapturedMail;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

/// Tried in order until the password policy accepts one (a password must not contain parts
/// of the account's User ID, which is only known once the account exists).
const PASSWORDS: [&str; 3] = ["Harbour#Lantern47", "Meadow!Copper83", "Quartz&Willow29"];
const MAIL_WAIT: Duration = Duration::from_secs(30);

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

type Error = Box<dyn std::error::Error + Send + Sync>;

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

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set (run through `make demo`)").into())
}

struct Loader {
    identity: IdentityServiceClient<Channel>,
    directory: DirectoryServiceClient<Channel>,
    token: String,
    mail_dir: PathBuf,
}

/// One row of the sign-in table.
struct Login {
    user_id: String,
    password: String,
    role: &'static str,
    organisation: String,
}

async fn run() -> Result<(), Error> {
    let key = SigningKey::from_env_value(&var("CQRS_TOKEN_SIGNING_KEY")?)?;
    let token = TokenIssuer::new(key, Duration::from_secs(900))
        .issue_service("demo", SystemClock.now())?
        .token;
    let connect = |url: String| async move {
        tonic::transport::Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    };
    let loader = Loader {
        identity: IdentityServiceClient::new(connect(var("IDENTITY_URL")?).await?),
        directory: DirectoryServiceClient::new(connect(var("DIRECTORY_URL")?).await?),
        token,
        mail_dir: PathBuf::from(var("MAILSINK_DIR")?),
    };
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
        let id = loader.organisation(org, parent).await?;
        println!("organisation {} {} ({:?})", org.ods, org.name, org.kind);
        ids.insert(org.ods, id);
    }
    for person in &PEOPLE {
        let account = loader.account(person).await?;
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

impl Loader {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = format!("Bearer {}", self.token).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    async fn lookup(&self, email: &str) -> Result<Option<idp::Account>, Error> {
        let request = self.request(idp::LookupAccountRequest {
            key: Some(idp::lookup_account_request::Key::Email(email.to_owned())),
        });
        match self.identity.clone().lookup_account(request).await {
            Ok(found) => Ok(found.into_inner().account),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(describe(&s).into()),
        }
    }

    async fn organisation(&self, org: &Org, parent: Option<String>) -> Result<String, Error> {
        let request = self.request(dir::CreateOrganisationRequest {
            request_id: keyed(org.ods).to_string(),
            kind: org.kind as i32,
            ods_code: org.ods.to_owned(),
            name: org.name.to_owned(),
            parent_id: parent.unwrap_or_default(),
            multi_level_approval: false,
        });
        let created = self
            .directory
            .clone()
            .create_organisation(request)
            .await
            .map_err(|s| describe(&s))?;
        created
            .into_inner()
            .organisation
            .map(|o| o.id)
            .ok_or_else(|| "CreateOrganisation answered without an organisation".into())
    }

    async fn account(&self, person: &Person) -> Result<idp::Account, Error> {
        let request = self.request(idp::CreateAccountRequest {
            request_id: keyed(person.email).to_string(),
            realm: Realm::National as i32,
            email: person.email.to_owned(),
            first_name: person.first.to_owned(),
            last_name: person.last.to_owned(),
        });
        match self.identity.clone().create_account(request).await {
            Ok(created) => created
                .into_inner()
                .account
                .ok_or_else(|| "CreateAccount answered without an account".into()),
            Err(s) if s.code() == Code::AlreadyExists => self
                .lookup(person.email)
                .await?
                .ok_or_else(|| format!("{} exists but cannot be found", person.email).into()),
            Err(s) => Err(describe(&s).into()),
        }
    }

    async fn grant(
        &self,
        account_id: &str,
        organisation_id: &str,
        role: Role,
    ) -> Result<(), Error> {
        let request = self.request(dir::GrantRoleRequest {
            request_id: keyed(&format!(
                "{account_id}/{organisation_id}/{}",
                role.as_str_name()
            ))
            .to_string(),
            account_id: account_id.to_owned(),
            organisation_id: organisation_id.to_owned(),
            role: role as i32,
        });
        self.directory
            .clone()
            .grant_role(request)
            .await
            .map_err(|s| describe(&s))?;
        Ok(())
    }

    /// Sets the first password of a PENDING_REGISTRATION account from its mailed link; an
    /// account already registered (an earlier run) is left alone. Its User ID and password.
    async fn register(
        &self,
        account: &idp::Account,
        wanted: Option<&str>,
    ) -> Result<(String, String), Error> {
        if account.state != AccountState::PendingRegistration as i32 {
            return Ok((account.user_id.clone(), "(as set earlier)".to_owned()));
        }
        let token = self.link_token(&account.email).await?;
        let candidates = wanted
            .map(|p| vec![p.to_owned()])
            .unwrap_or_else(|| PASSWORDS.iter().map(|p| (*p).to_owned()).collect());
        let mut last_refusal = None;
        for password in candidates {
            let request = idp::CompleteRegistrationRequest {
                token: token.clone(),
                new_password: password.clone(),
                ..Default::default()
            };
            match self.identity.clone().complete_registration(request).await {
                Ok(done) => {
                    let user_id = done
                        .into_inner()
                        .account
                        .map(|a| a.user_id)
                        .unwrap_or_default();
                    return Ok((user_id, password));
                }
                Err(s) if s.code() == Code::InvalidArgument => last_refusal = Some(describe(&s)),
                Err(s) => return Err(describe(&s).into()),
            }
        }
        Err(last_refusal
            .unwrap_or_else(|| "no password accepted".to_owned())
            .into())
    }

    /// The token of the newest mail to `address` that carries a link, waiting for the relay.
    async fn link_token(&self, address: &str) -> Result<String, Error> {
        let started = Instant::now();
        loop {
            if let Some(token) = newest_link_token(&self.mail_dir, address)? {
                return Ok(token);
            }
            if started.elapsed() > MAIL_WAIT {
                return Err(format!(
                    "no mail with a link for {address} in {} after {MAIL_WAIT:?}",
                    self.mail_dir.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The mail sink names files `<n>-<recipient>.eml`; the highest number is the newest.
fn newest_link_token(dir: &Path, address: &str) -> Result<Option<String>, Error> {
    let suffix = format!("-{address}.eml");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            let n = name.strip_suffix(&suffix)?.parse().ok()?;
            Some((n, path))
        })
        .collect();
    files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    for (_, path) in files {
        let raw = std::fs::read(&path)?;
        let mail = CapturedMail::parse(String::new(), vec![address.to_owned()], &raw);
        if let Some(token) = mail.link_token() {
            return Ok(Some(token));
        }
    }
    Ok(None)
}

/// A request id that is the same on every run for the same thing.
fn keyed(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("cqrs-demo/{name}").as_bytes())
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
