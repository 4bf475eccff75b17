-- The deciding pair of each strong cluster that took part in an accepted probabilistic merge
-- (inputs: evidence_merges (a, b): the accepted merges; evidence_pairs: the scored pairs of
-- representatives). features/linkage/evidence.py adds each pair's comparison levels.
-- A cluster's records carry the evidence of the surest pair of representatives among the
-- merges it took part in (the one whose match probability is their link_confidence), ordered
-- by match weight: the probability saturates at 1 for most links, the weight does not.
with accepted as (
    select distinct least(a, b) as a, greatest(a, b) as b from evidence_merges
),
kept as (
    select p.*
    from evidence_pairs p
    join accepted m
      on m.a = least(p.comp_id_l, p.comp_id_r) and m.b = greatest(p.comp_id_l, p.comp_id_r)
),
sides as (
    select comp_id_l as comp_id, comp_id_r as other_comp, * from kept
    union all
    select comp_id_r as comp_id, comp_id_l as other_comp, * from kept
)
select comp_id, other_comp, rep_id_l, rep_id_r, match_weight, match_probability
from sides
qualify row_number() over (
    partition by comp_id order by match_weight desc, rep_id_l, rep_id_r
) = 1
order by comp_id
