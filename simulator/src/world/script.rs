//! The scenario's conversation script as the members play it: creating
//! the conversation, script steps (messages, receipts, membership changes,
//! head-proof rounds), composing and submitting with the real client, the
//! router's replies, and the end-of-run audit.

use super::events::{Event, Purpose};
use super::member_node::MemberNode;
use super::member_toolkit;
use super::{Composed, DOWNTIME, MS, STEP_RETRIES, SimError, World};
use crate::scenario::Step;
use crate::view::SentRecord;
use grompi_client_core::Conversation;
use grompi_client_core::content::{Change, Content, MemberEntry, UpdateContent, Visibility};
use grompi_proto::pb;
use grompi_proto::{AccountId, SlotIndex, SlotRole, SlotSet};
use grompi_router::core::{Call, Response, Submission};

/// Most envelopes a member asks for in one history page (the router
/// clamps it to its `max_fetch`, and cuts pages at its byte bound).
const HISTORY_PAGE: u32 = 64;

impl World {
    pub(super) fn step(&mut self, k: usize) -> Result<(), SimError> {
        let Some(step) = self.scenario.script.get(k).cloned() else {
            return Ok(());
        };
        self.adversary_step(k)?;
        let Some(actor) = self.members.iter().position(|m| m.name == step.from) else {
            return Ok(());
        };
        if step.prove_heads {
            self.prove_heads(actor);
            return Ok(());
        }
        if !self.members[actor].active() {
            let tries = self.step_attempts.entry(k).or_default();
            *tries += 1;
            if *tries <= STEP_RETRIES {
                self.sched.after(200 * MS, Event::Step(k));
            } else {
                self.notes
                    .push(format!("step {k}: {} never became able to send", step.from));
            }
            return Ok(());
        }
        if let Some(what) = step.misbehave {
            self.misbehave(actor, k, what);
            return Ok(());
        }
        if step.read_history {
            self.read_history(actor, k);
            return Ok(());
        }
        if let Some(change) = self.change_of(actor, &step) {
            self.prepare_update(actor, k, change, false, false);
            return Ok(());
        }
        let content = if let Some(text) = &step.send {
            self.sent.push(SentRecord {
                from: step.from.clone(),
                plaintext: text.clone(),
            });
            Content::Message(text.as_bytes().to_vec())
        } else if step.rekey {
            Content::Rekey
        } else if step.receipt {
            match self.members[actor]
                .conversation()
                .and_then(Conversation::receipt)
            {
                Some(c) => c,
                None => return Ok(()),
            }
        } else {
            return Ok(());
        };
        self.compose_and_submit(actor, Some(k), content, 0);
        Ok(())
    }

    /// Asks the router for the next slot set of `change`; `swap` (a
    /// compromised admin) swaps two members' slots in the Update it sends;
    /// `unchecked` (a compromised admin) sends it even if its client's
    /// rules refuse it.
    pub(super) fn prepare_update(
        &mut self,
        actor: usize,
        step: usize,
        change: Change,
        swap: bool,
        unchecked: bool,
    ) {
        let Some(next) = self.next_members(actor, &change) else {
            self.notes
                .push(format!("step {step}: the change does not apply"));
            return;
        };
        self.send(Event::ToRouter {
            from: actor,
            call: Call::PrepareUpdate(self.conversation, next),
            purpose: Purpose::Prepare {
                step,
                change,
                swap,
                unchecked,
            },
        });
    }

    fn change_of(&self, actor: usize, step: &Step) -> Option<Change> {
        let account_of = |name: &String| {
            self.members
                .iter()
                .find(|m| &m.name == name)
                .map(|m| m.account)
        };
        if let Some(name) = &step.add {
            return Some(Change::Add {
                account: account_of(name)?,
                role: SlotRole::Member,
            });
        }
        if let Some(name) = &step.remove {
            return Some(Change::Remove {
                account: account_of(name)?,
            });
        }
        if step.leave {
            let _ = actor;
            return Some(Change::Leave);
        }
        None
    }

    /// The complete next member list after `change`, from the actor's view.
    fn next_members(&self, actor: usize, change: &Change) -> Option<Vec<(AccountId, SlotRole)>> {
        let m = self.members.get(actor)?;
        let mut roster = m.conversation()?.membership()?.members().clone();
        match change {
            Change::Add { account, role } => {
                roster.insert(*account, *role);
            }
            Change::Remove { account } => {
                roster.remove(account)?;
            }
            Change::Leave => {
                roster.remove(&m.account)?;
            }
            Change::SetRole { account, role } => {
                roster.insert(*account, *role);
            }
            Change::SetHistory => {}
        }
        // In member order, not account-id order (see `effects`).
        let mut list: Vec<(AccountId, SlotRole)> = roster.into_iter().collect();
        list.sort_by_key(|(a, _)| self.by_account.get(a).copied());
        Some(list)
    }

    pub(super) fn compose_and_submit(
        &mut self,
        actor: usize,
        step: Option<usize>,
        content: Content,
        attempt: u32,
    ) {
        let now = self.now();
        let Self { sched, members, .. } = self;
        let Some(m) = members.get_mut(actor) else {
            return;
        };
        let composed = match m.compose(content.clone(), sched.rng()) {
            Ok(c) => c,
            Err(e) => {
                self.notes.push(format!(
                    "{} could not compose step {:?}: {e}",
                    self.members[actor].name, step
                ));
                return;
            }
        };
        self.submit_composed(actor, step, Some(content), attempt, composed, now);
    }

    pub(super) fn submit_composed(
        &mut self,
        actor: usize,
        step: Option<usize>,
        content: Option<Content>,
        attempt: u32,
        composed: grompi_client_core::compose::Composed,
        now: u64,
    ) {
        let hash = composed.envelope.hash();
        self.composed.insert(
            *hash.as_bytes(),
            Composed {
                step,
                sender: actor,
                submitted_at: now,
                tags: composed.submission_tags.clone(),
                refused: false,
            },
        );
        self.send(Event::ToRouter {
            from: actor,
            call: Call::Submit(Submission {
                envelope: composed.envelope,
                tags: composed.submission_tags,
            }),
            purpose: Purpose::Submit {
                step,
                content: content.map(Box::new),
                attempt,
                hash: *hash.as_bytes(),
            },
        });
    }

    pub(super) fn reply(&mut self, to: usize, purpose: Purpose, result: Result<Response, String>) {
        match (purpose, result) {
            (Purpose::Retry { call, inner }, _) => {
                // The router was down: the client tries again later.
                self.measure.messages += 1;
                self.sched.after(
                    DOWNTIME,
                    Event::ToRouter {
                        from: to,
                        call: *call,
                        purpose: *inner,
                    },
                );
            }
            (Purpose::Create, Ok(Response::Created(resp))) => self.created(to, resp),
            (
                Purpose::Prepare {
                    step,
                    change,
                    swap,
                    unchecked,
                },
                Ok(Response::Prepared(resp)),
            ) => {
                // The next epoch keeps the conversation's history policy.
                let history = self
                    .members
                    .get(to)
                    .and_then(|m| m.conversation())
                    .map(|c| c.history_visibility())
                    .unwrap_or_else(|| self.scenario.network.history.visibility());
                let Some(mut update) =
                    update_content(change, resp.slots, &resp.assignments, history)
                else {
                    self.notes.push(format!(
                        "step {step}: the router's next slot set is unusable"
                    ));
                    return;
                };
                if swap {
                    // A compromised admin: two members get each other's slots.
                    let by_account = &self.by_account;
                    let actor = self.members.get(to).map(|m| m.account);
                    let swapped = actor.is_some_and(|a| {
                        member_toolkit::swap_slots(&mut update, a, |x| {
                            by_account.get(x).copied().unwrap_or(usize::MAX)
                        })
                    });
                    if !swapped {
                        self.notes
                            .push(format!("step {step}: no two members to swap"));
                        return;
                    }
                }
                if unchecked {
                    self.submit_unchecked_update(to, step, update);
                    return;
                }
                self.compose_and_submit(to, Some(step), Content::Update(update), 0);
            }
            (Purpose::Submit { .. }, Ok(_)) => {}
            (
                Purpose::Submit {
                    step,
                    content,
                    attempt,
                    hash,
                },
                Err(e),
            ) => {
                if let Some(c) = self.composed.get_mut(&hash) {
                    c.refused = true;
                }
                // Refused by every order server (e.g. composed in an epoch
                // that ended meanwhile): compose again once caught up.
                let retry = content.filter(|c| {
                    attempt < 3 && matches!(**c, Content::Message(_) | Content::Receipt(_))
                });
                if let Some(content) = retry {
                    self.sched.after(
                        500 * MS,
                        Event::Recompose {
                            actor: to,
                            step,
                            content,
                            attempt: attempt + 1,
                        },
                    );
                } else {
                    self.notes
                        .push(format!("submission of step {step:?} failed: {e}"));
                }
            }
            (Purpose::Prove, Ok(Response::ProveHeads(plan))) => self.relay_head_proofs(to, &plan),
            (Purpose::History, Err(e)) => {
                self.notes.push(format!(
                    "{}: reading the history failed: {e}",
                    self.members[to].name
                ));
                if let Some(m) = self.members.get_mut(to) {
                    m.history_failed();
                }
            }
            (purpose, Err(e)) => {
                self.notes.push(format!(
                    "{}: {:?} failed: {e}",
                    self.members[to].name,
                    purpose.name()
                ));
            }
            (purpose, Ok(_)) => {
                self.notes.push(format!(
                    "{}: unexpected reply to {}",
                    self.members[to].name,
                    purpose.name()
                ));
            }
        }
    }

    fn created(&mut self, creator: usize, resp: pb::CreateConversationResponse) {
        let Some(slots) = resp.slots.and_then(|s| SlotSet::try_from(s).ok()) else {
            self.notes.push("the router's slot set is unusable".into());
            return;
        };
        let Some(members) = member_entries(&slots, &resp.assignments) else {
            self.notes
                .push("the router's assignments are unusable".into());
            return;
        };
        let now = self.now();
        let Self {
            sched,
            members: nodes,
            ..
        } = self;
        let Some(m) = nodes.get_mut(creator) else {
            return;
        };
        let period = self.scenario.network.group_period;
        let history = self.scenario.network.history.visibility();
        match m.create(slots, members, period, history, sched.rng()) {
            Ok(composed) => {
                self.submit_composed(creator, None, None, 0, composed, now);
            }
            Err(e) => self
                .notes
                .push(format!("creating the conversation failed: {e}")),
        }
    }

    /// Script step `step`: `actor` starts reading the conversation's
    /// history up to the last index it accepted.
    fn read_history(&mut self, actor: usize, step: usize) {
        match self
            .members
            .get_mut(actor)
            .and_then(MemberNode::start_history)
        {
            Some(from) => self.fetch_history(actor, from),
            None => self.notes.push(format!(
                "step {step}: nothing accepted to read the history against"
            )),
        }
    }

    /// Asks the router for the page of history from index `from`.
    pub(super) fn fetch_history(&mut self, actor: usize, from: grompi_proto::Index) {
        let conversation = self.conversation;
        self.send(Event::ToRouter {
            from: actor,
            call: Call::FetchHistory {
                conversation,
                from,
                limit: HISTORY_PAGE,
            },
            purpose: Purpose::History,
        });
    }

    /// A page of history reaches member `to`: it verifies it, and asks for
    /// the next page while the history is incomplete.
    pub(super) fn history_page(&mut self, to: usize, page: pb::FetchHistoryResponse) {
        let now = self.now();
        let next = self
            .members
            .get_mut(to)
            .and_then(|m| m.history_page(page, now));
        if let Some(from) = next {
            self.fetch_history(to, from);
        }
    }

    fn prove_heads(&mut self, actor: usize) {
        let Self { sched, members, .. } = self;
        let Some(conv) = members
            .get_mut(actor)
            .and_then(MemberNode::conversation_mut)
        else {
            return;
        };
        let nonce = conv.head_proof_nonce(sched.rng());
        let id = self.conversation;
        self.send(Event::ToRouter {
            from: actor,
            call: Call::ProveHeads {
                conversation: id,
                nonce,
            },
            purpose: Purpose::Prove,
        });
    }

    pub(super) fn audit(&mut self) {
        let now = self.now();
        for m in 0..self.members.len() {
            let node = &mut self.members[m];
            if !node.active() {
                continue;
            }
            // As the real client does: a stall is reported only when the
            // member holds deliveries it cannot accept.
            if let Some(c) = node.conversation_mut()
                && c.stuck()
            {
                c.report_stall();
            }
            node.drain(now);
            self.prove_heads(m);
        }
    }
}

/// The member list of a slot set and the router's assignments.
fn member_entries(slots: &SlotSet, assignments: &[pb::SlotAssignment]) -> Option<Vec<MemberEntry>> {
    assignments
        .iter()
        .map(|a| {
            let account = AccountId::parse("assignment.account", &a.account).ok()?;
            let slot = SlotIndex(a.slot);
            let role = slots.get(slot)?.role;
            Some(MemberEntry {
                account,
                role,
                slot,
            })
        })
        .collect()
}

fn update_content(
    change: Change,
    slots: Option<pb::SlotSet>,
    assignments: &[pb::SlotAssignment],
    history: Visibility,
) -> Option<UpdateContent> {
    let next_slots = SlotSet::try_from(slots?).ok()?;
    let next_members = member_entries(&next_slots, assignments)?;
    Some(UpdateContent {
        change,
        next_slots,
        next_members,
        history,
    })
}
