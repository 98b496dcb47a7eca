//! Recovery contacts: invite, accept, remove, the threshold, and the contact recovery flows
//! (begin with its limit, count a contact's submissions and vouch once, cancel, complete
//! once). Every change takes the owner's lock first (and the contact's, where it counts the
//! contact's owners): on PostgreSQL the transaction-scoped advisory locks of
//! [`super::lock_accounts`], on SQLite its one writer; so each limit and single-use step is
//! decided by one transaction that sees every earlier one, across replicas.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, QueryTrait as _, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _},
};

use super::{ChangeError, IntoEffects, lock_accounts};
use crate::{
    Storage, StorageError,
    entity::{
        contact_flow::{self, Column as F},
        contact_vouch::{self, Column as V},
        enrollment,
        recovery_contact::{self, Column as C},
        recovery_contact_setting,
    },
    model::{
        BeginContact, ClientInfo, ContactChange, ContactEnd, ContactFlow, ContactFlowEnd,
        ContactFlowRefusal, ContactLimits, ContactRefusal, ContactRequest, ContactStart,
        ContactSummary, NewContactFlow, Opaque, RecoveryCompletion, RecoveryContact,
        ThresholdChange, Timestamp, Vouch, VouchOutcome,
    },
};

/// The threshold of an owner who never set one.
const DEFAULT_THRESHOLD: i32 = 1;

impl Storage {
    /// Invites `contact` for `owner` (or renews an open or expired invitation), if the owner
    /// has fewer than `limits.per_owner` contacts and the contact serves fewer than
    /// `limits.per_contact` owners, both counted inside the transaction.
    #[tracing::instrument(name = "db.invite_recovery_contact", skip_all)]
    pub async fn invite_recovery_contact<R: IntoEffects>(
        &self,
        new: RecoveryContact,
        limits: ContactLimits,
        effects: impl FnOnce(&ContactChange) -> R,
    ) -> Result<Result<ContactChange, ContactRefusal>, ChangeError<R::Error>> {
        let now = new.invited_at.as_ms();
        let txn = self.db().begin().await?;
        let (owner, contact) = (&new.owner_account_id, &new.contact_account_id);
        lock_accounts(self.backend(), &txn, [owner.as_str(), contact.as_str()]).await?;
        let existing = find_contact(&txn, owner, contact).await?;
        if existing.as_ref().is_some_and(|c| c.accepted_at.is_some()) {
            return Ok(Err(ContactRefusal::AlreadyAccepted));
        }
        let counted = |column: C, id: &str, other: C, other_id: &str| {
            recovery_contact::Entity::find()
                .filter(column.eq(id))
                .filter(other.ne(other_id))
                .filter(
                    Condition::any()
                        .add(C::AcceptedAt.is_not_null())
                        .add(C::ExpiresAt.gt(now)),
                )
                .count(&txn)
        };
        if i64::try_from(counted(C::OwnerAccountId, owner, C::ContactAccountId, contact).await?)
            .unwrap_or(i64::MAX)
            >= limits.per_owner
        {
            return Ok(Err(ContactRefusal::TooManyForOwner));
        }
        if i64::try_from(counted(C::ContactAccountId, contact, C::OwnerAccountId, owner).await?)
            .unwrap_or(i64::MAX)
            >= limits.per_contact
        {
            return Ok(Err(ContactRefusal::TooManyForContact));
        }
        let row = recovery_contact::ActiveModel {
            owner_account_id: Set(owner.clone()),
            contact_account_id: Set(contact.clone()),
            contact_email: Set(new.contact_email.clone()),
            invited_at: Set(now),
            expires_at: Set(new.expires_at.as_ms()),
            accepted_at: Set(None),
            active_from: Set(None),
        };
        if existing.is_some() {
            recovery_contact::Entity::update(row).exec(&txn).await?;
        } else {
            recovery_contact::Entity::insert(row).exec(&txn).await?;
        }
        let change = ContactChange {
            repeated: existing.is_some(),
            recovery_address: owner_address(&txn, owner).await?,
            contact: new,
            withdrawn_vouches: 0,
            stopped: Vec::new(),
        };
        self.commit_with(txn, &change, effects, now).await?;
        Ok(Ok(change))
    }

    /// The contact accepts an open invitation: active `activation_ms` from now. An acceptance
    /// already made answers as it was, changing nothing (`repeated`, no effects written).
    #[tracing::instrument(name = "db.accept_recovery_contact", skip_all)]
    pub async fn accept_recovery_contact<R: IntoEffects>(
        &self,
        owner: &str,
        contact: &str,
        activation_ms: i64,
        now: i64,
        effects: impl FnOnce(&ContactChange) -> R,
    ) -> Result<Result<ContactChange, ContactRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        lock_accounts(self.backend(), &txn, [owner, contact]).await?;
        let Some(mut row) = find_contact(&txn, owner, contact).await? else {
            return Ok(Err(ContactRefusal::NotContact));
        };
        let recovery_address = owner_address(&txn, owner).await?;
        if row.accepted_at.is_some() {
            return Ok(Ok(ContactChange {
                contact: row,
                repeated: true,
                recovery_address,
                withdrawn_vouches: 0,
                stopped: Vec::new(),
            }));
        }
        if row.expires_at.as_ms() <= now {
            return Ok(Err(ContactRefusal::NotContact));
        }
        let active_from = now + activation_ms;
        recovery_contact::Entity::update_many()
            .col_expr(C::AcceptedAt, Expr::value(Some(now)))
            .col_expr(C::ActiveFrom, Expr::value(Some(active_from)))
            .filter(C::OwnerAccountId.eq(owner))
            .filter(C::ContactAccountId.eq(contact))
            .filter(C::AcceptedAt.is_null())
            .exec(&txn)
            .await?;
        row.accepted_at = Some(Timestamp::from_ms(now));
        row.active_from = Some(Timestamp::from_ms(active_from));
        let change = ContactChange {
            contact: row,
            repeated: false,
            recovery_address,
            withdrawn_vouches: 0,
            stopped: Vec::new(),
        };
        self.commit_with(txn, &change, effects, now).await?;
        Ok(Ok(change))
    }

    /// Removes a contact in any state; withdraws its vouches from the owner's open flows and
    /// stops each waiting period whose vouches no longer meet its threshold.
    #[tracing::instrument(name = "db.remove_recovery_contact", skip_all)]
    pub async fn remove_recovery_contact<R: IntoEffects>(
        &self,
        owner: &str,
        contact: &str,
        now: i64,
        effects: impl FnOnce(&ContactChange) -> R,
    ) -> Result<Result<ContactChange, ContactRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        lock_accounts(self.backend(), &txn, [owner, contact]).await?;
        let Some(row) = find_contact(&txn, owner, contact).await? else {
            return Ok(Err(ContactRefusal::NotContact));
        };
        recovery_contact::Entity::delete_many()
            .filter(C::OwnerAccountId.eq(owner))
            .filter(C::ContactAccountId.eq(contact))
            .exec(&txn)
            .await?;
        let withdrawn = withdraw_vouches(&txn, owner, Some(contact), now).await?;
        let stopped = stop_unmet(&txn, owner).await?;
        let change = ContactChange {
            contact: row,
            repeated: false,
            recovery_address: owner_address(&txn, owner).await?,
            withdrawn_vouches: withdrawn,
            stopped,
        };
        self.commit_with(txn, &change, effects, now).await?;
        Ok(Ok(change))
    }

    /// Sets the owner's threshold; raises that of its open flows below it (never lowers one)
    /// and stops each waiting period it no longer meets.
    #[tracing::instrument(name = "db.set_recovery_contact_threshold", skip_all)]
    pub async fn set_recovery_contact_threshold<R: IntoEffects>(
        &self,
        owner: &str,
        threshold: i32,
        now: i64,
        effects: impl FnOnce(&ThresholdChange) -> R,
    ) -> Result<ThresholdChange, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        lock_accounts(self.backend(), &txn, [owner]).await?;
        let previous = threshold_of(&txn, owner).await?;
        let row = recovery_contact_setting::ActiveModel {
            account_id: Set(owner.to_owned()),
            threshold: Set(threshold),
            updated_at: Set(now),
        };
        if super::by_key(
            recovery_contact_setting::Entity::find_by_id(owner.to_owned()),
            &txn,
        )
        .await?
        .is_some()
        {
            recovery_contact_setting::Entity::update(row)
                .exec(&txn)
                .await?;
        } else {
            recovery_contact_setting::Entity::insert(row)
                .exec(&txn)
                .await?;
        }
        contact_flow::Entity::update_many()
            .col_expr(F::Threshold, Expr::value(threshold))
            .filter(F::AccountId.eq(owner))
            .filter(F::Threshold.lt(threshold))
            .filter(open())
            .exec(&txn)
            .await?;
        let change = ThresholdChange {
            previous,
            recovery_address: owner_address(&txn, owner).await?,
            stopped: stop_unmet(&txn, owner).await?,
        };
        self.commit_with(txn, &change, effects, now).await?;
        Ok(change)
    }

    /// The owner's contacts (expired invitations left out), oldest invitation first, and its
    /// threshold.
    #[tracing::instrument(name = "db.recovery_contacts", skip_all)]
    pub async fn recovery_contacts(
        &self,
        owner: &str,
        now: i64,
    ) -> Result<(Vec<RecoveryContact>, i32), StorageError> {
        let db = self.reader();
        let contacts = recovery_contact::Entity::find()
            .filter(C::OwnerAccountId.eq(owner))
            .filter(
                Condition::any()
                    .add(C::AcceptedAt.is_not_null())
                    .add(C::ExpiresAt.gt(now)),
            )
            .order_by_asc(C::InvitedAt)
            .order_by_asc(C::ContactAccountId)
            .all(db)
            .await?
            .into_iter()
            .map(to_contact)
            .collect();
        Ok((contacts, threshold_of(db, owner).await?))
    }

    /// The account's enrolment (live or revoked) and its contacts at a glance, in one
    /// statement (a status read is one round trip).
    #[tracing::instrument(name = "db.recovery_status", skip_all)]
    pub async fn recovery_status(
        &self,
        owner: &str,
        after_completes_ms: i64,
        now: i64,
    ) -> Result<(Option<crate::model::Enrollment>, ContactSummary), StorageError> {
        const SQL: &str = "SELECT e.*, \
            (SELECT COUNT(*) FROM recovery_contacts \
              WHERE owner_account_id = $1 AND active_from <= $2) AS contacts_active, \
            (SELECT threshold FROM recovery_contact_settings WHERE account_id = $1) \
              AS contacts_threshold, \
            (SELECT COUNT(*) FROM contact_flows WHERE account_id = $1 \
              AND completed_at IS NULL AND ended_at IS NULL \
              AND ((completes_at IS NULL AND expires_at > $2) \
                OR (completes_at IS NOT NULL AND completes_at + $3 > $2))) AS contacts_open, \
            (SELECT MIN(completes_at) FROM contact_flows WHERE account_id = $1 \
              AND completed_at IS NULL AND ended_at IS NULL \
              AND completes_at IS NOT NULL AND completes_at + $3 > $2) AS contacts_completes_at \
            FROM (SELECT 1 AS probe) AS probe \
            LEFT JOIN recovery_enrollments e ON e.account_id = $1";
        let sql = match self.backend() {
            crate::Backend::Postgres => SQL.to_owned(),
            crate::Backend::Sqlite => SQL.replace('$', "?"),
        };
        let rows = self
            .reader()
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                self.db().get_database_backend(),
                sql,
                [owner.into(), now.into(), after_completes_ms.into()],
            ))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok((None, ContactSummary::default()));
        };
        let enrolled = row.try_get::<Option<String>>("", "account_id")?.is_some();
        let enrollment = if enrolled {
            use sea_orm::FromQueryResult as _;
            Some(super::recovery_code::to_enrollment(
                enrollment::Model::from_query_result(&row, "")?,
            ))
        } else {
            None
        };
        let summary = ContactSummary {
            active: row.try_get::<i64>("", "contacts_active")?,
            threshold: row.try_get::<Option<i32>>("", "contacts_threshold")?,
            open_flows: row.try_get::<i64>("", "contacts_open")?,
            completes_at: row
                .try_get::<Option<i64>>("", "contacts_completes_at")?
                .map(Timestamp::from_ms),
        };
        Ok((enrollment, summary))
    }

    /// Begins a contact flow for whoever typed an address: `enrolled_lookup` finds the
    /// account that recovers with it (if any) inside the transaction. The same statements run
    /// whether or not one does. Over `per_account` begins within `window_ms` for that account
    /// (for that typed address when none), answers [`BeginContact::Limited`].
    #[tracing::instrument(name = "db.begin_contact_recovery", skip_all)]
    pub async fn begin_contact_recovery<R: IntoEffects>(
        &self,
        new: NewContactFlow,
        enrolled_lookup: &str,
        per_account: i64,
        window_ms: i64,
        effects: impl FnOnce(&ContactStart) -> R,
    ) -> Result<BeginContact, ChangeError<R::Error>> {
        let now = new.created_at.as_ms();
        let txn = self.db().begin().await?;
        let owner: Option<String> = enrollment::Entity::find()
            .select_only()
            .column(enrollment::Column::AccountId)
            .filter(enrollment::Column::EmailLookup.eq(enrolled_lookup))
            .filter(enrollment::Column::CodeHash.is_not_null())
            .into_tuple()
            .one(&txn)
            .await?;
        let key = owner.as_deref().unwrap_or(&new.email_lookup);
        lock_accounts(self.backend(), &txn, [key]).await?;
        let same = match &owner {
            Some(account) => F::AccountId.eq(account.as_str()),
            None => F::EmailLookup.eq(new.email_lookup.as_str()),
        };
        let since = now - window_ms;
        let begun: Vec<i64> = contact_flow::Entity::find()
            .select_only()
            .column(F::CreatedAt)
            .filter(same)
            .filter(F::CreatedAt.gt(since))
            .order_by_desc(F::CreatedAt)
            .into_tuple()
            .all(&txn)
            .await?;
        if i64::try_from(begun.len()).unwrap_or(i64::MAX) >= per_account {
            // The begin that must leave the window before another is allowed.
            let index = usize::try_from(Ord::max(per_account, 1) - 1).unwrap_or(0);
            let oldest = begun.get(index).copied().unwrap_or(now);
            return Ok(BeginContact::Limited {
                retry_after_ms: Ord::max(oldest + window_ms - now, 1),
            });
        }
        let account = owner.as_deref().unwrap_or("");
        let active_contacts = active_contacts(&txn, account, now).await?;
        let threshold = threshold_of(&txn, account).await?;
        let recovery_address = owner_address(&txn, account).await?;
        contact_flow::Entity::insert(contact_flow::ActiveModel {
            contact_flow_id: Set(new.contact_flow_id),
            account_id: Set(owner.clone()),
            email_lookup: Set(new.email_lookup),
            code_mac: Set(new.code_mac.0),
            mac_key_id: Set(new.mac_key_id),
            threshold: Set(threshold),
            created_at: Set(now),
            expires_at: Set(new.expires_at.as_ms()),
            completes_at: Set(None),
            completed_at: Set(None),
            ended_at: Set(None),
            end_reason: Set(None),
            ended_by: Set(None),
            client_ip: Set(new.client.ip),
            client_user_agent: Set(new.client.user_agent),
        })
        .exec(&txn)
        .await?;
        let start = ContactStart {
            account_id: owner,
            recovery_address,
            active_contacts,
            threshold,
        };
        self.commit_with(txn, &start, effects, now).await?;
        Ok(BeginContact::Started(start))
    }

    /// The contact flow with this id.
    #[tracing::instrument(name = "db.find_contact_flow", skip_all)]
    pub async fn find_contact_flow(
        &self,
        contact_flow_id: &str,
    ) -> Result<Option<ContactFlow>, StorageError> {
        flow_by_id(self.reader(), contact_flow_id).await
    }

    /// The open flows of the owners `contact` is an active contact of, newest first, each
    /// with whether the contact vouched for it.
    #[tracing::instrument(name = "db.contact_requests", skip_all)]
    pub async fn contact_requests(
        &self,
        contact: &str,
        after_completes_ms: i64,
        now: i64,
    ) -> Result<Vec<ContactRequest>, StorageError> {
        let db = self.reader();
        let owners: Vec<String> = recovery_contact::Entity::find()
            .select_only()
            .column(C::OwnerAccountId)
            .filter(C::ContactAccountId.eq(contact))
            .filter(C::ActiveFrom.lte(now))
            .into_tuple()
            .all(db)
            .await?;
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let flows: Vec<ContactFlow> = contact_flow::Entity::find()
            .filter(F::AccountId.is_in(owners))
            .filter(open())
            .order_by_desc(F::CreatedAt)
            .all(db)
            .await?
            .into_iter()
            .map(to_flow)
            .filter(|f| f.expiry(after_completes_ms).as_ms() > now)
            .collect();
        let vouched: Vec<String> = contact_vouch::Entity::find()
            .select_only()
            .column(V::ContactFlowId)
            .filter(V::ContactAccountId.eq(contact))
            .filter(V::VouchedAt.is_not_null())
            .filter(V::ContactFlowId.is_in(flows.iter().map(|f| f.contact_flow_id.clone())))
            .into_tuple()
            .all(db)
            .await?;
        Ok(flows
            .into_iter()
            .map(|flow| ContactRequest {
                vouched: vouched.contains(&flow.contact_flow_id),
                flow,
            })
            .collect())
    }

    /// Counts one submission of a confirmation code by `contact` on the flow (at most `cap`),
    /// and when `matches`, records its vouch once and starts the waiting period
    /// (`wait_ms`) when the vouches meet the threshold; in one transaction under the owner's
    /// lock. A contact that vouched for this owner on another flow within `cooldown_ms` is
    /// refused before anything is counted.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "db.vouch_for_recovery", skip_all)]
    pub async fn vouch_for_recovery<R: IntoEffects>(
        &self,
        contact_flow_id: &str,
        contact: &str,
        matches: bool,
        cap: i32,
        cooldown_ms: i64,
        wait_ms: i64,
        now: i64,
        effects: impl FnOnce(&VouchOutcome) -> R,
    ) -> Result<Result<VouchOutcome, ContactFlowRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let Some(flow) = locked_flow(self, &txn, contact_flow_id, contact).await? else {
            return Ok(Err(ContactFlowRefusal::NotFound));
        };
        if flow.completed_at.is_some() || flow.ended_at.is_some() {
            return Ok(Err(ContactFlowRefusal::Ended));
        }
        if flow.expires_at.as_ms() <= now {
            return Ok(Err(ContactFlowRefusal::Expired));
        }
        let Some(owner) = flow.account_id.clone() else {
            return Ok(Err(ContactFlowRefusal::NotContact));
        };
        let active = find_contact(&txn, &owner, contact)
            .await?
            .is_some_and(|c| c.active_from.is_some_and(|from| from.as_ms() <= now));
        if !active {
            return Ok(Err(ContactFlowRefusal::NotContact));
        }
        let mine = super::by_key(
            contact_vouch::Entity::find_by_id((contact_flow_id.to_owned(), contact.to_owned())),
            &txn,
        )
        .await?;
        if let Some(given) = mine.as_ref().filter(|v| v.vouched_at.is_some()) {
            // One vouch per contact per flow: nothing more is counted or written.
            if !matches {
                return Ok(Ok(VouchOutcome::Mismatch {
                    attempts_left: Ord::max(cap - given.attempts, 0),
                }));
            }
            let outcome = VouchOutcome::Vouched(Box::new(Vouch {
                vouches: vouches_on(&txn, contact_flow_id).await?,
                flow,
                repeated: true,
                pending_started: false,
                recovery_address: None,
                contacts: Vec::new(),
            }));
            return Ok(Ok(outcome));
        }
        let last: Option<Option<i64>> = contact_vouch::Entity::find()
            .select_only()
            .column_as(V::VouchedAt.max(), "last")
            .filter(V::ContactAccountId.eq(contact))
            .filter(V::OwnerAccountId.eq(owner.as_str()))
            .filter(V::ContactFlowId.ne(contact_flow_id))
            .into_tuple()
            .one(&txn)
            .await?;
        if let Some(at) = last.flatten().filter(|at| at + cooldown_ms > now) {
            return Ok(Err(ContactFlowRefusal::Cooldown {
                retry_after_ms: at + cooldown_ms - now,
            }));
        }
        if mine.is_none() {
            contact_vouch::Entity::insert(contact_vouch::ActiveModel {
                contact_flow_id: Set(contact_flow_id.to_owned()),
                contact_account_id: Set(contact.to_owned()),
                owner_account_id: Set(owner.clone()),
                attempts: Set(0),
                vouched_at: Set(None),
            })
            .exec(&txn)
            .await?;
        }
        let counted = contact_vouch::Entity::update_many()
            .col_expr(V::Attempts, Expr::col(V::Attempts).add(1))
            .filter(V::ContactFlowId.eq(contact_flow_id))
            .filter(V::ContactAccountId.eq(contact))
            .filter(V::Attempts.lt(cap))
            .filter(V::VouchedAt.is_null())
            .exec_with_returning(&txn)
            .await?;
        let Some(used) = counted.first().map(|v| v.attempts) else {
            return Ok(Err(ContactFlowRefusal::TooManyAttempts));
        };
        let outcome = if matches {
            contact_vouch::Entity::update_many()
                .col_expr(V::VouchedAt, Expr::value(Some(now)))
                .filter(V::ContactFlowId.eq(contact_flow_id))
                .filter(V::ContactAccountId.eq(contact))
                .filter(V::VouchedAt.is_null())
                .exec(&txn)
                .await?;
            let vouches = vouches_on(&txn, contact_flow_id).await?;
            let mut flow = flow;
            let pending_started =
                flow.completes_at.is_none() && vouches >= i64::from(flow.threshold);
            if pending_started {
                let completes_at = now + wait_ms;
                contact_flow::Entity::update_many()
                    .col_expr(F::CompletesAt, Expr::value(Some(completes_at)))
                    .filter(F::ContactFlowId.eq(contact_flow_id))
                    .filter(F::CompletesAt.is_null())
                    .exec(&txn)
                    .await?;
                flow.completes_at = Some(Timestamp::from_ms(completes_at));
            }
            VouchOutcome::Vouched(Box::new(Vouch {
                recovery_address: owner_address(&txn, &owner).await?,
                contacts: active_contacts(&txn, &owner, now).await?,
                flow,
                repeated: false,
                vouches,
                pending_started,
            }))
        } else {
            VouchOutcome::Mismatch {
                attempts_left: cap - used,
            }
        };
        self.commit_with(txn, &outcome, effects, now).await?;
        Ok(Ok(outcome))
    }

    /// Cancels an open flow, for its owner or an active contact of the owner.
    #[tracing::instrument(name = "db.cancel_contact_recovery", skip_all)]
    pub async fn cancel_contact_recovery<R: IntoEffects>(
        &self,
        contact_flow_id: &str,
        actor: &str,
        after_completes_ms: i64,
        now: i64,
        effects: impl FnOnce(&ContactFlowEnd) -> R,
    ) -> Result<Result<ContactFlowEnd, ContactFlowRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let Some(flow) = locked_flow(self, &txn, contact_flow_id, actor).await? else {
            return Ok(Err(ContactFlowRefusal::NotFound));
        };
        if let Some(refusal) = closed(&flow, after_completes_ms, now) {
            return Ok(Err(refusal));
        }
        let owner = flow.account_id.clone().unwrap_or_default();
        let allowed = !owner.is_empty()
            && (actor == owner
                || find_contact(&txn, &owner, actor)
                    .await?
                    .is_some_and(|c| c.active_from.is_some_and(|from| from.as_ms() <= now)));
        if !allowed {
            return Ok(Err(ContactFlowRefusal::NotContact));
        }
        let ended = end_contact_flows(
            &txn,
            Condition::all().add(F::ContactFlowId.eq(contact_flow_id)),
            ContactEnd::Cancelled,
            actor,
            now,
        )
        .await?;
        let Some(flow) = ended.into_iter().next() else {
            return Ok(Err(ContactFlowRefusal::Ended));
        };
        let end = ContactFlowEnd {
            recovery_address: owner_address(&txn, &owner).await?,
            contacts: active_contacts(&txn, &owner, now).await?,
            flow,
            vouched_by: Vec::new(),
            revoked_code_id: None,
            recovered: RecoveryCompletion::default(),
        };
        self.commit_with(txn, &end, effects, now).await?;
        Ok(Ok(end))
    }

    /// Completes a flow whose waiting period ended, once: revokes the account's enrolment of
    /// either kind (if live), ends its assisted flows and its other contact flows, in one
    /// transaction. Lock order as `recover_account`: the enrolment's row, then the account.
    #[tracing::instrument(name = "db.complete_contact_recovery", skip_all)]
    pub async fn complete_contact_recovery<R: IntoEffects>(
        &self,
        contact_flow_id: &str,
        after_completes_ms: i64,
        now: i64,
        effects: impl FnOnce(&ContactFlowEnd) -> R,
    ) -> Result<Result<ContactFlowEnd, ContactFlowRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let Some(seen) = flow_by_id(&txn, contact_flow_id).await? else {
            return Ok(Err(ContactFlowRefusal::NotFound));
        };
        let Some(owner) = seen.account_id.clone() else {
            // A flow for an address no account recovers with: it never completes, and says
            // so as a flow whose vouches are not met does.
            return Ok(Err(closed(&seen, after_completes_ms, now)
                .unwrap_or(ContactFlowRefusal::Pending { completes_at: None })));
        };
        let enrolment = super::by_key(
            enrollment::Entity::find_by_id(owner.clone()).lock_exclusive(),
            &txn,
        )
        .await?;
        lock_accounts(self.backend(), &txn, [owner.as_str()]).await?;
        let Some(flow) = flow_by_id(&txn, contact_flow_id).await? else {
            return Ok(Err(ContactFlowRefusal::NotFound));
        };
        if let Some(refusal) = closed(&flow, after_completes_ms, now) {
            return Ok(Err(refusal));
        }
        match flow.completes_at {
            Some(at) if at.as_ms() <= now => {}
            completes_at => return Ok(Err(ContactFlowRefusal::Pending { completes_at })),
        }
        let vouched_by: Vec<String> = contact_vouch::Entity::find()
            .select_only()
            .column(V::ContactAccountId)
            .filter(V::ContactFlowId.eq(contact_flow_id))
            .filter(V::VouchedAt.is_not_null())
            .order_by_asc(V::ContactAccountId)
            .into_tuple()
            .all(&txn)
            .await?;
        // Removals stop a waiting period they leave unmet; checked again all the same.
        if i64::try_from(vouched_by.len()).unwrap_or(0) < i64::from(flow.threshold) {
            return Ok(Err(ContactFlowRefusal::Pending { completes_at: None }));
        }
        let done = contact_flow::Entity::update_many()
            .col_expr(F::CompletedAt, Expr::value(Some(now)))
            .filter(F::ContactFlowId.eq(contact_flow_id))
            .filter(F::CompletedAt.is_null())
            .filter(F::EndedAt.is_null())
            .exec(&txn)
            .await?;
        if done.rows_affected != 1 {
            return Ok(Err(ContactFlowRefusal::Ended));
        }
        let mut flow = flow;
        flow.completed_at = Some(Timestamp::from_ms(now));
        let mut revoked_code_id = None;
        let mut recovery_address = None;
        if let Some(row) = &enrolment {
            recovery_address = Some(row.email.clone());
        }
        if let Some(row) = enrolment.filter(|e| e.code_hash.is_some()) {
            if !super::recovery_code::retire(&txn, &row.account_id, row.generation, now).await? {
                return Err(StorageError::Other(
                    "the account's recovery enrolment could not be revoked".into(),
                )
                .into());
            }
            revoked_code_id = row.code_id;
        }
        let recovered = end_other_paths(self.backend(), &txn, &owner, contact_flow_id, now).await?;
        let end = ContactFlowEnd {
            recovery_address,
            contacts: active_contacts(&txn, &owner, now).await?,
            flow,
            vouched_by,
            revoked_code_id,
            recovered,
        };
        self.commit_with(txn, &end, effects, now).await?;
        Ok(Ok(end))
    }

    /// Writes a change's effects (`effects` sees `answer`) and commits.
    async fn commit_with<T, R: IntoEffects>(
        &self,
        txn: sea_orm::DatabaseTransaction,
        answer: &T,
        effects: impl FnOnce(&T) -> R,
        now: i64,
    ) -> Result<(), ChangeError<R::Error>> {
        self.apply_effects(
            &txn,
            effects(answer)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// What a recovery of `account` by any path ends besides the flow that recovered it: the
/// account's assisted flows (with its membership and its family's organizers, to be told) and
/// its open contact flows other than `except`.
pub(crate) async fn end_other_paths<D: ConnectionTrait>(
    backend: crate::Backend,
    txn: &D,
    account: &str,
    except: &str,
    now: i64,
) -> Result<RecoveryCompletion, StorageError> {
    let ended_assisted = super::family::end_flows(
        txn,
        Condition::all().add(crate::entity::assisted_flow::Column::MemberAccountId.eq(account)),
        crate::model::AssistedEnd::MemberRecovered,
        Some(account),
        now,
    )
    .await?;
    let (member, organizers) = match ended_assisted.first() {
        Some(flow) => (
            super::by_key(
                crate::entity::family_member::Entity::find_by_id(account.to_owned()),
                txn,
            )
            .await?
            .and_then(super::family::to_member),
            super::family::organizers_of(txn, &flow.family_id).await?,
        ),
        None => (None, Vec::new()),
    };
    Ok(RecoveryCompletion {
        use_count: 0,
        ended_assisted,
        member,
        organizers,
        ended_contact: end_contact_flows_of(backend, txn, account, except, now).await?,
    })
}

/// Ends the account's open contact flows other than `except` (`recovered`).
/// Takes the account's lock first (as every contact change does before it writes a flow),
/// so that a recovery holding the enrolment's row and a vouch holding the account's lock never
/// wait on each other.
pub(crate) async fn end_contact_flows_of<D: ConnectionTrait>(
    backend: crate::Backend,
    txn: &D,
    account: &str,
    except: &str,
    now: i64,
) -> Result<Vec<ContactFlow>, StorageError> {
    lock_accounts(backend, txn, [account]).await?;
    end_contact_flows(
        txn,
        Condition::all()
            .add(F::AccountId.eq(account))
            .add(F::ContactFlowId.ne(except)),
        ContactEnd::Recovered,
        account,
        now,
    )
    .await
}

/// Ends every open flow matching `which` (one conditional update), recording why and by whom.
async fn end_contact_flows<D: ConnectionTrait>(
    txn: &D,
    which: Condition,
    reason: ContactEnd,
    by: &str,
    now: i64,
) -> Result<Vec<ContactFlow>, StorageError> {
    let rows = contact_flow::Entity::update_many()
        .col_expr(F::EndedAt, Expr::value(Some(now)))
        .col_expr(F::EndReason, Expr::value(Some(reason.as_str())))
        .col_expr(F::EndedBy, Expr::value(Some(by.to_owned())))
        .filter(which)
        .filter(open())
        .exec_with_returning(txn)
        .await?;
    let mut flows: Vec<ContactFlow> = rows.into_iter().map(to_flow).collect();
    flows.sort_by(|a, b| a.contact_flow_id.cmp(&b.contact_flow_id));
    Ok(flows)
}

/// Neither completed nor ended (expiry aside).
fn open() -> Condition {
    Condition::all()
        .add(F::CompletedAt.is_null())
        .add(F::EndedAt.is_null())
}

/// Why the flow cannot be cancelled or completed at `now`, if it cannot.
fn closed(flow: &ContactFlow, after_completes_ms: i64, now: i64) -> Option<ContactFlowRefusal> {
    if flow.completed_at.is_some() || flow.ended_at.is_some() {
        Some(ContactFlowRefusal::Ended)
    } else if flow.expiry(after_completes_ms).as_ms() <= now {
        Some(ContactFlowRefusal::Expired)
    } else {
        None
    }
}

/// The flow, read again after taking its owner's lock and the acting account's (a flow of no
/// account takes none: nothing can change it but its expiry).
async fn locked_flow(
    storage: &Storage,
    txn: &sea_orm::DatabaseTransaction,
    contact_flow_id: &str,
    actor: &str,
) -> Result<Option<ContactFlow>, StorageError> {
    let Some(flow) = flow_by_id(txn, contact_flow_id).await? else {
        return Ok(None);
    };
    let Some(owner) = flow.account_id.as_deref() else {
        return Ok(Some(flow));
    };
    // The actor's too: a forget of the contact (which takes its lock) waits for this step, or
    // this step sees the contact gone.
    lock_accounts(storage.backend(), txn, [owner, actor]).await?;
    flow_by_id(txn, contact_flow_id).await
}

/// Withdraws the vouches given on `owner`'s open flows (by `contact`, or by anyone): the
/// count removed.
pub(crate) async fn withdraw_vouches<D: ConnectionTrait>(
    txn: &D,
    owner: &str,
    contact: Option<&str>,
    now: i64,
) -> Result<u64, StorageError> {
    let open_flows = contact_flow::Entity::find()
        .select_only()
        .column(F::ContactFlowId)
        .filter(F::AccountId.eq(owner))
        .filter(open())
        .filter(
            Condition::any()
                .add(F::ExpiresAt.gt(now))
                .add(F::CompletesAt.is_not_null()),
        )
        .into_query();
    let mut which = contact_vouch::Entity::delete_many()
        .filter(V::OwnerAccountId.eq(owner))
        .filter(V::ContactFlowId.in_subquery(open_flows));
    if let Some(contact) = contact {
        which = which.filter(V::ContactAccountId.eq(contact));
    }
    Ok(which.exec(txn).await?.rows_affected)
}

/// Stops each waiting period of `owner`'s open flows whose vouches no longer meet its
/// threshold; answers those flows as they now are.
pub(crate) async fn stop_unmet<D: ConnectionTrait>(
    txn: &D,
    owner: &str,
) -> Result<Vec<ContactFlow>, StorageError> {
    let pending: Vec<ContactFlow> = contact_flow::Entity::find()
        .filter(F::AccountId.eq(owner))
        .filter(F::CompletesAt.is_not_null())
        .filter(open())
        .all(txn)
        .await?
        .into_iter()
        .map(to_flow)
        .collect();
    let mut stopped = Vec::new();
    for mut flow in pending {
        if vouches_on(txn, &flow.contact_flow_id).await? >= i64::from(flow.threshold) {
            continue;
        }
        contact_flow::Entity::update_many()
            .col_expr(F::CompletesAt, Expr::value(Option::<i64>::None))
            .filter(F::ContactFlowId.eq(flow.contact_flow_id.as_str()))
            .exec(txn)
            .await?;
        flow.completes_at = None;
        stopped.push(flow);
    }
    Ok(stopped)
}

/// The address of the account's enrolment, live or revoked (`None` without one): where its
/// owner hears of every contact change and step, even after a stolen session revoked the code.
async fn owner_address<D: ConnectionTrait>(
    db: &D,
    account_id: &str,
) -> Result<Option<String>, StorageError> {
    Ok(enrollment::Entity::find_by_id(account_id.to_owned())
        .select_only()
        .column(enrollment::Column::Email)
        .into_tuple()
        .one(db)
        .await?)
}

/// The vouches given on a flow.
async fn vouches_on<D: ConnectionTrait>(
    txn: &D,
    contact_flow_id: &str,
) -> Result<i64, StorageError> {
    let n = contact_vouch::Entity::find()
        .filter(V::ContactFlowId.eq(contact_flow_id))
        .filter(V::VouchedAt.is_not_null())
        .count(txn)
        .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The contact flow with this id.
async fn flow_by_id<D: ConnectionTrait>(
    db: &D,
    contact_flow_id: &str,
) -> Result<Option<ContactFlow>, StorageError> {
    Ok(super::by_key(
        contact_flow::Entity::find_by_id(contact_flow_id.to_owned()),
        db,
    )
    .await?
    .map(to_flow))
}

/// The owner's threshold (the default when never set).
async fn threshold_of<D: ConnectionTrait>(db: &D, owner: &str) -> Result<i32, StorageError> {
    Ok(super::by_key(
        recovery_contact_setting::Entity::find_by_id(owner.to_owned()),
        db,
    )
    .await?
    .map_or(DEFAULT_THRESHOLD, |s| s.threshold))
}

/// The owner's contacts active at `now`.
async fn active_contacts<D: ConnectionTrait>(
    txn: &D,
    owner: &str,
    now: i64,
) -> Result<Vec<RecoveryContact>, StorageError> {
    Ok(recovery_contact::Entity::find()
        .filter(C::OwnerAccountId.eq(owner))
        .filter(C::ActiveFrom.lte(now))
        .order_by_asc(C::ContactAccountId)
        .all(txn)
        .await?
        .into_iter()
        .map(to_contact)
        .collect())
}

async fn find_contact<D: ConnectionTrait>(
    txn: &D,
    owner: &str,
    contact: &str,
) -> Result<Option<RecoveryContact>, StorageError> {
    Ok(super::by_key(
        recovery_contact::Entity::find_by_id((owner.to_owned(), contact.to_owned())),
        txn,
    )
    .await?
    .map(to_contact))
}

fn to_contact(row: recovery_contact::Model) -> RecoveryContact {
    RecoveryContact {
        owner_account_id: row.owner_account_id,
        contact_account_id: row.contact_account_id,
        contact_email: row.contact_email,
        invited_at: Timestamp::from_ms(row.invited_at),
        expires_at: Timestamp::from_ms(row.expires_at),
        accepted_at: row.accepted_at.map(Timestamp::from_ms),
        active_from: row.active_from.map(Timestamp::from_ms),
    }
}

pub(crate) fn to_flow(row: contact_flow::Model) -> ContactFlow {
    ContactFlow {
        end_reason: row.end_reason.as_deref().and_then(ContactEnd::parse),
        contact_flow_id: row.contact_flow_id,
        account_id: row.account_id,
        code_mac: Opaque(row.code_mac),
        mac_key_id: row.mac_key_id,
        threshold: row.threshold,
        created_at: Timestamp::from_ms(row.created_at),
        expires_at: Timestamp::from_ms(row.expires_at),
        completes_at: row.completes_at.map(Timestamp::from_ms),
        completed_at: row.completed_at.map(Timestamp::from_ms),
        ended_at: row.ended_at.map(Timestamp::from_ms),
        ended_by: row.ended_by,
        client: ClientInfo {
            ip: row.client_ip,
            user_agent: row.client_user_agent,
        },
    }
}
