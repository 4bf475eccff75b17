-- Earlier leads of the same person and public tips. A historical case's own prior_leads row is
-- its label: it never feeds its own features; only other leads closed by the scoring date do.
with leads as (
    select
        c.case_id, count(*) as prior_leads,
        sum(case when r.disposition like 'investigated%' then 1 else 0 end)
            as prior_leads_investigated,
        sum(case when r.disposition = 'investigated_concern' then 1 else 0 end)
            as prior_leads_concern,
        sum(case when r.disposition in ('investigated_departed', 'closed_departed')
                 then 1 else 0 end) as prior_leads_departed
    from features_cases c
    join rec_prior_leads r
      on r.cluster_id = c.cluster_id and r.closed_date <= c.scoring_date
     and r.lead_id <> c.case_id
    group by c.case_id
),
tips as (
    select
        c.case_id, count(*) as tips,
        sum(case when r.credibility = 'high' then 1 else 0 end) as tips_high,
        sum(case when r.credibility = 'medium' then 1 else 0 end) as tips_medium,
        sum(case when r.tip_category = 'threat' then 1 else 0 end) as tips_threat
    from features_cases c
    join ev_tip r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
employment as (
    select
        c.case_id, count(*) as employment_checks,
        sum(case when r.result = 'tentative_nonconfirmation' then 1 else 0 end)
            as employment_nonconfirmations
    from features_cases c
    join ev_employment_check r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
addresses as (
    select c.case_id, count(*) as address_changes
    from features_cases c
    join ev_address_change r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
)
select
    c.case_id, l.prior_leads, l.prior_leads_investigated, l.prior_leads_concern,
    l.prior_leads_departed, t.tips, t.tips_high, t.tips_medium, t.tips_threat,
    e.employment_checks, e.employment_nonconfirmations, a.address_changes
from features_cases c
left join leads l on l.case_id = c.case_id
left join tips t on t.case_id = c.case_id
left join employment e on e.case_id = c.case_id
left join addresses a on a.case_id = c.case_id
