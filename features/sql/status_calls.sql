-- The status call of each case from its status events, with the evidence as JSON.
-- Order of the rules: a recorded exit with no in-country activity after it (carriers file false
-- departures for people who never boarded: later activity overrides them); then lawful status;
-- then activity after the admit-until date; otherwise undetermined.
with agg as (
    select
        c.case_id, c.admit_until,
        max(case when e.kind in ('departure', 'reentry') then e.event_date end) as last_exit,
        max(case when e.kind = 'activity' then e.event_date end) as last_activity,
        sum(case when e.kind = 'lawful' then 1 else 0 end) as n_lawful,
        sum(case when e.kind = 'activity' and e.event_date > c.admit_until then 1 else 0 end)
            as n_after_until
    from features_cases c
    left join status_events e on e.case_id = c.case_id
    group by c.case_id, c.admit_until
),
calls as (
    select
        case_id, admit_until, last_exit, last_activity,
        case
            when last_exit is not null and (last_activity is null or last_activity <= last_exit)
                then 'likely_departed'
            when n_lawful > 0 then 'likely_lawful'
            when n_after_until > 0 then 'likely_in_country'
            else 'undetermined'
        end as status
    from agg
),
evidence as (
    select
        k.case_id, e.system, e.record_id, e.event_date,
        case when k.status = 'likely_in_country' and e.kind in ('departure', 'reentry')
             then e.shows || ' (contradicted by later activity)' else e.shows end as shows,
        row_number() over (
            partition by k.case_id order by e.event_date desc, e.system, e.record_id, e.kind, e.shows
        ) as rn
    from calls k
    join status_events e on e.case_id = k.case_id
    where (k.status = 'likely_departed' and e.kind in ('departure', 'reentry'))
       or (k.status = 'likely_lawful' and e.kind = 'lawful')
       or (k.status = 'likely_in_country'
           and (e.kind in ('departure', 'reentry')
                or (e.kind = 'activity' and e.event_date > k.admit_until)))
),
packed as (
    select
        case_id,
        to_json(list(struct_pack(
            system := system, record_id := record_id,
            date := cast(event_date as varchar), shows := shows
        ) order by rn)) as evidence  -- ordered: same input, same bytes
    from evidence
    where rn <= 8
    group by case_id
)
select k.case_id, k.status, coalesce(cast(p.evidence as varchar), '[]') as status_evidence
from calls k
left join packed p on p.case_id = k.case_id
