-- Candidate merges of strong clusters from scored pairs (input: decide_pairs, link_reps).
-- Two clusters whose representatives match at or above $threshold may merge, with one
-- guard: a cluster that knows no date of birth (a tip, a record whose date is blank) is
-- weak evidence and may join one person only, never bridge two. It keeps its likeliest
-- partner among clusters with a date of birth, or failing that its likeliest partner.
-- The FIN / A-number guard is applied afterwards, in Python, as merges are accepted.
with edges as (
    select
        least(comp_id_l, comp_id_r) as a,
        greatest(comp_id_l, comp_id_r) as b,
        max(match_probability) as p
    from decide_pairs
    where match_probability >= $threshold
    group by 1, 2
),
weak as (
    select comp_id, bool_and(birth_date is null) as weak from link_reps group by 1
),
both_ways as (
    select a as c, b as other, p from edges
    union all
    select b as c, a as other, p from edges
),
choice as (
    select c, other
    from (
        select
            bw.c, bw.other,
            row_number() over (partition by bw.c order by wo.weak, bw.p desc, bw.other) as rk
        from both_ways bw
        join weak wc on wc.comp_id = bw.c
        join weak wo on wo.comp_id = bw.other
        where wc.weak
    )
    where rk = 1
)
select e.a, e.b, e.p
from edges e
join weak wa on wa.comp_id = e.a
join weak wb on wb.comp_id = e.b
left join choice ca on ca.c = e.a and ca.other = e.b
left join choice cb on cb.c = e.b and cb.other = e.a
where (not wa.weak or ca.c is not null)
  and (not wb.weak or cb.c is not null)
order by e.p desc, e.a, e.b
