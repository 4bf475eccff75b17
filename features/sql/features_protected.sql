-- Protected attributes for the fairness audit, never model inputs: citizenship region (from the
-- nationality codes the systems record), sex (visa records) and age band at the scoring date.
with nationality as (
    select cluster_id, nationality as country, issue_date as event_date, 1 as priority
    from rec_consular_visas
    union all
    select cluster_id, citizenship, refusal_date, 2 from rec_visa_refusals
    union all
    select cluster_id, issuing_country, report_date, 3 from rec_lost_stolen_documents
),
region as (
    select
        c.case_id, g.region,
        row_number() over (
            partition by c.case_id order by n.priority, count(*) desc, g.region
        ) as rn
    from features_cases c
    join nationality n on n.cluster_id = c.cluster_id and n.event_date <= c.scoring_date
    join country_regions g on g.country = upper(trim(n.country))
    group by c.case_id, g.region, n.priority
),
sex as (
    select
        c.case_id, v.sex,
        row_number() over (partition by c.case_id order by count(*) desc, v.sex) as rn
    from features_cases c
    join rec_consular_visas v on v.cluster_id = c.cluster_id and v.issue_date <= c.scoring_date
    where v.sex in ('M', 'F')
    group by c.case_id, v.sex
)
select
    c.case_id,
    coalesce(r.region, 'unknown') as citizenship_region,
    coalesce(s.sex, 'unknown') as sex,
    -- Whole years lived (a year-boundary count would age everyone at New Year).
    case
        when c.birth_date is null then 'unknown'
        when date_diff('day', c.birth_date, c.scoring_date) / 365.25 < 25 then '18-24'
        when date_diff('day', c.birth_date, c.scoring_date) / 365.25 < 35 then '25-34'
        when date_diff('day', c.birth_date, c.scoring_date) / 365.25 < 50 then '35-49'
        else '50+'
    end as age_band
from features_cases c
left join region r on r.case_id = c.case_id and r.rn = 1
left join sex s on s.case_id = c.case_id and s.rn = 1
