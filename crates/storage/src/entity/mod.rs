//! sea-orm entities, one file per table. Private to this crate: callers get the plain types of
//! [`crate::model`], which redact hashes in `Debug`.

pub(crate) mod account_data_key;
pub(crate) mod assisted_flow;
pub(crate) mod audit_event;
pub(crate) mod audit_head;
pub(crate) mod contact_flow;
pub(crate) mod contact_vouch;
pub(crate) mod enrollment;
pub(crate) mod event;
pub(crate) mod failure;
pub(crate) mod family_member;
pub(crate) mod finished_enrollment;
pub(crate) mod flow;
pub(crate) mod forgotten_account;
pub(crate) mod outbox;
pub(crate) mod rate_limit;
pub(crate) mod recovery_contact;
pub(crate) mod recovery_contact_setting;
