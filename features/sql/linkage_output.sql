-- One system's rows of the linked records table (docs/contracts.md, stage 2): every valid
-- source record with its cluster, how it was linked and with what confidence, its main
-- date, its normalised identity and a one-line summary for the reviewer pages; plus the
-- record's identity group and its cluster's alias count for the features.
-- Placeholders: {system}, {clean} (the system's clean table), {offset} (its first
-- rec_idx), {summary} (an expression over the clean columns).
-- Inputs: record_links (rec_idx, cluster_id, link_method, link_confidence, identity_id),
-- cluster_identities (cluster_id, alias_count).
select
    '{system}' as system,
    c.record_id,
    l.cluster_id,
    l.link_method,
    l.link_confidence,
    c.event_date,
    c.family_name,
    c.given_name,
    c.birth_date,
    {summary} as summary,
    l.identity_id,
    coalesce(i.alias_count, 0) as alias_count
from read_parquet('{clean}', file_row_number = true) c
join record_links l on l.rec_idx = {offset} + c.file_row_number
left join cluster_identities i on i.cluster_id = l.cluster_id
order by c.file_row_number
