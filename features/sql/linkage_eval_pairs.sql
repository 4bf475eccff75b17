-- Pairwise linkage counts from contingency counts, never by enumerating pairs.
-- A group of n records holds n*(n-1)/2 pairs; the pairs of a group that involve at
-- least one record of system s number C(n, 2) - C(n - n_s, 2), where n_s counts the
-- group's records from s. Groups are predicted clusters (predicted pairs), true persons
-- (true pairs) and their intersections (true positives).
-- Input: scored (system, cluster_id, person_id): one row per linked record with truth.
with
cell_sys as (
    select cluster_id, person_id, system, count(*) as n_s
    from scored group by all
),
cell as (
    select cluster_id, person_id, sum(n_s) as n from cell_sys group by all
),
clus_sys as (
    select cluster_id, system, sum(n_s) as n_s from cell_sys group by all
),
clus as (
    select cluster_id, sum(n) as n from cell group by all
),
pers_sys as (
    select person_id, system, sum(n_s) as n_s from cell_sys group by all
),
pers as (
    select person_id, sum(n) as n from cell group by all
),
per_system as (
    select 'tp' as kind, s.system, sum(c.n * (c.n - 1) / 2 - (c.n - s.n_s) * (c.n - s.n_s - 1) / 2) as pairs
    from cell_sys s join cell c using (cluster_id, person_id) group by all
    union all
    select 'predicted', s.system, sum(c.n * (c.n - 1) / 2 - (c.n - s.n_s) * (c.n - s.n_s - 1) / 2)
    from clus_sys s join clus c using (cluster_id) group by all
    union all
    select 'true', s.system, sum(c.n * (c.n - 1) / 2 - (c.n - s.n_s) * (c.n - s.n_s - 1) / 2)
    from pers_sys s join pers c using (person_id) group by all
),
overall as (
    select 'tp' as kind, '__all__' as system, sum(n * (n - 1) / 2) as pairs from cell
    union all
    select 'predicted', '__all__', sum(n * (n - 1) / 2) from clus
    union all
    select 'true', '__all__', sum(n * (n - 1) / 2) from pers
)
select system, kind, cast(pairs as hugeint) as pairs
from (select * from per_system union all select * from overall)
