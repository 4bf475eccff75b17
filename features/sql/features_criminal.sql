-- Criminal history shared by police agencies: arrests and convictions, by offence category
-- (every system that feeds criminal_event).
select
    c.case_id,
    sum(case when r.event_type = 'arrest' then 1 else 0 end) as arrests,
    sum(case when r.event_type = 'conviction' then 1 else 0 end) as convictions,
    sum(case when r.event_type = 'arrest' and r.offense_category <> 'traffic' then 1 else 0 end)
        as arrests_non_traffic,
    sum(case when r.event_type = 'conviction' and r.offense_category in ('violent', 'drug')
             then 1 else 0 end) as convictions_violent_drug,
    sum(case when r.offense_category = 'violent' then 1 else 0 end) as violent_offences,
    sum(case when r.offense_category = 'drug' then 1 else 0 end) as drug_offences,
    sum(case when r.offense_category = 'fraud' then 1 else 0 end) as fraud_offences,
    sum(case when r.offense_category = 'property' then 1 else 0 end) as property_offences,
    sum(case when r.offense_category = 'traffic' then 1 else 0 end) as traffic_offences,
    date_diff('day', max(case when r.event_type = 'arrest' then r.event_date end), c.scoring_date)
        as days_since_arrest
from features_cases c
join ev_criminal_event r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
group by c.case_id, c.scoring_date
