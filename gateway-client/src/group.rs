//! Groups: joining and leaving them, dissolving one, and the questions about groups. A group
//! exists while it has members; a client may be in any number of groups.
//!
//! Unlike GatewayWorker, group listings are complete across gateways.

use std::collections::{BTreeMap, BTreeSet};

use gw_gateway_links::IndexKind;
use gw_proto::{ClientId, Command, Query, Reply};

use crate::plumbing::{full_id, merge_strings, name, names, unexpected};
use crate::{Answer, ClientError, GatewayClient};

impl GatewayClient {
    /// Adds a client to a group (created on first join).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.join_group(&id, "room-1").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "joinGroup")]
    pub async fn join_group(&self, client: &ClientId, group: &str) -> Result<(), ClientError> {
        let group = name(group, "group")?;
        self.command_to_client(client, |client| Command::JoinGroup { client, group }).await
    }

    /// Removes a client from a group.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.leave_group(&id, "room-1").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "leaveGroup")]
    pub async fn leave_group(&self, client: &ClientId, group: &str) -> Result<(), ClientError> {
        let group = name(group, "group")?;
        self.command_to_client(client, |client| Command::LeaveGroup { client, group }).await
    }

    /// Dissolves a group on every gateway; its members stay connected.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.ungroup("room-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn ungroup(&self, group: &str) -> Result<(), ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(IndexKind::Group, std::slice::from_ref(&group))?;
        self.fan_out(links, Command::Ungroup { group }).await
    }

    /// Every member of a group, across the cluster.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let members = g.client_ids_by_group("room-1").await?.complete()?;
    /// # let _ = members;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getClientIdListByGroup", "get_client_ids_by_group"))]
    pub async fn client_ids_by_group(&self, group: &str) -> Result<Answer<Vec<ClientId>>, ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(IndexKind::Group, std::slice::from_ref(&group))?;
        let (replies, missing) = self.gather_from(links, Query::ClientsByGroups { groups: vec![group] }).await?;
        let mut ids = Vec::new();
        for (link, reply) in replies {
            let Reply::ClientLists(mut lists) = reply else { return Err(unexpected(&link)) };
            ids.extend(lists.pop().unwrap_or_default().into_iter().map(|c| full_id(&link, c)));
        }
        ids.sort();
        Ok(Answer { value: ids, missing })
    }

    /// Number of members of a group.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let n = g.client_count_by_group("room-1").await?.complete()?;
    /// # let _ = n;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getClientCountByGroup", "getClientIdCountByGroup", "get_client_count_by_group"))]
    pub async fn client_count_by_group(&self, group: &str) -> Result<Answer<u64>, ClientError> {
        let a = self.client_count_by_groups(&[group]).await?;
        Ok(a.map(|m| m.into_values().next().unwrap_or(0)))
    }

    /// Number of members of each group.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let counts = g.client_count_by_groups(&["room-1", "room-2"]).await?.complete()?;
    /// # let _ = counts;
    /// # Ok(()) }
    /// ```
    #[doc(alias("batchGetClientIdCountByGroup", "get_client_count_by_groups"))]
    pub async fn client_count_by_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Answer<BTreeMap<String, u64>>, ClientError> {
        let groups = names(groups, "group")?;
        let links = self.holders(IndexKind::Group, &groups)?;
        let (replies, missing) = self.gather_from(links, Query::ClientCountByGroups { groups: groups.clone() }).await?;
        let mut out: BTreeMap<String, u64> = groups.iter().map(|g| (g.clone(), 0)).collect();
        for (link, reply) in replies {
            let Reply::Counts(counts) = reply else { return Err(unexpected(&link)) };
            for (g, n) in groups.iter().zip(counts) {
                *out.get_mut(g).expect("seeded") += n;
            }
        }
        Ok(Answer { value: out, missing })
    }

    /// Distinct uids among a group's members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let uids = g.uids_by_group("room-1").await?.complete()?;
    /// # let _ = uids;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getUidListByGroup", "get_uids_by_group"))]
    pub async fn uids_by_group(&self, group: &str) -> Result<Answer<Vec<String>>, ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(IndexKind::Group, std::slice::from_ref(&group))?;
        let (replies, missing) = self.gather_from(links, Query::UidsByGroup { group }).await?;
        merge_strings(replies, missing)
    }

    /// Number of distinct uids among a group's members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let users = g.uid_count_by_group("room-1").await?.complete()?;
    /// # let _ = users;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getUidCountByGroup", "get_uid_count_by_group"))]
    pub async fn uid_count_by_group(&self, group: &str) -> Result<Answer<u64>, ClientError> {
        Ok(self.uids_by_group(group).await?.map(|v| v.len() as u64))
    }

    /// Every group with at least one member.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let groups = g.groups().await?.complete()?;
    /// # let _ = groups;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllGroupIdList", "get_all_group_ids"))]
    pub async fn groups(&self) -> Result<Answer<Vec<String>>, ClientError> {
        self.gather_strings(Query::GroupIds).await
    }

    /// Every group with its members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// for (group, ids) in g.group_client_ids().await?.complete()? {
    ///     println!("{group}: {} members", ids.len());
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllGroupClientIdList", "get_all_group_client_id_lists"))]
    pub async fn group_client_ids(&self) -> Result<Answer<BTreeMap<String, Vec<ClientId>>>, ClientError> {
        let (replies, missing) = self.gather(Query::GroupClients).await?;
        let mut out: BTreeMap<String, Vec<ClientId>> = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::NamedClients(groups) = reply else { return Err(unexpected(&link)) };
            for (g, locals) in groups {
                out.entry(g).or_default().extend(locals.into_iter().map(|c| full_id(&link, c)));
            }
        }
        out.values_mut().for_each(|v| v.sort());
        Ok(Answer { value: out, missing })
    }

    /// Every group with its member count.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let counts = g.group_client_counts().await?.complete()?;
    /// # let _ = counts;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllGroupClientIdCount", "get_all_group_client_id_counts"))]
    pub async fn group_client_counts(&self) -> Result<Answer<BTreeMap<String, u64>>, ClientError> {
        Ok(self.group_client_ids().await?.map(|m| m.into_iter().map(|(g, v)| (g, v.len() as u64)).collect()))
    }

    /// Every group with the distinct uids of its members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let uids = g.group_uids().await?.complete()?;
    /// # let _ = uids;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllGroupUidList", "get_all_group_uid_lists"))]
    pub async fn group_uids(&self) -> Result<Answer<BTreeMap<String, Vec<String>>>, ClientError> {
        let (replies, missing) = self.gather(Query::GroupUids).await?;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::NamedStrings(groups) = reply else { return Err(unexpected(&link)) };
            for (g, uids) in groups {
                out.entry(g).or_default().extend(uids);
            }
        }
        Ok(Answer { value: out.into_iter().map(|(g, s)| (g, s.into_iter().collect())).collect(), missing })
    }

    /// The users of Pusher app `app`'s presence channels (only `channel`, if given), as the
    /// channels' home gateways know them: each channel with its user ids (docs/pusher.md §5).
    /// Each channel has one home, so the gateways' answers merge by union.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let users = g.pusher_members("1001", Some("presence-room")).await?.complete()?;
    /// # let _ = users;
    /// # Ok(()) }
    /// ```
    pub async fn pusher_members(
        &self,
        app: &str,
        channel: Option<&str>,
    ) -> Result<Answer<BTreeMap<String, Vec<String>>>, ClientError> {
        let query = Query::PusherMembers { app: app.to_string(), channel: channel.map(str::to_string) };
        let (replies, missing) = self.gather(query).await?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::NamedStrings(channels) = reply else { return Err(unexpected(&link)) };
            for (channel, users) in channels {
                let list = out.entry(channel).or_default();
                for u in users {
                    if !list.contains(&u) {
                        list.push(u);
                    }
                }
            }
        }
        Ok(Answer { value: out, missing })
    }

    /// Every group with its distinct uid count.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let counts = g.group_uid_counts().await?.complete()?;
    /// # let _ = counts;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllGroupUidCount", "get_all_group_uid_counts"))]
    pub async fn group_uid_counts(&self) -> Result<Answer<BTreeMap<String, u64>>, ClientError> {
        Ok(self.group_uids().await?.map(|m| m.into_iter().map(|(g, v)| (g, v.len() as u64)).collect()))
    }
}
