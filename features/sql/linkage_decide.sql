-- Candidate merges of strong clusters from scored pairs (inputs: decide_pairs, link_reps).
-- Two clusters whose representatives match at or above $threshold may merge, with one
-- guard: a cluster that knows no date of birth (a tip, a record whose date is blank) is
-- weak evidence and may join one person only, never bridge two. Its candidates that agree
-- on a date of birth are taken as one person; it joins its likeliest person only when
-- that person holds at least $share of the probability that it matches anyone
-- (odds_k / (1 + sum of odds): it matches one person or none), so a tip naming one of
-- several namesakes is left alone rather than given to a coin toss.
-- The FIN / A-number guard is applied afterwards, in Python, as merges are accepted.
with pairs as (
    select comp_id_l, comp_id_r, rep_id_l, rep_id_r,
           least(match_probability, 1 - 1e-12) as p
    from decide_pairs
),
edges as (
    select least(comp_id_l, comp_id_r) as a, greatest(comp_id_l, comp_id_r) as b, max(p) as p
    from pairs
    where p >= $threshold
    group by 1, 2
),
weak as (
    select comp_id, bool_and(birth_date is null) as weak from link_reps group by 1
),
both_ways as (
    select comp_id_l as c, comp_id_r as other, rep_id_r as other_rep, p from pairs
    union all
    select comp_id_r, comp_id_l, rep_id_l, p from pairs
),
persons as (
    -- The people a weak cluster may be: its candidates grouped by date of birth.
    select
        bw.c,
        coalesce(strftime(r.birth_date, '%Y%m%d'), 'cluster ' || bw.other) as who,
        bool_and(wo.weak) as who_weak,
        max(bw.p / (1 - bw.p)) as odds,
        -- ties (one person's two clusters held apart by the FIN guard): the smaller id
        arg_max(bw.other, (bw.p, -bw.other)) as other,
        max(bw.p) as p
    from both_ways bw
    join weak wc on wc.comp_id = bw.c and wc.weak
    join weak wo on wo.comp_id = bw.other
    join link_reps r on r.rep_id = bw.other_rep
    group by 1, 2
),
choice as (
    -- A weak cluster's pick: a person with a date of birth if any, else another weak one.
    select c, other
    from (
        select
            c, other, p, odds,
            sum(odds) over (partition by c, who_weak) as total,
            row_number() over (partition by c order by who_weak, odds desc, other) as rk
        from persons
    )
    where rk = 1 and p >= $threshold and odds / (1 + total) >= $share
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
