-- The FIN / A-number guard of the decision rule. Each person holds one biometric id and
-- one A-number, so a group of strong clusters about to merge that holds two different
-- values of either cannot be one person.
-- Inputs: decide_comps (strong_id, grp): the clusters of candidate merges and the group
-- each would join; strong_links (rec_idx, strong_id); link_records.

-- name: group_keys
with keyed as (
    select rec_idx, 'fin' as key_type, fin as key_value from link_records where fin is not null
    union all
    select rec_idx, 'a_number', a_number from link_records where a_number is not null
)
select d.grp, d.strong_id, k.key_type, k.key_value
from decide_comps d
join strong_links s on s.strong_id = d.strong_id
join keyed k on k.rec_idx = s.rec_idx;

-- name: conflicted_groups
select distinct grp
from decide_keys
group by grp, key_type
having count(distinct key_value) > 1;
