//! The parent of `scale`: starts the generator processes, takes the readings between phases,
//! sends through `gateway-client` like a web backend would, and prints the report:
//! `PHASE …` lines as it goes (stderr), `STEP …` lines for the uid rate searches, one
//! `RESULT scenario=scale-uid …` line per search (index off / on), one
//! `RESULT scenario=scale-uid-ratio …` line when both ran, one `RESULT scenario=scale …` line and
//! one `LIMIT …` line (stdout).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gw_config::LinkConfig;
use gw_gateway_client::{GatewayClient, RoutingStats};

use super::limits::{self, Failures, Machine};
use super::{ALL, IDENTIFY, ScaleArgs, UID, text, wall_us};
use crate::coord::{self, Part, Shards};
use crate::hist::Hist;
use crate::procfs::{self, CpuWindow};

/// How long one generator answer may take (the connect phase of a million clients included).
const SHARD_TIMEOUT: Duration = Duration::from_secs(1200);
/// Between two `COUNT` polls.
const POLL: Duration = Duration::from_millis(100);
/// After a uid step's last send, how long its messages may still arrive.
const DRAIN: Duration = Duration::from_secs(10);
/// How long the index-on client's index may take to arrive from every gateway.
const INDEX_WAIT: Duration = Duration::from_secs(180);

/// The sum of every generator's counters at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    alive: u64,
    lost: u64,
    identified: u64,
    all_got: u64,
    all_last_us: u64,
    step_got: u64,
    wrong: u64,
    stale: u64,
    other: u64,
    pings_sent: u64,
    pongs_got: u64,
    server_pings: u64,
    cpu_s: f64,
    gen_rss_kib: u64,
}

impl Totals {
    fn sum(parts: &[Part]) -> anyhow::Result<Self> {
        let mut t = Self::default();
        for p in parts {
            let n = |k: &str| coord::get::<u64>(p, k);
            t.alive += n("alive")?;
            t.lost += n("lost")?;
            t.identified += n("identified")?;
            t.all_got += n("all_got")?;
            t.all_last_us = t.all_last_us.max(n("all_last_us")?);
            t.step_got += n("step_got")?;
            t.wrong += n("wrong")?;
            t.stale += n("stale")?;
            t.other += n("other")?;
            t.pings_sent += n("pings_sent")?;
            t.pongs_got += n("pongs_got")?;
            t.server_pings += n("server_pings")?;
            t.cpu_s += coord::get::<f64>(p, "cpu_s")?;
            t.gen_rss_kib += n("gen_rss_kib")?;
        }
        Ok(t)
    }
}

/// What the parent works with between phases.
struct Run<'a> {
    a: &'a ScaleArgs,
    rt: tokio::runtime::Runtime,
    shards: Shards,
    /// The parent's gateway client with the routing index off: counts, binds, `send_to_all`,
    /// and the index-off uid search.
    client: Option<GatewayClient>,
    /// uid steps run so far (over every search: step numbers stay distinct).
    steps: u64,
}

impl Run<'_> {
    fn counts(&mut self) -> anyhow::Result<Totals> {
        self.shards.send("COUNT")?;
        Totals::sum(&self.shards.collect("PART")?)
    }

    /// Polls the counters until `done` holds or `limit` passes (or nothing changed for `stall`).
    fn poll_until(&mut self, limit: Duration, done: impl Fn(&Totals) -> bool) -> anyhow::Result<Totals> {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.counts()?;
            if done(&t) || Instant::now() >= deadline {
                return Ok(t);
            }
            std::thread::sleep(POLL);
        }
    }

    fn gateway(&self) -> &GatewayClient {
        self.client.as_ref().expect("connected before use")
    }

    /// A gateway client of the cluster, linked to all of its gateways.
    fn connect(&self, name: &str, routing_index: bool, gateways: usize) -> anyhow::Result<GatewayClient> {
        let mut link = LinkConfig {
            routing_index,
            write_delay: Duration::from_secs_f64(self.a.write_delay_ms / 1000.0),
            ..LinkConfig::default()
        };
        if let Some(secs) = self.a.link_timeout_secs {
            link.heartbeat_timeout = Duration::from_secs_f64(secs);
            link.handshake_timeout = Duration::from_secs_f64(secs);
        }
        self.rt.block_on(async {
            let g = GatewayClient::builder([self.a.register.clone()])
                .name(name)
                .link_config(link)
                .query_timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(30))
                .connect()
                .await
                .with_context(|| format!("gateway client {name}"))?;
            anyhow::ensure!(
                g.wait_for_gateways(gateways, Duration::from_secs(30)).await,
                "the gateway client {name} linked only {} of {gateways} gateways",
                g.gateway_count()
            );
            anyhow::Ok(g)
        })
    }

    /// A gateway client with the routing index on, whose index is complete: its first uid call
    /// asks every gateway for its index (and, while a gateway's has not arrived, goes to it
    /// anyway), then this waits until every link's snapshot has arrived. Returns the client,
    /// the seconds it took and whether it completed in time.
    fn indexed_client(&self, gateways: usize, uids: u64) -> anyhow::Result<(GatewayClient, f64, bool)> {
        let g = self.connect("scale-bench-index", true, gateways)?;
        let t0 = Instant::now();
        let complete = self.rt.block_on(async {
            g.is_uid_online("0").await?;
            let deadline = Instant::now() + INDEX_WAIT;
            loop {
                let s = g.routing_stats();
                if s.complete_links >= gateways as u64 && s.uids >= uids {
                    return anyhow::Ok(true);
                }
                if Instant::now() >= deadline {
                    return anyhow::Ok(false);
                }
                tokio::time::sleep(POLL).await;
            }
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let s = g.routing_stats();
        eprintln!(
            "PHASE index complete={complete} secs={secs:.1} complete_links={}/{gateways} uids={}/{uids} {}",
            s.complete_links,
            s.uids,
            stats_fields(&s)
        );
        Ok((g, secs, complete))
    }
}

/// The routing counters as `key=value` fields.
fn stats_fields(s: &RoutingStats) -> String {
    format!(
        "routing_enabled={} routing_complete_links={} routing_uids={} routing_groups={} routing_routed={} \
         routing_skipped={} routing_misses={} routing_updates={}",
        s.enabled, s.complete_links, s.uids, s.groups, s.routed, s.skipped, s.misses, s.updates
    )
}

fn rss_sum(pids: &[String]) -> u64 {
    pids.iter().filter_map(|p| procfs::rss_kib(p)).sum()
}

fn per_conn(kib: i64, conns: u64) -> i64 {
    kib * 1024 / conns.max(1) as i64
}

pub fn main(a: &ScaleArgs) -> anyhow::Result<()> {
    let nofile = limits::raise_nofile();
    let procs = a.procs();
    let gateways = a.gateways()?.len();
    let gw_pids = &a.gateway_pid;
    let others: Vec<String> =
        procfs::with_descendants(&a.server_pids).into_iter().filter(|p| !gw_pids.contains(p)).collect();
    let m0 = Machine::read();
    eprintln!(
        "PHASE start target={} gateways={gateways} procs={procs} sources={} per_source={} index={:?} \
         link_timeout_secs={} write_delay_ms={} nofile={nofile} {}",
        a.conns,
        a.sources(),
        a.per_source,
        a.index,
        a.link_timeout_secs.map_or("default".into(), |s| format!("{s}")),
        a.write_delay_ms,
        m0.fields()
    );
    if m0.conntrack.1 > 0 && (m0.conntrack.1 - m0.conntrack.0.min(m0.conntrack.1)) < a.conns as u64 {
        eprintln!(
            "PHASE warning: the conntrack table has room for {} more connections (nf_conntrack_max {}), fewer than \
             the {} clients asked for: expect it to be the limit",
            m0.conntrack.1.saturating_sub(m0.conntrack.0),
            m0.conntrack.1,
            a.conns
        );
    }
    let gw_rss0 = rss_sum(gw_pids);
    let other_rss0 = rss_sum(&others);

    // ---- connect ----------------------------------------------------------------------------
    let mut shards = Shards::start_niced(procs, SHARD_TIMEOUT, a.generator_nice)?;
    let t_connect = Instant::now();
    shards.send("GO")?;
    let parts = shards.collect("PART")?;
    let wall_connect = t_connect.elapsed().as_secs_f64();
    let m_peak = Machine::read();
    let (mut connected, mut not_attempted, mut secs) = (0u64, 0u64, 0f64);
    let mut stopped: Vec<String> = Vec::new();
    let mut failures = Failures::default();
    for p in &parts {
        connected += coord::get::<u64>(p, "connected")?;
        not_attempted += coord::get::<u64>(p, "not_attempted")?;
        secs = secs.max(coord::get::<f64>(p, "secs")?);
        let why: String = coord::get(p, "stopped")?;
        if why != "no" && !stopped.contains(&why) {
            stopped.push(why);
        }
        failures.merge(p);
    }
    let conn_rate = connected as f64 / secs.max(1e-3);
    eprintln!(
        "PHASE connect connected={connected} failed={} not_attempted={not_attempted} stopped={} secs={secs:.1} \
         wall_secs={wall_connect:.1} conn_per_sec={conn_rate:.0} {}",
        failures.total(),
        if stopped.is_empty() { "no".to_string() } else { stopped.join(",") },
        failures.fields()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut run = Run { a, rt, shards, client: None, steps: 0 };
    run.client = Some(run.connect("scale-bench", false, gateways)?);

    // ---- held and memory -------------------------------------------------------------------
    // Settled when every gateway counts exactly the clients the generators hold.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (held, counted) = loop {
        let t = run.counts()?;
        let counted = run.rt.block_on(run.gateway().client_count())?;
        if (counted.is_complete() && counted.value == t.alive) || Instant::now() > deadline {
            break (t.alive, counted.value);
        }
        std::thread::sleep(POLL);
    };
    let m_held = Machine::read();
    let gw_rss = rss_sum(gw_pids);
    let other_rss = rss_sum(&others);
    let t_held = run.counts()?;
    let gw_per = per_conn(gw_rss as i64 - gw_rss0 as i64, held);
    let other_per = per_conn(other_rss as i64 - other_rss0 as i64, held);
    let sock_mem_kib = m_held.tcp_mem_pages.0 * 4;
    let sock_per = per_conn((m_held.tcp_mem_pages.0 as i64 - m0.tcp_mem_pages.0 as i64) * 4, held).max(0);
    let slab_per = per_conn(m_held.slab_kib as i64 - m0.slab_kib as i64, held);
    let gen_per = per_conn(t_held.gen_rss_kib as i64, held);
    let machine_per = per_conn(m0.mem_kib.0 as i64 - m_held.mem_kib.0 as i64, held);
    eprintln!(
        "PHASE held held={held} gateways_count={counted} gw_rss_kib={gw_rss} gw_rss_per_conn_bytes={gw_per} \
         other_rss_kib={other_rss} other_rss_per_conn_bytes={other_per} sock_mem_kib={sock_mem_kib} \
         slab_per_conn_bytes={slab_per} gen_rss_kib={} gen_rss_per_conn_bytes={gen_per} \
         machine_per_conn_bytes={machine_per}",
        t_held.gen_rss_kib
    );

    // ---- idle with heartbeats --------------------------------------------------------------
    let idle = Duration::from_secs_f64(a.idle_secs);
    let before = run.counts()?;
    let cpu = CpuWindow::start(&a.server_pids);
    std::thread::sleep(idle); // a measurement window, not a wait for a condition
    let cpu = cpu.finish();
    let after = run.counts()?;
    let idle_secs = idle.as_secs_f64();
    let gen_cores = (after.cpu_s - before.cpu_s) / idle_secs;
    let lost_idle = after.lost - before.lost;
    let client_pings = (after.pings_sent - before.pings_sent) as f64 / idle_secs;
    let server_pings = (after.server_pings - before.server_pings) as f64 / idle_secs;
    // The worker and register again once the connect burst is over: what a quiet client costs
    // them (the figure at `held` includes the work of connecting still in progress).
    let other_idle_per = per_conn(rss_sum(&others) as i64 - other_rss0 as i64, held);
    eprintln!(
        "PHASE idle secs={idle_secs:.0} server_cores={:.2} gen_cores={gen_cores:.2} machine_cores={:.2} \
         client_pings_per_sec={client_pings:.0} server_pings_per_sec={server_pings:.0} pongs={} lost={lost_idle} \
         other_rss_per_conn_bytes={other_idle_per}",
        cpu.server,
        cpu.machine,
        after.pongs_got - before.pongs_got
    );

    // ---- uids -------------------------------------------------------------------------------
    // Bound first and measured, then each client is told its uid and measured again: the two
    // figures separate the uid index from what one delivered message leaves behind per client.
    let t_bind = Instant::now();
    let ids = run.rt.block_on(run.gateway().client_ids())?.complete().context("listing client ids")?;
    let n_ids = ids.len() as u64;
    run.rt.block_on(async {
        let g = run.gateway();
        for (k, id) in ids.iter().enumerate() {
            g.bind_uid(id, &k.to_string()).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while g.uid_count().await?.value < n_ids && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        anyhow::Ok(())
    })?;
    let bind_secs = t_bind.elapsed().as_secs_f64();
    let gw_rss_bound = rss_sum(gw_pids);
    run.rt.block_on(async {
        let g = run.gateway();
        for (k, id) in ids.iter().enumerate() {
            g.send_to_client(id, text(IDENTIFY, &[k as u64])).await?;
        }
        anyhow::Ok(())
    })?;
    drop(ids);
    let t = run.poll_until(Duration::from_secs(120), |t| t.identified >= n_ids)?;
    let gw_rss_msg = rss_sum(gw_pids);
    let bound_per = per_conn(gw_rss_bound as i64 - gw_rss0 as i64, held);
    let msg_per = per_conn(gw_rss_msg as i64 - gw_rss0 as i64, held);
    eprintln!(
        "PHASE bind uids={n_ids} identified={} bind_secs={bind_secs:.1} gw_rss_per_conn_bound_bytes={bound_per} \
         gw_rss_per_conn_after_message_bytes={msg_per}",
        t.identified,
    );

    // ---- send_to_all ------------------------------------------------------------------------
    // The generators receive and time these messages: they run at --search-nice from here on
    // (at --generator-nice the servers take the CPU first and the niced receivers measure when
    // they got some back, not when the gateways delivered).
    let reniced = renice(&run.shards.pids(), a.search_nice);
    eprintln!("PHASE renice generators={} threads={reniced} nice={}", run.shards.pids().len(), a.search_nice);
    let alive = t.alive;
    let mut alls = Vec::new();
    for k in 0..a.broadcasts.max(1) {
        let b = broadcast(&mut run, alive)?;
        eprintln!("PHASE send_to_all round={k} {}", b.fields());
        alls.push(b);
    }
    // The first round is the one the full run has always reported; the others show the spread.
    let all = alls[0];
    let all_secs = all.last_secs;
    let all_missing = alls.iter().map(|b| b.missing).max().unwrap_or(0);
    for (k, b) in alls.iter().enumerate() {
        println!("RESULT scenario=scale-all round={k} gateways={gateways} procs={procs} {}", b.fields());
    }

    // ---- send_to_uid --------------------------------------------------------------------------
    // Index off: the parent's client (every uid send to every gateway). Index on: a second client
    // over the same links' gateways and the same clients, with a complete index.
    let mut searches: Vec<UidSearch> = Vec::new();
    let mut indexed: Option<GatewayClient> = None;
    let mut index_incomplete = false;
    for &on in a.index.searches() {
        let g = if on {
            let (g, _, complete) = run.indexed_client(gateways, n_ids)?;
            index_incomplete |= !complete;
            indexed = Some(g.clone());
            g
        } else {
            run.gateway().clone()
        };
        let search = uid_search(&mut run, &g, on, n_ids)?;
        let stats = on.then(|| g.routing_stats());
        let r = UidSearch { on, search, stats };
        println!("{}", r.result_line(gateways, held));
        searches.push(r);
    }
    let ratio = match (searches.iter().find(|s| !s.on), searches.iter().find(|s| s.on)) {
        (Some(off), Some(on)) => {
            let ratio = on.rate() / off.rate().max(1e-9);
            println!(
                "RESULT scenario=scale-uid-ratio gateways={gateways} held={held} off_rate={:.0} on_rate={:.0} \
                 on_over_off={ratio:.2} off_p50_us={} on_p50_us={} off_p99_us={} on_p99_us={}",
                off.rate(),
                on.rate(),
                off.quantile(0.5),
                on.quantile(0.5),
                off.quantile(0.99),
                on.quantile(0.99),
            );
            Some(ratio)
        }
        _ => None,
    };
    let end = run.counts()?;
    for g in indexed.iter().chain(run.client.take().as_ref()) {
        run.rt.block_on(g.shutdown());
    }
    run.shards.finish()?;

    let limit = limits::name_limit(a.conns as u64, held, &failures, &stopped, &m_peak, a.min_mem_available_mib, nofile);
    let next = if limit == "none" {
        let per_kib = machine_per.max(1) as f64 / 1024.0;
        let room = Machine::read().headroom(per_kib);
        room.first().map_or("-".into(), |(what, n)| format!("{what}:{n}"))
    } else {
        "-".into()
    };
    let uid_fields: Vec<String> = searches.iter().map(UidSearch::summary_fields).collect();
    println!(
        "RESULT scenario=scale target={} gateways={gateways} procs={procs} held={held} failed={} \
         not_attempted={not_attempted} connect_secs={secs:.1} conn_per_sec={conn_rate:.0} {} \
         gw_rss_before_kib={gw_rss0} gw_rss_kib={gw_rss} gw_rss_per_conn_bytes={gw_per} \
         gw_rss_per_conn_bound_bytes={bound_per} gw_rss_per_conn_after_message_bytes={msg_per} other_rss_kib={other_rss} other_rss_per_conn_bytes={other_per} \
         other_rss_idle_per_conn_bytes={other_idle_per} sock_mem_kib={sock_mem_kib} sock_mem_per_conn_bytes={sock_per} slab_per_conn_bytes={slab_per} \
         gen_rss_kib={} gen_rss_per_conn_bytes={gen_per} machine_per_conn_bytes={machine_per} \
         idle_secs={idle_secs:.0} idle_server_cores={:.2} idle_gen_cores={gen_cores:.2} idle_machine_cores={:.2} \
         client_pings_per_sec={client_pings:.0} server_pings_per_sec={server_pings:.0} lost_idle={lost_idle} \
         all_clients={alive} all_missing={all_missing} all_last_secs={all_secs:.3} \
         index={:?} {} uid_on_over_off={} uid_wrong={} lost_total={} limit={}",
        a.conns,
        failures.total(),
        failures.fields(),
        t_held.gen_rss_kib,
        cpu.server,
        cpu.machine,
        a.index,
        uid_fields.join(" "),
        ratio.map_or("-".into(), |r| format!("{r:.2}")),
        end.wrong,
        end.lost,
        if limit == "none" { "none".to_string() } else { limit.split(':').next().unwrap_or("?").to_string() },
    );
    println!("LIMIT {limit}; next limit (room left): {next}; at the peak: {}", m_peak.fields());

    let mut broken = Vec::new();
    if held < a.conns as u64 && !a.allow_short {
        broken.push(format!("held {held} of {} clients ({limit})", a.conns));
    }
    if end.lost > 0 {
        broken.push(format!("{} clients dropped after connecting ({lost_idle} while idle)", end.lost));
    }
    if t.identified < n_ids {
        broken.push(format!("{} of {n_ids} clients never got their uid", n_ids - t.identified));
    }
    if all_missing > 0 {
        broken.push(format!("send_to_all: {all_missing} of {alive} clients missing"));
    }
    if end.wrong > 0 {
        broken.push(format!("send_to_uid: {} messages reached a client of another uid", end.wrong));
    }
    if index_incomplete {
        broken.push(format!("the index-on client's index was not complete after {} s", INDEX_WAIT.as_secs()));
    }
    for r in &searches {
        let name = r.name();
        match &r.search.confirmed {
            None => broken.push(format!("send_to_uid, index {name}: no rate passed")),
            Some(s) if s.got < s.sent => {
                broken.push(format!("send_to_uid, index {name}: {} of {} missing", s.sent - s.got, s.sent));
            }
            Some(_) => {}
        }
        if let Some(st) = r.stats.filter(|st| st.misses > 0) {
            broken.push(format!("send_to_uid, index {name}: {} calls found no gateway for a bound uid", st.misses));
        }
    }
    if !broken.is_empty() {
        bail!("scale: {}", broken.join("; "));
    }
    Ok(())
}

/// One `send_to_all` to every client, timed and with the CPU it took on each side.
#[derive(Debug, Clone, Copy)]
struct Broadcast {
    clients: u64,
    missing: u64,
    /// From the send to the moment the last client had it (wall clock, read by the receivers).
    last_secs: f64,
    /// CPU seconds over the window (send until every client had it, or the wait gave up): the
    /// gateways, the other servers (register, workers), the generator processes, the whole machine.
    gw_cpu_s: f64,
    /// The gateways' user-space part of `gw_cpu_s` (the rest is the kernel's: the sends, and on
    /// loopback the receiving side's TCP work, done in the sender's system call).
    gw_user_s: f64,
    other_server_cpu_s: f64,
    gen_cpu_s: f64,
    machine_cpu_s: f64,
    window_secs: f64,
}

impl Broadcast {
    fn fields(&self) -> String {
        let per = |s: f64| s * 1e6 / (self.clients - self.missing).max(1) as f64;
        let cores = |s: f64| s / self.last_secs.max(1e-3);
        let rest = (self.machine_cpu_s - self.gw_cpu_s - self.other_server_cpu_s - self.gen_cpu_s).max(0.0);
        format!(
            "clients={} missing={} last_secs={:.3} deliveries_per_sec={:.0} gw_cpu_s={:.2} gen_cpu_s={:.2} \
             other_server_cpu_s={:.2} machine_cpu_s={:.2} rest_cpu_s={rest:.2} gw_us_per_delivery={:.2} \
             gw_user_us_per_delivery={:.2} gen_us_per_delivery={:.2} gw_cores={:.2} gen_cores={:.2} \
             machine_cores={:.2} window_secs={:.2}",
            self.clients,
            self.missing,
            self.last_secs,
            (self.clients - self.missing) as f64 / self.last_secs.max(1e-3),
            self.gw_cpu_s,
            self.gen_cpu_s,
            self.other_server_cpu_s,
            self.machine_cpu_s,
            per(self.gw_cpu_s),
            per(self.gw_user_s),
            per(self.gen_cpu_s),
            cores(self.gw_cpu_s),
            cores(self.gen_cpu_s),
            self.machine_cpu_s / self.window_secs.max(1e-3),
            self.window_secs,
        )
    }
}

/// Sends one `send_to_all` and waits until every client had it (counted by the generators),
/// reading the CPU of each side from `/proc` before and after.
fn broadcast(run: &mut Run<'_>, clients: u64) -> anyhow::Result<Broadcast> {
    let a = run.a;
    let before = run.counts()?;
    let gens: Vec<String> = run.shards.pids().iter().map(u32::to_string).collect();
    let others: Vec<String> =
        procfs::with_descendants(&a.server_pids).into_iter().filter(|p| !a.gateway_pid.contains(p)).collect();
    let sum = |pids: &[String]| pids.iter().filter_map(|p| procfs::cpu_secs(p)).sum::<f64>();
    let user = |pids: &[String]| pids.iter().filter_map(|p| procfs::cpu_user_sys(p)).map(|(u, _)| u).sum::<f64>();
    let (gw0, gw_user0, other0, gen0) = (sum(&a.gateway_pid), user(&a.gateway_pid), sum(&others), sum(&gens));
    let machine0 = procfs::machine_busy_secs().unwrap_or(0.0);
    let started = Instant::now();
    let t0 = wall_us();
    run.rt.block_on(run.gateway().send_to_all(text(ALL, &[t0])))?;
    let want = before.all_got + clients;
    let t = run.poll_until(Duration::from_secs(120), |t| t.all_got >= want)?;
    let window_secs = started.elapsed().as_secs_f64();
    Ok(Broadcast {
        clients,
        missing: want.saturating_sub(t.all_got),
        last_secs: t.all_last_us.saturating_sub(t0) as f64 / 1e6,
        gw_cpu_s: sum(&a.gateway_pid) - gw0,
        gw_user_s: user(&a.gateway_pid) - gw_user0,
        other_server_cpu_s: sum(&others) - other0,
        gen_cpu_s: sum(&gens) - gen0,
        machine_cpu_s: procfs::machine_busy_secs().unwrap_or(0.0) - machine0,
        window_secs,
    })
}

/// Sets the niceness of every thread of `pids` (niceness is per thread on Linux, and the
/// generators' threads inherited `--generator-nice`); returns how many threads were changed.
fn renice(pids: &[u32], nice: i32) -> usize {
    let tids: Vec<String> = pids
        .iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/task")).ok())
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if tids.is_empty() {
        return 0;
    }
    let ok = std::process::Command::new("renice")
        .arg("-n")
        .arg(nice.to_string())
        .arg("-p")
        .args(&tids)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        tids.len()
    } else {
        eprintln!("PHASE warning: renice -n {nice} of the generator threads failed (lowering niceness needs root)");
        0
    }
}

/// `on` or `off(all-gateways)`.
fn index_name(on: bool) -> &'static str {
    if on { "on" } else { "off(all-gateways)" }
}

/// One uid rate search and, with the index on, the client's routing counters after it.
struct UidSearch {
    on: bool,
    search: Search,
    stats: Option<RoutingStats>,
}

impl UidSearch {
    fn name(&self) -> &'static str {
        if self.on { "on" } else { "off" }
    }

    /// The confirmed rate (0 when no rate passed or the confirmation missed messages).
    fn rate(&self) -> f64 {
        self.search.confirmed.as_ref().filter(|s| s.got >= s.sent).map_or(0.0, |s| s.rate)
    }

    fn quantile(&self, q: f64) -> u64 {
        self.search.confirmed.as_ref().map_or(0, |s| s.hist.quantile(q))
    }

    fn missing(&self) -> u64 {
        self.search.confirmed.as_ref().map_or(0, |s| s.sent.saturating_sub(s.got))
    }

    fn confirmed(&self) -> bool {
        self.search.confirmed.as_ref().is_some_and(|s| s.pass)
    }

    /// `RESULT scenario=scale-uid index=… rate=… …`.
    fn result_line(&self, gateways: usize, held: u64) -> String {
        let stats = self.stats.as_ref().map_or(String::new(), |s| format!(" {}", stats_fields(s)));
        format!(
            "RESULT scenario=scale-uid index={} gateways={gateways} held={held} rate={:.0} confirmed={} p50_us={} \
             p99_us={} missing={} steps={} first_failing_rate={:.0}{stats}",
            index_name(self.on),
            self.rate(),
            self.confirmed(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.missing(),
            self.search.steps,
            self.search.first_failing.unwrap_or(0.0),
        )
    }

    /// `uid_<name>_rate=… …` for the summary line.
    fn summary_fields(&self) -> String {
        let n = self.name();
        format!(
            "uid_{n}_rate={:.0} uid_{n}_confirmed={} uid_{n}_p50_us={} uid_{n}_p99_us={} uid_{n}_missing={} \
             uid_{n}_steps={} uid_{n}_first_failing_rate={:.0}",
            self.rate(),
            self.confirmed(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.missing(),
            self.search.steps,
            self.search.first_failing.unwrap_or(0.0),
        )
    }
}

/// One `send_to_uid` step at a fixed rate.
struct Step {
    rate: f64,
    sent: u64,
    got: u64,
    hist: Hist,
    pass: bool,
    /// Everything arrived, in time, at the right clients; only the latency limit failed.
    slow_only: bool,
}

struct Search {
    /// The best passing rate, run once more.
    confirmed: Option<Step>,
    first_failing: Option<f64>,
    steps: usize,
}

/// Finds the highest `send_to_uid` rate at which every message arrives, at the right client, sent
/// on time, with p50 and p99 latency under their limits: the rate grows by `--growth` while steps
/// pass, is bisected `--refine` times between the last passing and the first failing rate, and the
/// best one is run again to confirm it.
fn uid_search(run: &mut Run<'_>, g: &GatewayClient, on: bool, uids: u64) -> anyhow::Result<Search> {
    let a = run.a;
    anyhow::ensure!(uids > 0, "no uid bound");
    let mut rng = SplitMix(wall_us());
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut rate = a.start_rate;
    let (mut steps, mut refined, mut down) = (0, 0, 0);
    loop {
        steps += 1;
        let mut s = uid_step(run, g, on, rate, uids, &mut rng)?;
        let mut retries = 0;
        while s.slow_only && retries < a.latency_retries {
            // The machine is shared: a step that failed on latency alone runs again before its
            // rate counts as too high. Missing or misrouted messages are never retried away.
            retries += 1;
            steps += 1;
            s = uid_step(run, g, on, rate, uids, &mut rng)?;
        }
        if s.pass {
            lo = Some(lo.map_or(rate, |l: f64| l.max(rate)));
        } else {
            hi = Some(hi.map_or(rate, |h: f64| h.min(rate)));
        }
        rate = match (lo, hi) {
            (_, None) if rate * a.growth <= a.max_rate => rate * a.growth,
            (_, None) => break,
            (None, Some(h)) if down < 4 => {
                down += 1;
                h / a.growth
            }
            (None, Some(_)) => break,
            (Some(l), Some(h)) if refined < a.refine => {
                refined += 1;
                (l + h) / 2.0
            }
            (Some(_), Some(_)) => break,
        };
    }
    let confirmed = match lo {
        Some(best) => {
            steps += 1;
            Some(uid_step(run, g, on, best, uids, &mut rng)?)
        }
        None => None,
    };
    Ok(Search { confirmed, first_failing: hi, steps })
}

fn uid_step(
    run: &mut Run<'_>,
    g: &GatewayClient,
    on: bool,
    rate: f64,
    uids: u64,
    rng: &mut SplitMix,
) -> anyhow::Result<Step> {
    let a = run.a;
    run.steps += 1;
    let step = run.steps;
    run.shards.send(&format!("STEP {step}"))?;
    run.shards.collect("PART")?;
    let before = run.counts()?;
    let count = (rate * a.step_secs).ceil().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let targets: Vec<u64> = (0..count).map(|_| rng.next() % uids).collect();
    // Who works for it: the servers (gateways separately), this sender, the receiving generators.
    let cpu = CpuWindow::start(&a.server_pids);
    let gw_cpu = CpuWindow::start(&a.gateway_pid);
    let gw_sleeps0 = procfs::sleeps(&a.gateway_pid);
    let t_cpu = Instant::now();
    let (sent, send_secs) = run.rt.block_on(async {
        let lead = Duration::from_millis(20);
        let start = tokio::time::Instant::now() + lead;
        let wall0 = wall_us() + lead.as_micros() as u64;
        let mut i = 0u64;
        while i < count {
            tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
            let now = tokio::time::Instant::now();
            // Everything due by now goes out (the intended time stays in the message, so a sender
            // that falls behind shows up as latency).
            while i < count {
                let due = period.mul_f64(i as f64);
                if start + due > now {
                    break;
                }
                let k = targets[i as usize];
                let msg = text(UID, &[k, step, wall0 + due.as_micros() as u64]);
                g.send_to_uid(&k.to_string(), msg).await?;
                i += 1;
            }
        }
        anyhow::Ok((i, start.elapsed().as_secs_f64()))
    })?;
    let t = run.poll_until(DRAIN, |t| t.step_got >= sent)?;
    let cpu = cpu.finish();
    let gw_cores = gw_cpu.finish().server;
    let gw_sleeps = procfs::sleeps(&a.gateway_pid).saturating_sub(gw_sleeps0);
    let recv_cores = (t.cpu_s - before.cpu_s) / t_cpu.elapsed().as_secs_f64().max(1e-3);
    run.shards.send("HIST")?;
    let hist = Hist::new();
    for p in run.shards.collect("PART")? {
        hist.merge_encoded(p.get("hist").map_or("-", String::as_str))?;
    }
    let wrong = t.wrong - before.wrong;
    let p99_ms = hist.quantile(0.99) as f64 / 1000.0;
    let p50_ms = hist.quantile(0.5) as f64 / 1000.0;
    let on_time = send_secs <= a.step_secs * 1.1 + 0.1;
    let complete = t.step_got == sent && wrong == 0 && on_time;
    let pass = complete && p99_ms <= a.p99_limit_ms && p50_ms <= a.p50_limit_ms;
    let line = format!(
        "STEP scenario=scale-uid index={} step={step} rate={rate:.0} sent={sent} got={} missing={} wrong={wrong} \
         send_secs={send_secs:.2} on_time={on_time} {} pass={pass} {} gw_cores={gw_cores:.2} sender_cores={:.2} \
         recv_cores={recv_cores:.2} gw_cpu_us_per_msg={:.1} gw_sleeps_per_msg={:.2}",
        index_name(on),
        t.step_got,
        sent.saturating_sub(t.step_got),
        hist.summary(),
        cpu.fields(),
        cpu.generator,
        gw_cores * t_cpu.elapsed().as_secs_f64() * 1e6 / sent.max(1) as f64,
        gw_sleeps as f64 / sent.max(1) as f64,
    );
    println!("{line}");
    eprintln!("{line}");
    Ok(Step { rate, sent, got: t.step_got, hist, pass, slow_only: complete && !pass })
}

/// A small, fast PRNG for picking uids (quality is plenty for spreading load).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
