-- Status evidence as numbers: recorded or implied exits, benefits, student status, presence.
with ev as (
    select
        c.case_id,
        sum(case when e.system = 'departure_manifests' then 1 else 0 end) as departure_records,
        sum(case when e.system = 'partner_entries' then 1 else 0 end) as partner_entries,
        sum(case when e.system = 'biometric_exits' then 1 else 0 end) as biometric_exits,
        sum(case when e.system = 'land_exits' then 1 else 0 end) as land_exits,
        sum(case when e.kind = 'reentry' then 1 else 0 end) as reentries,
        max(case when e.kind in ('departure', 'reentry') then e.event_date end) as last_exit,
        sum(case when e.kind = 'lawful' and e.system = 'student_records' then 1 else 0 end)
            as student_active,
        sum(case when e.kind = 'activity' and e.event_date > c.admit_until then 1 else 0 end)
            as activity_after_until,
        sum(case when e.kind = 'activity' and e.system = 'employment_checks'
                  and e.event_date > c.admit_until then 1 else 0 end) as employment_after_until,
        sum(case when e.kind = 'activity' and e.system = 'address_changes'
                  and e.event_date > c.admit_until then 1 else 0 end) as address_after_until,
        max(case when e.kind = 'activity' then e.event_date end) as last_activity
    from features_cases c
    join status_events e on e.case_id = c.case_id
    group by c.case_id
),
after_exit as (
    select ev.case_id, count(*) as activity_after_exit
    from ev
    join status_events e on e.case_id = ev.case_id
    where e.kind = 'activity' and e.event_date > ev.last_exit
    group by ev.case_id
),
decisions as (
    select trim(receipt) as receipt, decision, decision_date from rec_benefit_decisions
),
benefits as (
    select
        c.case_id,
        sum(case when a.form_type in ('I-539', 'I-129') and a.filed_date <= c.admit_until
                  and d.receipt is null then 1 else 0 end) as benefit_pending,
        sum(case when d.decision = 'approved' then 1 else 0 end) as benefit_approved,
        sum(case when d.decision = 'denied' then 1 else 0 end) as benefit_denied,
        sum(case when a.filed_date > c.admit_until then 1 else 0 end) as late_filings
    from features_cases c
    join rec_benefit_applications a
      on a.cluster_id = c.cluster_id and a.filed_date <= c.scoring_date
    left join decisions d
      on d.receipt = trim(a.receipt_number) and d.decision_date <= c.scoring_date
    group by c.case_id
),
students as (
    select
        c.case_id,
        sum(case when s.event_type in ('terminated', 'completed')
                 then 1 else 0 end) as student_ended
    from features_cases c
    join rec_student_records s on s.cluster_id = c.cluster_id and s.event_date <= c.scoring_date
    group by c.case_id
),
permits as (
    select
        c.case_id,
        sum(case when w.valid_to >= c.scoring_date then 1 else 0 end) as work_permit_valid
    from features_cases c
    join rec_work_authorizations w on w.cluster_id = c.cluster_id and w.valid_from <= c.scoring_date
    group by c.case_id
),
asylum as (
    select c.case_id, count(*) as asylum_claims
    from features_cases c
    join rec_asylum_filings a on a.cluster_id = c.cluster_id and a.filed_date <= c.scoring_date
    group by c.case_id
)
select
    c.case_id,
    ev.departure_records, ev.partner_entries, ev.biometric_exits, ev.land_exits, ev.reentries,
    date_diff('day', ev.last_exit, c.scoring_date) as days_since_exit,
    x.activity_after_exit,
    b.benefit_pending, b.benefit_approved, b.benefit_denied, b.late_filings,
    ev.student_active, s.student_ended, p.work_permit_valid, y.asylum_claims,
    ev.activity_after_until, ev.employment_after_until, ev.address_after_until,
    date_diff('day', ev.last_activity, c.scoring_date) as days_since_activity
from features_cases c
left join ev on ev.case_id = c.case_id
left join after_exit x on x.case_id = c.case_id
left join benefits b on b.case_id = c.case_id
left join students s on s.case_id = c.case_id
left join permits p on p.case_id = c.case_id
left join asylum y on y.case_id = c.case_id
