-- Immigration enforcement: encounters, detention, court orders and earlier removals, each from
-- every system that feeds its event kind (ev_<kind>, features/registry.py EVENT_KINDS).
with enc as (
    select
        c.case_id, count(*) as encounters,
        sum(case when r.arrested then 1 else 0 end) as encounter_arrests
    from features_cases c
    join ev_encounter r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
det as (
    select
        c.case_id, count(*) as detentions,
        -- Only the part of a stay served by the scoring date is known then.
        sum(date_diff('day', r.book_in_date, least(r.book_out_date, c.scoring_date)))
            as detention_days
    from features_cases c
    join ev_detention r
      on r.cluster_id = c.cluster_id and r.book_in_date <= c.scoring_date
    group by c.case_id
),
court as (
    select
        c.case_id, count(*) as court_hearings,
        sum(case when r.order_type = 'removal_in_absentia' then 1 else 0 end)
            as removal_orders_in_absentia,
        sum(case when r.order_type = 'relief_granted' then 1 else 0 end) as relief_granted
    from features_cases c
    join ev_court_hearing r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
removals as (
    select
        c.case_id, count(*) as prior_removals,
        date_diff('day', max(r.event_date), c.scoring_date) as days_since_removal
    from features_cases c
    join ev_removal r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id, c.scoring_date
)
select
    c.case_id, e.encounters, e.encounter_arrests, d.detentions, d.detention_days,
    k.court_hearings, k.removal_orders_in_absentia, k.relief_granted,
    r.prior_removals, r.days_since_removal
from features_cases c
left join enc e on e.case_id = c.case_id
left join det d on d.case_id = c.case_id
left join court k on k.case_id = c.case_id
left join removals r on r.case_id = c.case_id
