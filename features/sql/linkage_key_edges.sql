-- Strong-key edges: one row per (record, identifier value) for every identifier value
-- that at least two records share. A value held by one record links nothing, so it is
-- left out; the graph step then joins records through the identifier nodes
-- (record - value - record), which is linear in the number of records rather than
-- quadratic in the size of a key's group. Values are numbered by hashing, not sorting:
-- the numbering does not change the components.
-- Input: link_records (rec_idx, fin, a_number, passport, i94, sevis, receipt).
with keyed as (
    select rec_idx, 'fin' as key_type, fin as key_value from link_records where fin is not null
    union all
    select rec_idx, 'a_number', a_number from link_records where a_number is not null
    union all
    select rec_idx, 'passport', passport from link_records where passport is not null
    union all
    select rec_idx, 'i94', i94 from link_records where i94 is not null
    union all
    select rec_idx, 'sevis', sevis from link_records where sevis is not null
    union all
    select rec_idx, 'receipt', receipt from link_records where receipt is not null
),
shared as (
    select key_type, key_value, row_number() over () - 1 as key_idx
    from keyed
    group by key_type, key_value
    having count(*) >= 2
)
select k.rec_idx, k.key_type, s.key_idx
from keyed k
join shared s using (key_type, key_value)
