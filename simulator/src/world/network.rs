//! The network in motion: the event loop, message passing with seeded
//! latencies (ordered streams between the router and each order server),
//! the router core's calls, commits and effects, and crashes and restarts.

use super::events::{Event, Purpose};
use super::router_node::RouterOut;
use super::{
    AFTER_AUDIT, COMMIT_DEFERRED, COMMIT_SYNCED, DOWNTIME, LATENCY, MS, POLL, RunOptions,
    SCRIPT_START, SETTLE, STEP_GAP, SimError, World,
};
use grompi_proto::{AccountId, SlotRole};
use grompi_router::core::{Call, Command, Effect, Response};
use grompi_router::fanout::StreamOrder;
use grompi_router::store::Durability;
use rand::RngExt;

impl World {
    pub(super) fn now(&self) -> u64 {
        self.sched.now().0
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.now() / MS
    }

    /// Sends `event` over the network: one message, one seeded latency.
    pub(super) fn send(&mut self, event: Event) {
        self.measure.messages += 1;
        self.sched.after_jitter(LATENCY.0, LATENCY.1, event);
    }

    /// Sends `event` over the ordered stream (router incarnation, branch,
    /// order server) to the server (`to_server`) or back: a seeded latency,
    /// but never ahead of what was sent before it on the stream.
    fn send_on_stream(&mut self, stream: (u64, usize, u32), to_server: bool, event: Event) {
        self.measure.messages += 1;
        let l = self.sched.rng().random_range(LATENCY.0..=LATENCY.1);
        let flying = self.in_flight.entry(stream).or_default();
        if to_server {
            *flying += 1;
            self.max_in_flight = self.max_in_flight.max(*flying);
        }
        let last = self.streams.entry(stream).or_default();
        let slot = &mut last[usize::from(!to_server)];
        let at = self.sched.now().0.saturating_add(l).max(*slot);
        *slot = at;
        self.sched.at(crate::schedule::VirtualTime(at), event);
    }

    /// Performs what the router's event produced, and times the commit it
    /// started, if any.
    fn router_out(&mut self, branch: usize, out: RouterOut) {
        self.effects(branch, out.effects);
        if let Some(durability) = out.commit {
            let (low, high) = match durability {
                Durability::Now => COMMIT_SYNCED,
                Durability::Deferred => COMMIT_DEFERRED,
            };
            let incarnation = self.router.incarnation;
            self.sched.after_jitter(
                low,
                high,
                Event::RouterCommitted {
                    branch,
                    incarnation,
                },
            );
        }
    }

    pub(super) fn send_after(&mut self, extra: u64, event: Event) {
        self.measure.messages += 1;
        let l = self.sched.rng().random_range(LATENCY.0..=LATENCY.1);
        self.sched.after(l.saturating_add(extra), event);
    }

    pub(super) fn play(&mut self, options: RunOptions) -> Result<(), SimError> {
        // The creator (the first admin) creates the conversation.
        let admins = self.scenario.network.admins();
        let creator = admins
            .first()
            .and_then(|a| self.members.iter().position(|m| &m.name == a))
            .unwrap_or(0);
        let initial: Vec<(AccountId, SlotRole)> = self
            .scenario
            .network
            .members
            .iter()
            .filter_map(|name| {
                let i = self.members.iter().position(|m| &m.name == name)?;
                let role = if admins.contains(name) {
                    SlotRole::Admin
                } else {
                    SlotRole::Member
                };
                Some((self.members[i].account, role))
            })
            .collect();
        let roster: Vec<AccountId> = initial.iter().map(|(a, _)| *a).collect();
        for m in &mut self.members {
            if roster.contains(&m.account) {
                m.initial_roster = Some(roster.clone());
            }
        }
        self.send(Event::ToRouter {
            from: creator,
            call: Call::CreateConversation(self.conversation, initial),
            purpose: Purpose::Create,
        });
        let mut at = SCRIPT_START;
        let mut previous = at;
        for k in 0..self.scenario.script.len() {
            // A step `with_previous` runs when the step before it does (no
            // gap is drawn for it, so scenarios without one are unchanged).
            if self.scenario.script[k].with_previous {
                self.sched
                    .at(crate::schedule::VirtualTime(previous), Event::Step(k));
                continue;
            }
            self.sched
                .at(crate::schedule::VirtualTime(at), Event::Step(k));
            previous = at;
            let gap = self.sched.rng().random_range(STEP_GAP.0..=STEP_GAP.1);
            at = at.saturating_add(gap);
        }
        let audit = at.saturating_add(SETTLE);
        if !options.no_audit {
            self.sched
                .at(crate::schedule::VirtualTime(audit), Event::Audit);
        }
        self.horizon = audit.saturating_add(AFTER_AUDIT);
        self.sched.after(POLL, Event::Poll);
        while let Some(event) = self.sched.next_event() {
            if self.now() > self.horizon {
                break;
            }
            self.handle(event)?;
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), SimError> {
        match event {
            Event::Step(k) => self.step(k)?,
            Event::ToRouter {
                from,
                call,
                purpose,
            } => self.call_router(from, call, purpose),
            Event::Reply {
                to,
                purpose,
                result,
            } => self.reply(to, purpose, result),
            Event::Job {
                branch,
                job,
                incarnation,
            } => {
                let s = job.server as usize;
                let tamper = self.adversary.job_tamper();
                let stream = (incarnation, branch, job.server);
                let order = self.stream_order.entry(stream).or_default();
                if !order.admits(&job) {
                    // Its predecessor went on a stream that broke since.
                    let event = Event::JobDone {
                        branch,
                        result: StreamOrder::unsent(&job),
                        incarnation,
                    };
                    self.send_on_stream(stream, false, event);
                } else if let Some(server) = self.servers.get_mut(s) {
                    let result = server.run_job(branch, &job, tamper);
                    if !job.request.items.is_empty() {
                        order.sent(&job);
                    }
                    if result.attest.is_err() {
                        // A failed answer breaks the stream: what follows
                        // it fails unsent, as over the real AttestStream.
                        order.broke();
                    }
                    let event = Event::JobDone {
                        branch,
                        result,
                        incarnation,
                    };
                    // The answer goes back on the stream the job came on.
                    self.send_on_stream((incarnation, branch, job.server), false, event);
                }
            }
            Event::JobDone {
                branch,
                result,
                incarnation,
            } => {
                if let Some(flying) = self
                    .in_flight
                    .get_mut(&(incarnation, branch, result.server))
                {
                    *flying = flying.saturating_sub(1);
                }
                if !self.router.down && incarnation == self.router.incarnation {
                    let now = self.now_ms();
                    let ticket = self.router.ticket();
                    let out = self.router.handle(
                        branch,
                        ticket,
                        Command::JobDone(result),
                        now,
                        self.sched.rng(),
                    );
                    self.router_out(branch, out);
                }
            }
            Event::RouterCommitted {
                branch,
                incarnation,
            } => {
                let out = self.router.committed(branch, incarnation);
                self.router_out(branch, out);
            }
            Event::Deliver { to, delivery } => {
                let now = self.now();
                if let Some(m) = self.members.get_mut(to) {
                    m.receive(delivery, now);
                }
            }
            Event::HistoryPage { to, page } => self.history_page(to, page),
            Event::Proofs { to, proofs } => {
                let now = self.now();
                if let Some(m) = self.members.get_mut(to) {
                    if let Some(c) = m.conversation_mut() {
                        c.check_head_proofs(&proofs);
                    }
                    m.drain(now);
                }
            }
            Event::Poll => {
                if !self.router.down {
                    let now = self.now_ms();
                    for b in 0..self.router.branches.len() {
                        let out = self.router.poll(b, now, self.sched.rng());
                        self.router_out(b, out);
                    }
                }
                if self.now().saturating_add(POLL) <= self.horizon {
                    self.sched.after(POLL, Event::Poll);
                }
            }
            Event::RouterRestart => {
                self.router
                    .restart()
                    .map_err(|e| SimError::Setup(e.to_string()))?;
                self.notes
                    .push(format!("router restarted at {} ms", self.now_ms()));
            }
            Event::ServerRestart(s) => {
                if let Some(server) = self.servers.get_mut(s) {
                    server.restart();
                }
                self.notes.push(format!(
                    "order server {s} restarted at {} ms",
                    self.now_ms()
                ));
            }
            Event::Audit => self.audit(),
            Event::Recompose {
                actor,
                step,
                content,
                attempt,
            } => self.compose_and_submit(actor, step, *content, attempt),
            Event::RouterCrash => {
                self.router.crash();
                // Every call waiting for an answer fails with the
                // connection (its answer, or the commit it waits for, died
                // with the process); the client calls again later.
                for (_, (to, purpose, call)) in std::mem::take(&mut self.tickets) {
                    self.send(Event::Reply {
                        to,
                        purpose: Purpose::Retry {
                            call: Box::new(call),
                            inner: Box::new(purpose),
                        },
                        result: Err("unavailable: the router crashed".into()),
                    });
                }
                self.notes
                    .push(format!("router crashed at {} ms", self.now_ms()));
                self.sched.after(DOWNTIME, Event::RouterRestart);
            }
            Event::ServerCrash { server, restart } => {
                if let Some(s) = self.servers.get_mut(server) {
                    s.crash();
                }
                self.notes.push(format!(
                    "order server {server} went down at {} ms",
                    self.now_ms()
                ));
                if restart {
                    self.sched.after(DOWNTIME, Event::ServerRestart(server));
                }
            }
        }
        Ok(())
    }

    /// The router's branch a member talks to.
    pub(super) fn branch_of(&self, member: usize) -> usize {
        if self.forked {
            self.group_of.get(member).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// Which order servers the router's branch `branch` talks to.
    pub(super) fn serves(&self, branch: usize) -> Vec<bool> {
        self.router
            .branches
            .get(branch)
            .map(|b| b.serves.clone())
            .unwrap_or_default()
    }

    fn call_router(&mut self, from: usize, call: Call, purpose: Purpose) {
        if self.router.down {
            self.send(Event::Reply {
                to: from,
                purpose: Purpose::Retry {
                    call: Box::new(call),
                    inner: Box::new(purpose),
                },
                result: Err("unavailable: the router is down".into()),
            });
            return;
        }
        let Some(token) = self.members.get(from).map(|m| m.token.clone()) else {
            return;
        };
        let branch = self.branch_of(from);
        let ticket = self.router.ticket();
        self.tickets.insert(ticket, (from, purpose, call.clone()));
        let now = self.now_ms();
        let out = self.router.handle(
            branch,
            ticket,
            Command::Authed { token, call },
            now,
            self.sched.rng(),
        );
        self.router_out(branch, out);
    }

    /// Performs a branch's effects, through the router's strategy.
    ///
    /// The core emits one index's deliveries in account-id order, and
    /// account ids come from identity keys the operating system's RNG
    /// made; so deliveries are put in member order (stably) before any
    /// latency is drawn, keeping the run a function of the seed alone.
    pub(super) fn effects(&mut self, branch: usize, mut effects: Vec<Effect>) {
        let rank = |e: &Effect| match e {
            Effect::Deliver { account, .. } => self.by_account.get(account).copied(),
            _ => None,
        };
        let mut ranked: Vec<(usize, Option<usize>)> = effects
            .iter()
            .enumerate()
            .map(|(i, e)| (i, rank(e)))
            .collect();
        // Only runs of consecutive deliveries are reordered.
        let mut start = 0;
        while start < ranked.len() {
            let mut end = start;
            while end < ranked.len() && ranked[end].1.is_some() {
                end += 1;
            }
            if end > start {
                ranked[start..end].sort_by_key(|(_, r)| *r);
                start = end;
            } else {
                start += 1;
            }
        }
        let mut slots: Vec<Option<Effect>> = effects.drain(..).map(Some).collect();
        let effects: Vec<Effect> = ranked
            .iter()
            .filter_map(|(i, _)| slots.get_mut(*i).and_then(Option::take))
            .collect();
        for e in effects {
            match e {
                Effect::Reply(ticket, r) => {
                    if let Ok(Response::Prepared(p)) = &r {
                        self.adversary.prepared(p);
                    }
                    if let Some((to, purpose, _)) = self.tickets.remove(&ticket) {
                        if let Ok(Response::History(plan)) = &r {
                            // The shell reads the page from its store.
                            self.answer_history(branch, to, plan);
                            continue;
                        }
                        self.send(Event::Reply {
                            to,
                            purpose,
                            result: r.map_err(|e| e.to_string()),
                        });
                    }
                }
                Effect::Lookup(ticket, lookup) => {
                    // The shell reads its store, then answers.
                    if let Some((to, purpose, _)) = self.tickets.remove(&ticket) {
                        let stored = match self.router.store(branch) {
                            Some(store) => grompi_router::store::EnvelopeReader::admitted(
                                store,
                                &lookup.conversation,
                                lookup.epoch,
                                lookup.slot,
                                lookup.sequence,
                            ),
                            None => Ok(None),
                        };
                        self.send(Event::Reply {
                            to,
                            purpose,
                            result: lookup.answer(stored).map_err(|e| e.to_string()),
                        });
                    }
                }
                Effect::Job(job) => {
                    let serves = self
                        .router
                        .branches
                        .get(branch)
                        .and_then(|b| b.serves.get(job.server as usize).copied())
                        .unwrap_or(false);
                    // A forking router never shows a branch to the honest
                    // servers of another: the job simply never completes.
                    if serves {
                        let incarnation = self.router.incarnation;
                        self.send_on_stream(
                            (incarnation, branch, job.server),
                            true,
                            Event::Job {
                                branch,
                                job,
                                incarnation,
                            },
                        );
                    }
                }
                Effect::Deliver { account, delivery } => {
                    let Some(&to) = self.by_account.get(&account) else {
                        continue;
                    };
                    self.deliver(branch, to, *delivery);
                }
            }
        }
    }
}
