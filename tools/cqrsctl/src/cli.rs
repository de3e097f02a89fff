//! The command line (clap derive). Every command maps onto RPCs listed in API.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use cqrs_proto::access::v1::{AccessRequestState, InvitationState, RegistrationState};
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::OrganisationKind;
use cqrs_proto::identity::v1::{AccountState, Realm};
use uuid::Uuid;

use crate::duration::{Since, parse_duration};
use crate::enums;
use crate::errors::EXIT_CODES_HELP;
use crate::output::Format;
use crate::profile::parse_profile_name;

/// Command-line client of the CQRS Identity Suite for operations and the service desk.
#[derive(Debug, Parser)]
#[command(name = "cqrsctl", version, about, after_long_help = EXIT_CODES_HELP, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Session cache to use (`$XDG_CONFIG_HOME/cqrsctl/<profile>.json`).
    #[arg(long, global = true, env = "CQRSCTL_PROFILE", default_value = "default", value_parser = parse_profile_name)]
    pub profile: String,

    /// Output format of results on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Identity service URL.
    #[arg(
        long,
        global = true,
        env = "CQRSCTL_IDENTITY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub identity_url: String,

    /// Directory service URL.
    #[arg(
        long,
        global = true,
        env = "CQRSCTL_DIRECTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub directory_url: String,

    /// Access service URL.
    #[arg(
        long,
        global = true,
        env = "CQRSCTL_ACCESS_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub access_url: String,

    /// Notification service URL.
    #[arg(
        long,
        global = true,
        env = "CQRSCTL_NOTIFICATIONS_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub notifications_url: String,

    /// Deadline of each RPC (e.g. 500ms, 10s, 1m).
    #[arg(long, global = true, env = "CQRSCTL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in (identity SignIn) and select a role (SelectRole); caches the session.
    Login(LoginArgs),
    /// Sign out (SignOut) and delete the cached session.
    Logout(LogoutArgs),
    /// Show the signed-in account and its active role.
    Whoami,
    /// Switch the active role without signing in again (SelectRole). Without options, lists
    /// the grants to choose from.
    UseRole(UseRoleArgs),
    /// Organisations (directory).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Invite a person to an organisation in a role (access CreateInvitation).
    Invite(InviteArgs),
    /// Invitations (access).
    #[command(subcommand)]
    Invitations(InvitationsCommand),
    /// Self-registrations awaiting or past review (access).
    #[command(subcommand)]
    Registrations(ReviewCommand<RegistrationStateArg>),
    /// Requests for a role at another organisation (access).
    #[command(subcommand)]
    AccessRequests(ReviewCommand<AccessRequestStateArg>),
    /// Accounts (identity; `revoke` is directory RevokeAllRoles).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Grants (directory).
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Audit trails.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("login").required(true).args(["user_id", "email"])))]
pub struct LoginArgs {
    /// User ID of a NATIONAL account (e.g. JSM482).
    #[arg(long)]
    pub user_id: Option<String>,
    /// E-mail address of a LOCAL account.
    #[arg(long)]
    pub email: Option<String>,
    /// Read the password from the first line of stdin instead of prompting (for scripts).
    #[arg(long)]
    pub password_stdin: bool,
    /// The code of the account's authenticator app (6 digits), or one of its recovery codes;
    /// needed when the account has one.
    #[arg(long)]
    pub code: Option<String>,
    /// Role to select after signing in (needed when the account has several grants).
    #[arg(long, value_parser = enums::parse_role)]
    pub role: Option<Role>,
    /// Organisation (id or ODS code) of the grant to select.
    #[arg(long)]
    pub organisation: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Delete the cached session even when the identity service cannot be reached.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UseRoleArgs {
    /// Role to make active.
    #[arg(long, value_parser = enums::parse_role)]
    pub role: Option<Role>,
    /// Organisation (id or ODS code) of the grant.
    #[arg(long)]
    pub organisation: Option<String>,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Limit {
    /// Most results to fetch (pages are followed up to this many).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation (CreateOrganisation; SERVICE_DESK).
    Create(OrgCreateArgs),
    /// Search by name prefix or exact ODS code (SearchOrganisations).
    Search {
        /// At least 2 characters.
        query: String,
        /// Only organisations of this kind.
        #[arg(long, value_parser = enums::parse_kind)]
        kind: Option<OrganisationKind>,
        #[command(flatten)]
        limit: Limit,
    },
    /// One organisation (GetOrganisation), by id or ODS code.
    Get {
        /// Organisation id or ODS code.
        id: String,
    },
    /// Children of an organisation, or the roots (ListOrganisations).
    List {
        /// Parent organisation id or ODS code; omitted lists the roots.
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Switch a service provider between single- and multi-level approval (SetApprovalLevel).
    SetApproval {
        /// Organisation id or ODS code.
        id: String,
        /// true or false.
        #[arg(long, action = clap::ArgAction::Set, required = true)]
        multi_level: bool,
    },
    /// Bulk-create organisations from a CSV file (columns ods_code,name,kind,parent_ods).
    ///
    /// Rows are created in file order; a parent (by ODS code) must come earlier in the file or
    /// already exist. Each row's request id is derived from its ODS code, and rows whose ODS
    /// code already exists are reported as existing, so re-running after a failure creates
    /// nothing twice. Exits non-zero when any row failed.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct OrgCreateArgs {
    /// region, commissioning-organisation, service-provider or service-desk.
    #[arg(long, value_parser = enums::parse_kind)]
    pub kind: OrganisationKind,
    /// ODS code (3-6 letters and digits).
    #[arg(long)]
    pub ods: String,
    #[arg(long)]
    pub name: String,
    /// Parent organisation id or ODS code (required except for regions and service desks).
    #[arg(long)]
    pub parent: Option<String>,
    /// Service providers only: start with multi-level approval.
    #[arg(long)]
    pub multi_level: bool,
    /// Request id to retry a create with (a fresh one is generated otherwise).
    #[arg(long)]
    pub request_id: Option<Uuid>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file (`-` for stdin).
    pub csv: PathBuf,
    /// No progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Check the file and print the plan; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub first_name: String,
    #[arg(long)]
    pub last_name: String,
    /// Organisation id or ODS code.
    #[arg(long)]
    pub organisation: String,
    #[arg(long, value_parser = enums::parse_role)]
    pub role: Role,
    /// Request id to retry an invitation with (a fresh one is generated otherwise).
    #[arg(long)]
    pub request_id: Option<Uuid>,
}

#[derive(Debug, Subcommand)]
pub enum InvitationsCommand {
    /// Invitations, newest first (ListInvitations).
    List {
        /// Organisation id or ODS code (and its descendants); omitted means your whole scope.
        #[arg(long)]
        organisation: Option<String>,
        /// sent, accepted, expired or cancelled.
        #[arg(long, value_parser = enums::parse_invitation_state)]
        state: Option<InvitationState>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Send an invitation again with a new link (ResendInvitation).
    Resend { id: String },
    /// Cancel an invitation (CancelInvitation).
    Cancel { id: String },
}

/// A state filter for `registrations list` / `access-requests list`.
pub trait StateArg: Clone + Send + Sync + 'static + std::fmt::Debug {
    fn parse(raw: &str) -> Result<Self, String>;
    fn value(&self) -> i32;
}

#[derive(Debug, Clone, Copy)]
pub struct RegistrationStateArg(pub RegistrationState);

impl StateArg for RegistrationStateArg {
    fn parse(raw: &str) -> Result<Self, String> {
        enums::parse_registration_state(raw).map(Self)
    }
    fn value(&self) -> i32 {
        self.0 as i32
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AccessRequestStateArg(pub AccessRequestState);

impl StateArg for AccessRequestStateArg {
    fn parse(raw: &str) -> Result<Self, String> {
        enums::parse_access_request_state(raw).map(Self)
    }
    fn value(&self) -> i32 {
        self.0 as i32
    }
}

/// `list`, `approve` and `reject`, shared by registrations and access requests.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand<S: StateArg> {
    /// Newest first; limited to your scope.
    List {
        /// Organisation id or ODS code (and its descendants); omitted means your whole scope.
        #[arg(long)]
        organisation: Option<String>,
        /// pending, approved, rejected (access requests also: withdrawn).
        #[arg(long, value_parser = S::parse)]
        state: Option<S>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Approve (decision APPROVE).
    Approve {
        id: String,
        /// Optional note recorded with the decision.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject (decision REJECT); the reason is required and sent to the person.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Find an account by User ID or e-mail (LookupAccount).
    #[command(group(ArgGroup::new("key").required(true).args(["user_id", "email"])))]
    Lookup {
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
    /// One account (GetAccount). ACCOUNT is an id, a User ID or an e-mail address.
    Get { account: String },
    /// Accounts ordered by e-mail (ListAccounts).
    List {
        /// Prefix of the e-mail, User ID, first or last name.
        #[arg(long)]
        query: Option<String>,
        /// pending-registration, active or disabled.
        #[arg(long, value_parser = enums::parse_account_state)]
        state: Option<AccountState>,
        /// national or local.
        #[arg(long, value_parser = enums::parse_realm)]
        realm: Option<Realm>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Lift a temporary or permanent lock (UnlockAccount).
    Unlock { account: String },
    /// E-mail the owner a password-reset link (SendPasswordReset).
    SendReset { account: String },
    /// Disable the account; its sessions end (DisableAccount).
    Disable {
        account: String,
        /// Recorded in the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-enable a disabled account (EnableAccount).
    Enable { account: String },
    /// Remove the account's authenticator app and recovery codes, for a person who lost both;
    /// the owner is e-mailed and signed out (RemoveSecondFactor).
    RemoveSecondFactor { account: String },
    /// Remove every grant of the account in your scope, keeping the login (RevokeAllRoles).
    Revoke { account: String },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// An account's grants (ListGrants). ACCOUNT is an id, a User ID or an e-mail address.
    List { account: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Identity,
    Directory,
    Access,
    /// For `audit tail`, its e-mail delivery log is shown; search and verify read its trail.
    Notifications,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Identity,
        Service::Directory,
        Service::Access,
        Service::Notifications,
    ];

    /// The service's name, as its audit chain gives it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Directory => "directory",
            Service::Access => "access",
            Service::Notifications => "notifications",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Latest audit events, newest first (ListAuditEvents); with --follow, new events as they
    /// arrive, oldest first (JSON Lines with --output json).
    Tail(TailArgs),
    /// Events of all four services' trails in one list, newest first, filtered (ListAuditEvents
    /// of each). Page on with --before set to the time of the last event shown.
    Search(SearchArgs),
    /// Recomputes each service's hash chain, checks its signed checkpoints and those the other
    /// services hold, and names the first break. Exit code 0: intact; 9: broken.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Only events by this actor (account id or client id).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events about this target: an account, an organisation (also events about its
    /// grants and requests), or any other record id.
    #[arg(long)]
    pub target: Option<String>,
    /// Only this action (e.g. GRANT_ROLE).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events since then: a duration (15m, 2h, 1d) or an RFC 3339 time.
    #[arg(long, value_parser = Since::parse)]
    pub since: Option<Since>,
    /// Only events before then (the next page: the time of the last event shown).
    #[arg(long, value_parser = Since::parse)]
    pub before: Option<Since>,
    /// Only these services' trails (all four unless given; repeatable).
    #[arg(long, value_enum)]
    pub service: Vec<Service>,
    /// How many events to show.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this service's chain (all four unless given).
    #[arg(long, value_enum)]
    pub service: Option<Service>,
    /// Report from this event on (earlier ones are still linked from the nearest signed
    /// checkpoint).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
    pub from: i64,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[arg(long, value_enum)]
    pub service: Service,
    /// Keep polling every 2 s and print new events (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events since then: a duration (15m, 2h, 1d) or an RFC 3339 time.
    #[arg(long, value_parser = Since::parse)]
    pub since: Option<Since>,
    /// How many of the latest events to show first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Only this action (e.g. SIGN_IN).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events by this actor (account id or client id).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events about this target id.
    #[arg(long)]
    pub target: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cqrsctl").chain(args.iter().copied()))
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_have_defaults() {
        // clap reads the CQRSCTL_* variables; a developer's own settings are left alone.
        let unset = |var: &str| std::env::var_os(var).is_none();
        let cli = parse(&["whoami"]).unwrap();
        assert_eq!(cli.output, Format::Table);
        if unset("CQRSCTL_PROFILE") {
            assert_eq!(cli.profile, "default");
        }
        for (var, value, want) in [
            (
                "CQRSCTL_IDENTITY_URL",
                &cli.identity_url,
                "http://127.0.0.1:50051",
            ),
            (
                "CQRSCTL_DIRECTORY_URL",
                &cli.directory_url,
                "http://127.0.0.1:50052",
            ),
            (
                "CQRSCTL_ACCESS_URL",
                &cli.access_url,
                "http://127.0.0.1:50053",
            ),
            (
                "CQRSCTL_NOTIFICATIONS_URL",
                &cli.notifications_url,
                "http://127.0.0.1:50054",
            ),
        ] {
            if unset(var) {
                assert_eq!(value, want, "{var}");
            }
        }
        if unset("CQRSCTL_TIMEOUT") {
            assert_eq!(cli.timeout, Duration::from_secs(10));
        }
    }

    #[test]
    fn globals_go_anywhere() {
        let cli = parse(&[
            "org",
            "get",
            "A81001",
            "--output",
            "json",
            "--profile",
            "ops",
            "--timeout",
            "2s",
            "--directory-url",
            "http://dir:1",
        ])
        .unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.profile, "ops");
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert_eq!(cli.directory_url, "http://dir:1");
        assert!(matches!(cli.command, Command::Org(OrgCommand::Get { ref id }) if id == "A81001"));
    }

    #[test]
    fn login_needs_exactly_one_login() {
        assert_eq!(
            parse(&["login"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["login", "--user-id", "JSM482", "--email", "a@b.c"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
        let cli = parse(&[
            "login",
            "--user-id",
            "JSM482",
            "--password-stdin",
            "--role",
            "service-desk",
            "--organisation",
            "X26",
        ])
        .unwrap();
        let Command::Login(args) = cli.command else {
            panic!("not login")
        };
        assert_eq!(args.user_id.as_deref(), Some("JSM482"));
        assert!(args.password_stdin);
        assert_eq!(args.role, Some(Role::ServiceDesk));
        assert_eq!(args.organisation.as_deref(), Some("X26"));
    }

    #[test]
    fn bad_values_are_usage_errors_with_exit_code_2() {
        for args in [
            &[
                "org", "create", "--kind", "planet", "--ods", "A1", "--name", "x",
            ][..],
            &["org", "set-approval", "X", "--multi-level", "maybe"],
            &["org", "set-approval", "X"],
            &["--output", "yaml", "whoami"],
            &["--profile", "../etc", "whoami"],
            &["--timeout", "0", "whoami"],
            &["audit", "tail", "--service", "billing"],
            &["audit", "tail", "--service", "identity", "--since", "soon"],
            &["registrations", "reject", "r1"],
            &["invite", "--email", "a@b.c"],
            &["account", "lookup"],
            &["nonsense"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn org_commands() {
        let cli = parse(&[
            "org",
            "create",
            "--kind",
            "SERVICE_PROVIDER",
            "--ods",
            "A81001",
            "--name",
            "The Surgery",
            "--parent",
            "15N",
            "--multi-level",
        ])
        .unwrap();
        let Command::Org(OrgCommand::Create(args)) = cli.command else {
            panic!("not org create")
        };
        assert_eq!(args.kind, OrganisationKind::ServiceProvider);
        assert_eq!(args.parent.as_deref(), Some("15N"));
        assert!(args.multi_level);
        assert_eq!(args.request_id, None);

        let cli = parse(&["org", "set-approval", "X", "--multi-level", "false"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Org(OrgCommand::SetApproval {
                multi_level: false,
                ..
            })
        ));

        let cli = parse(&["org", "import", "orgs.csv", "--no-progress"]).unwrap();
        let Command::Org(OrgCommand::Import(args)) = cli.command else {
            panic!("not import")
        };
        assert_eq!(args.csv, PathBuf::from("orgs.csv"));
        assert!(args.no_progress);
        assert!(!args.dry_run);
    }

    #[test]
    fn review_commands() {
        let cli = parse(&[
            "registrations",
            "list",
            "--state",
            "pending",
            "--limit",
            "5",
        ])
        .unwrap();
        let Command::Registrations(ReviewCommand::List { state, limit, .. }) = cli.command else {
            panic!("not registrations list")
        };
        assert_eq!(state.map(|s| s.0), Some(RegistrationState::Pending));
        assert_eq!(limit.limit, 5);

        let err = parse(&["registrations", "list", "--state", "withdrawn"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let cli = parse(&["access-requests", "list", "--state", "withdrawn"]).unwrap();
        assert!(matches!(cli.command, Command::AccessRequests(_)));

        let cli = parse(&["access-requests", "reject", "r1", "--reason", "not in post"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::AccessRequests(ReviewCommand::Reject { ref reason, .. }) if reason == "not in post"
        ));
    }

    #[test]
    fn account_and_audit_commands() {
        let cli = parse(&["account", "disable", "JSM482", "--reason", "left"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Account(AccountCommand::Disable { ref account, reason: Some(_) }) if account == "JSM482"
        ));
        let cli = parse(&["account", "send-reset", "a1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Account(AccountCommand::SendReset { .. })
        ));

        let cli = parse(&[
            "audit",
            "tail",
            "--service",
            "access",
            "-f",
            "--since",
            "15m",
        ])
        .unwrap();
        let Command::Audit(AuditCommand::Tail(args)) = cli.command else {
            panic!("not audit tail")
        };
        assert_eq!(args.service, Service::Access);
        assert!(args.follow);
        assert_eq!(args.since, Some(Since::Ago(Duration::from_secs(900))));
        assert_eq!(args.limit, 20);
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("8  UNAVAILABLE"), "{help}");
        let err = parse(&["--help"]).unwrap_err();
        assert_eq!(err.exit_code(), 0);
    }
}
