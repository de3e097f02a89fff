//! Every mail the suite sends, as text and HTML.
//!
//! Templates live in code rather than in the database so that a deployment can never be
//! missing one and so that the parameters each needs are checked at `EnqueueEmail` time:
//! a mail that would render with a hole in it is refused before it is stored.
//!
//! Links are built from the configured public base URL, never from anything in a request,
//! and carry their token in the `token` query parameter.

use std::collections::BTreeMap;

use url::Url;

/// A template the notification service knows how to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Template {
    RegistrationLink,
    Invitation,
    RegistrationReceived,
    RegistrationApproved,
    RegistrationRejected,
    AccessRequestApproved,
    AccessRequestRejected,
    PasswordReset,
    UserIdReminder,
    AccountLocked,
    AccountUnlocked,
    AccountDisabled,
    AccountEnabled,
    PasswordChanged,
    SecondFactorAdded,
    SecondFactorRemoved,
    RecoveryCodeUsed,
}

/// A rendered mail, ready for the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Parameters that carry secrets (link tokens). They are needed until the mail has gone and
/// are scrubbed from storage afterwards.
pub const SECRET_PARAMS: &[&str] = &["token"];

impl Template {
    pub const ALL: [Template; 17] = [
        Template::RegistrationLink,
        Template::Invitation,
        Template::RegistrationReceived,
        Template::RegistrationApproved,
        Template::RegistrationRejected,
        Template::AccessRequestApproved,
        Template::AccessRequestRejected,
        Template::PasswordReset,
        Template::UserIdReminder,
        Template::AccountLocked,
        Template::AccountUnlocked,
        Template::AccountDisabled,
        Template::AccountEnabled,
        Template::PasswordChanged,
        Template::SecondFactorAdded,
        Template::SecondFactorRemoved,
        Template::RecoveryCodeUsed,
    ];

    /// The stored name, stable across releases (the proto enum value's name, which
    /// `api::convert` maps to and from).
    pub fn as_str(self) -> &'static str {
        match self {
            Template::RegistrationLink => "EMAIL_TEMPLATE_REGISTRATION_LINK",
            Template::Invitation => "EMAIL_TEMPLATE_INVITATION",
            Template::RegistrationReceived => "EMAIL_TEMPLATE_REGISTRATION_RECEIVED",
            Template::RegistrationApproved => "EMAIL_TEMPLATE_REGISTRATION_APPROVED",
            Template::RegistrationRejected => "EMAIL_TEMPLATE_REGISTRATION_REJECTED",
            Template::AccessRequestApproved => "EMAIL_TEMPLATE_ACCESS_REQUEST_APPROVED",
            Template::AccessRequestRejected => "EMAIL_TEMPLATE_ACCESS_REQUEST_REJECTED",
            Template::PasswordReset => "EMAIL_TEMPLATE_PASSWORD_RESET",
            Template::UserIdReminder => "EMAIL_TEMPLATE_USER_ID_REMINDER",
            Template::AccountLocked => "EMAIL_TEMPLATE_ACCOUNT_LOCKED",
            Template::AccountUnlocked => "EMAIL_TEMPLATE_ACCOUNT_UNLOCKED",
            Template::AccountDisabled => "EMAIL_TEMPLATE_ACCOUNT_DISABLED",
            Template::AccountEnabled => "EMAIL_TEMPLATE_ACCOUNT_ENABLED",
            Template::PasswordChanged => "EMAIL_TEMPLATE_PASSWORD_CHANGED",
            Template::SecondFactorAdded => "EMAIL_TEMPLATE_SECOND_FACTOR_ADDED",
            Template::SecondFactorRemoved => "EMAIL_TEMPLATE_SECOND_FACTOR_REMOVED",
            Template::RecoveryCodeUsed => "EMAIL_TEMPLATE_RECOVERY_CODE_USED",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Security mail reaches the owner whatever their preferences say: it is how they get
    /// into their account or learn that someone else is trying to.
    pub fn is_security(self) -> bool {
        !matches!(
            self,
            Template::RegistrationReceived
                | Template::AccessRequestApproved
                | Template::AccessRequestRejected
        )
    }

    pub fn required_params(self) -> &'static [&'static str] {
        match self {
            Template::RegistrationLink | Template::PasswordReset => &["first_name", "token"],
            Template::Invitation => &["first_name", "organisation_name", "role", "token"],
            Template::RegistrationReceived => &["applicant_name", "organisation_name", "role"],
            Template::RegistrationApproved | Template::AccessRequestApproved => {
                &["first_name", "organisation_name", "role"]
            }
            Template::RegistrationRejected => &["first_name", "organisation_name", "reason"],
            Template::AccessRequestRejected => {
                &["first_name", "organisation_name", "role", "reason"]
            }
            Template::UserIdReminder => &["first_name", "user_id"],
            Template::AccountLocked
            | Template::AccountUnlocked
            | Template::AccountDisabled
            | Template::AccountEnabled
            | Template::PasswordChanged
            | Template::SecondFactorAdded
            | Template::SecondFactorRemoved => &["first_name"],
            Template::RecoveryCodeUsed => &["first_name", "remaining"],
        }
    }

    /// Parameters a template understands beyond the required ones.
    fn optional_params(self) -> &'static [&'static str] {
        match self {
            Template::RegistrationLink => &["user_id"],
            Template::Invitation => &["inviter_name"],
            Template::SecondFactorRemoved => &["by_service_desk"],
            // Set for a temporary lock: how long it lasts.
            Template::AccountLocked => &["minutes"],
            _ => &[],
        }
    }

    pub fn accepts_param(self, name: &str) -> bool {
        self.required_params().contains(&name) || self.optional_params().contains(&name)
    }

    /// The path of the page a link in this mail opens, if it has one.
    fn link_path(self) -> Option<&'static str> {
        match self {
            Template::RegistrationLink => Some("register/complete"),
            Template::Invitation => Some("invitation"),
            Template::PasswordReset => Some("password/reset"),
            _ => None,
        }
    }

    /// Renders the mail. Parameters are assumed validated (`required_params` present).
    pub fn render(self, params: &BTreeMap<String, String>, base_url: &Url) -> RenderedMail {
        let p = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
        let link = self
            .link_path()
            .map(|path| link(base_url, path, p("token")));
        let role = role_label(p("role"));
        let greeting = format!("Dear {},", p("first_name"));

        let (subject, greeting, paragraphs): (String, String, Vec<String>) = match self {
            Template::RegistrationLink => {
                let mut lines = vec![
                    "An account has been created for you on the Calculating Quality Reporting Service (CQRS).".to_owned(),
                ];
                if !p("user_id").is_empty() {
                    lines.push(format!("Your User ID is {}.", p("user_id")));
                }
                lines.push(
                    "To complete your registration, set your password using the link below. The link can be used once and expires in 7 days.".to_owned(),
                );
                ("Complete your CQRS registration".to_owned(), greeting, lines)
            }
            Template::Invitation => {
                let inviter = match p("inviter_name") {
                    "" => String::new(),
                    name => format!(" by {name}"),
                };
                (
                    format!("You have been invited to CQRS by {}", p("organisation_name")),
                    greeting,
                    vec![
                        format!(
                            "You have been invited{inviter} to join {} on the Calculating Quality Reporting Service (CQRS) as {role}.",
                            p("organisation_name")
                        ),
                        "To accept, open the link below. The link can be used once and expires in 7 days.".to_owned(),
                    ],
                )
            }
            Template::RegistrationReceived => (
                format!("New CQRS registration for {}", p("organisation_name")),
                "Hello,".to_owned(),
                vec![
                    format!(
                        "{} has asked to register for {} as {role}.",
                        p("applicant_name"),
                        p("organisation_name")
                    ),
                    "Please sign in to CQRS to approve or reject the registration.".to_owned(),
                ],
            ),
            Template::RegistrationApproved => (
                "Your CQRS registration has been approved".to_owned(),
                greeting,
                vec![
                    format!(
                        "Your registration for {} as {role} has been approved.",
                        p("organisation_name")
                    ),
                    "You will receive a separate e-mail with a link to set your password.".to_owned(),
                ],
            ),
            Template::RegistrationRejected => (
                "Your CQRS registration has been rejected".to_owned(),
                greeting,
                vec![
                    format!(
                        "Your registration for {} has been rejected for the following reason:",
                        p("organisation_name")
                    ),
                    p("reason").to_owned(),
                ],
            ),
            Template::AccessRequestApproved => (
                "Your CQRS access request has been approved".to_owned(),
                greeting,
                vec![format!(
                    "Your request for access to {} as {role} has been approved. The role is available the next time you sign in or switch role.",
                    p("organisation_name")
                )],
            ),
            Template::AccessRequestRejected => (
                "Your CQRS access request has been rejected".to_owned(),
                greeting,
                vec![
                    format!(
                        "Your request for access to {} as {role} has been rejected for the following reason:",
                        p("organisation_name")
                    ),
                    p("reason").to_owned(),
                ],
            ),
            Template::PasswordReset => (
                "Reset your CQRS password".to_owned(),
                greeting,
                vec![
                    "We received a request to reset the password of your CQRS account.".to_owned(),
                    "Use the link below to choose a new password. The link can be used once and expires in 1 hour. If you did not ask for this, you can ignore this e-mail.".to_owned(),
                ],
            ),
            Template::UserIdReminder => (
                "Your CQRS User ID".to_owned(),
                greeting,
                vec![
                    format!("Your CQRS User ID is {}.", p("user_id")),
                    "If you did not ask for this reminder, you can ignore this e-mail.".to_owned(),
                ],
            ),
            Template::AccountLocked => (
                "Your CQRS account has been locked".to_owned(),
                greeting,
                match params.get("minutes") {
                    Some(minutes) => vec![
                        format!(
                            "Your CQRS account has been locked for {minutes} {} after too many unsuccessful sign-in attempts. You can try again after that.",
                            if minutes == "1" { "minute" } else { "minutes" }
                        ),
                        "If this was not you, reset your password from the sign-in page, or contact the service desk.".to_owned(),
                    ],
                    None => vec![
                        "Your CQRS account has been locked after too many unsuccessful sign-in attempts.".to_owned(),
                        "If this was not you, or you need it unlocked now, contact the service desk.".to_owned(),
                    ],
                },
            ),
            Template::AccountUnlocked => (
                "Your CQRS account has been unlocked".to_owned(),
                greeting,
                vec!["The service desk has unlocked your CQRS account. You can sign in again.".to_owned()],
            ),
            Template::AccountDisabled => (
                "Your CQRS account has been disabled".to_owned(),
                greeting,
                vec![
                    "Your CQRS account has been disabled and can no longer be used to sign in.".to_owned(),
                    "If you think this is a mistake, contact your account administrator.".to_owned(),
                ],
            ),
            Template::AccountEnabled => (
                "Your CQRS account has been re-enabled".to_owned(),
                greeting,
                vec!["Your CQRS account has been re-enabled. You can sign in again.".to_owned()],
            ),
            Template::PasswordChanged => (
                "Your CQRS password has been changed".to_owned(),
                greeting,
                vec![
                    "The password of your CQRS account has just been changed.".to_owned(),
                    "If you did not do this, contact the service desk at once.".to_owned(),
                ],
            ),
            Template::SecondFactorAdded => (
                "An authenticator app has been added to your CQRS account".to_owned(),
                greeting,
                vec![
                    "Signing in to your CQRS account now needs a code from your authenticator \
                     app as well as your password."
                        .to_owned(),
                    "If you did not do this, contact the service desk at once.".to_owned(),
                ],
            ),
            Template::SecondFactorRemoved => (
                "The authenticator app has been removed from your CQRS account".to_owned(),
                greeting,
                vec![
                    if p("by_service_desk") == "true" {
                        "The service desk has removed the authenticator app from your CQRS \
                         account. Add one again from My profile when you next sign in."
                            .to_owned()
                    } else {
                        "The authenticator app has been removed from your CQRS account."
                            .to_owned()
                    },
                    "If you did not ask for this, contact the service desk at once.".to_owned(),
                ],
            ),
            Template::RecoveryCodeUsed => (
                "A recovery code was used to sign in to your CQRS account".to_owned(),
                greeting,
                vec![
                    format!(
                        "One of your recovery codes has just been used to sign in. You have {} \
                         left; each works once.",
                        p("remaining")
                    ),
                    "If this was not you, contact the service desk at once.".to_owned(),
                ],
            ),
        };

        RenderedMail {
            text: render_text(&greeting, &paragraphs, link.as_deref()),
            html: render_html(&subject, &greeting, &paragraphs, link.as_deref()),
            subject,
        }
    }
}

fn link(base_url: &Url, path: &str, token: &str) -> String {
    // A base URL with a path ("https://host/cqrs") must keep it, so join relative to a
    // base that ends in '/'.
    let mut base = base_url.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    let mut url = match base.join(path) {
        Ok(url) => url,
        Err(_) => base,
    };
    url.query_pairs_mut().clear().append_pair("token", token);
    url.into()
}

/// "COMMISSIONING_ACCOUNT_ADMINISTRATOR" reads better as "Commissioning Account Administrator".
fn role_label(role: &str) -> String {
    role.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn render_text(greeting: &str, paragraphs: &[String], link: Option<&str>) -> String {
    let mut out = format!("{greeting}\n\n");
    for paragraph in paragraphs {
        out.push_str(paragraph);
        out.push_str("\n\n");
    }
    if let Some(link) = link {
        out.push_str(link);
        out.push_str("\n\n");
    }
    out.push_str("CQRS\n");
    out
}

fn render_html(subject: &str, greeting: &str, paragraphs: &[String], link: Option<&str>) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n<p>{}</p>\n",
        escape_html(subject),
        escape_html(greeting)
    );
    for paragraph in paragraphs {
        out.push_str(&format!("<p>{}</p>\n", escape_html(paragraph)));
    }
    if let Some(link) = link {
        let link = escape_html(link);
        out.push_str(&format!("<p><a href=\"{link}\">{link}</a></p>\n"));
    }
    out.push_str("<p>CQRS</p>\n</body></html>\n");
    out
}

pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn params_for(template: Template) -> BTreeMap<String, String> {
        template
            .required_params()
            .iter()
            .map(|name| ((*name).to_owned(), format!("<{name}>")))
            .collect()
    }

    #[test]
    fn every_template_round_trips_through_its_stored_name() {
        for template in Template::ALL {
            assert_eq!(Template::parse(template.as_str()), Some(template));
        }
        assert_eq!(Template::parse("EMAIL_TEMPLATE_UNSPECIFIED"), None);
    }

    #[test]
    fn every_template_renders_all_its_params_and_escapes_html() {
        let base = Url::parse("https://cqrs.example.nhs.uk/portal").unwrap();
        for template in Template::ALL {
            let mail = template.render(&params_for(template), &base);
            assert!(!mail.subject.is_empty(), "{template:?}");
            for name in template.required_params() {
                if *name == "role" || *name == "token" {
                    continue;
                }
                assert!(
                    mail.text.contains(&format!("<{name}>")),
                    "{template:?} text lacks {name}"
                );
                assert!(
                    mail.html.contains(&format!("&lt;{name}&gt;")),
                    "{template:?} html lacks escaped {name}"
                );
                assert!(
                    !mail.html.contains(&format!("<{name}>")),
                    "{template:?} html unescaped"
                );
            }
        }
    }

    #[test]
    fn links_use_the_configured_base_and_the_token_query_parameter() {
        let base = Url::parse("https://cqrs.example.nhs.uk/portal").unwrap();
        let mut params = params_for(Template::PasswordReset);
        params.insert("token".into(), "abc+/=".into());
        let mail = Template::PasswordReset.render(&params, &base);
        assert!(
            mail.text
                .contains("https://cqrs.example.nhs.uk/portal/password/reset?token=abc%2B%2F%3D"),
            "{}",
            mail.text
        );
        let templates_with_links: Vec<Template> = Template::ALL
            .into_iter()
            .filter(|t| t.required_params().contains(&"token"))
            .collect();
        for template in templates_with_links {
            let mail = template.render(&params_for(template), &base);
            assert!(
                mail.text.contains("https://cqrs.example.nhs.uk/portal/"),
                "{template:?}"
            );
        }
    }

    #[test]
    fn workflow_mail_is_not_security_mail() {
        assert!(!Template::RegistrationReceived.is_security());
        assert!(!Template::AccessRequestApproved.is_security());
        assert!(Template::PasswordReset.is_security());
        assert!(Template::AccountLocked.is_security());
    }

    #[test]
    fn role_labels_read_as_words() {
        assert_eq!(
            role_label("COMMISSIONING_ACCOUNT_ADMINISTRATOR"),
            "Commissioning Account Administrator"
        );
        assert_eq!(role_label(""), "");
    }
}
