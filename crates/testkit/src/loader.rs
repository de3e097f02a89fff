//! Loading people and organisations into a running suite through its public RPCs, acting
//! with a service token: what `cqrs-demo` and `cqrs-soak` share. Registration links are read
//! from the mail sink's directory (`cqrs-mailsink`), as a person would read their mail.

use std::path::{Path, PathBuf};
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
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::CapturedMail;

/// Errors of the loading tools: printed, never matched on.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Tried in order until the password policy accepts one (a password must not contain parts
/// of the account's User ID, which is only known once the account exists).
pub const PASSWORDS: [&str; 3] = ["Harbour#Lantern47", "Meadow!Copper83", "Quartz&Willow29"];
const MAIL_WAIT: Duration = Duration::from_secs(60);

/// The value of environment variable `name`, which must be set.
pub fn var(name: &str) -> Result<String, Error> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set (run through `make run`)").into())
}

/// A channel to `url`, connected now.
pub async fn connect(url: String) -> Result<Channel, Error> {
    Ok(tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Identity and directory clients acting as service `client` (a token signed with
/// `CQRS_TOKEN_SIGNING_KEY`), and the mail sink's directory (`MAILSINK_DIR`).
pub struct Loader {
    pub identity: IdentityServiceClient<Channel>,
    pub directory: DirectoryServiceClient<Channel>,
    pub token: String,
    pub mail_dir: PathBuf,
    /// Request ids are derived from names under this prefix, so a rerun changes nothing.
    prefix: String,
}

impl Loader {
    /// From `IDENTITY_URL`, `DIRECTORY_URL`, `MAILSINK_DIR` and `CQRS_TOKEN_SIGNING_KEY`.
    pub async fn from_env(client: &str) -> Result<Loader, Error> {
        let key = SigningKey::from_env_value(&var("CQRS_TOKEN_SIGNING_KEY")?)?;
        let token = TokenIssuer::new(key, Duration::from_secs(3600))
            .issue_service(client, SystemClock.now())?
            .token;
        Ok(Loader {
            identity: IdentityServiceClient::new(connect(var("IDENTITY_URL")?).await?),
            directory: DirectoryServiceClient::new(connect(var("DIRECTORY_URL")?).await?),
            token,
            mail_dir: PathBuf::from(var("MAILSINK_DIR")?),
            prefix: client.to_owned(),
        })
    }

    /// `message` with the service token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        with_bearer(message, &self.token)
    }

    /// A request id that is the same on every run for the same `name`.
    pub fn keyed(&self, name: &str) -> Uuid {
        Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("cqrs-{}/{name}", self.prefix).as_bytes(),
        )
    }

    pub async fn lookup(&self, email: &str) -> Result<Option<idp::Account>, Error> {
        let request = self.request(idp::LookupAccountRequest {
            key: Some(idp::lookup_account_request::Key::Email(email.to_owned())),
        });
        match self.identity.clone().lookup_account(request).await {
            Ok(found) => Ok(found.into_inner().account),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(describe(&s).into()),
        }
    }

    /// Creates (or finds again) organisation `ods`; its id.
    pub async fn organisation(
        &self,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<String>,
    ) -> Result<String, Error> {
        let request = self.request(dir::CreateOrganisationRequest {
            request_id: self.keyed(ods).to_string(),
            kind: kind as i32,
            ods_code: ods.to_owned(),
            name: name.to_owned(),
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

    /// Creates (or finds again) the national account of `email`.
    pub async fn account(
        &self,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<idp::Account, Error> {
        let request = self.request(idp::CreateAccountRequest {
            request_id: self.keyed(email).to_string(),
            realm: Realm::National as i32,
            email: email.to_owned(),
            first_name: first.to_owned(),
            last_name: last.to_owned(),
        });
        match self.identity.clone().create_account(request).await {
            Ok(created) => created
                .into_inner()
                .account
                .ok_or_else(|| "CreateAccount answered without an account".into()),
            Err(s) if s.code() == Code::AlreadyExists => self
                .lookup(email)
                .await?
                .ok_or_else(|| format!("{email} exists but cannot be found").into()),
            Err(s) => Err(describe(&s).into()),
        }
    }

    pub async fn grant(
        &self,
        account_id: &str,
        organisation_id: &str,
        role: Role,
    ) -> Result<(), Error> {
        let request = self.request(dir::GrantRoleRequest {
            request_id: self
                .keyed(&format!(
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
    pub async fn register(
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
    pub async fn link_token(&self, address: &str) -> Result<String, Error> {
        let started = Instant::now();
        loop {
            if let Some(token) = mails_to(&self.mail_dir, address)?
                .iter()
                .rev()
                .find_map(CapturedMail::link_token)
            {
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

/// `message` with `Authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Every mail the sink kept for `address`, oldest first. The sink names files
/// `<n>-<recipient>.eml`, numbered in arrival order.
pub fn mails_to(dir: &Path, address: &str) -> Result<Vec<CapturedMail>, Error> {
    let suffix = format!("-{address}.eml");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            let n = name.strip_suffix(&suffix)?.parse().ok()?;
            Some((n, path))
        })
        .collect();
    files.sort_by_key(|(n, _)| *n);
    files
        .into_iter()
        .map(|(_, path)| {
            let raw = std::fs::read(&path)?;
            Ok(CapturedMail::parse(
                String::new(),
                vec![address.to_owned()],
                &raw,
            ))
        })
        .collect()
}

/// A status as one line.
pub fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
