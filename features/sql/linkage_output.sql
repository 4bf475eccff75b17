-- The linked records table (docs/contracts.md, stage 2): every valid source record with
-- its cluster, how it was linked and with what confidence, its main date, its normalised
-- identity and a one-line summary for the reviewer pages.
-- Inputs: link_records (one row per record) and record_links (rec_idx -> cluster_id,
-- link_method, link_confidence, identity_id) and cluster_identities (cluster_id ->
-- alias_count).
select
    r.system,
    r.record_id,
    l.cluster_id,
    l.link_method,
    l.link_confidence,
    r.event_date,
    r.family_name,
    r.given_name,
    r.birth_date,
    r.summary,
    l.identity_id,
    coalesce(c.alias_count, 0) as alias_count
from link_records r
join record_links l using (rec_idx)
left join cluster_identities c using (cluster_id)
order by r.rec_idx
