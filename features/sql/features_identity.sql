-- Identity and documents: aliases on the same biometric id or in police records, passports,
-- and lost or stolen reports. An alias record shows a date of birth that is neither the case's
-- nor its day/month swap (a common clerical fault); every system feeding encounter or
-- criminal_event counts.
with case_dob as (
    select
        case_id, cluster_id, scoring_date, birth_date,
        case when day(birth_date) <= 12
             then make_date(year(birth_date), day(birth_date), month(birth_date)) end
            as birth_swapped
    from features_cases
),
identities as (
    select cluster_id, 'biometric_enrollments' as system, enroll_date as event_date,
           birth_date as dob
    from rec_biometric_enrollments
    union all
    select cluster_id, system, event_date, birth_date from ev_encounter
    union all
    select cluster_id, system, event_date, birth_date from ev_criminal_event
),
aliases as (
    select
        d.case_id,
        sum(case when i.system = 'biometric_enrollments' then 1 else 0 end) as alias_enrollments,
        count(*) as alias_records,
        count(distinct i.dob) as alias_identities
    from case_dob d
    join identities i on i.cluster_id = d.cluster_id and i.event_date <= d.scoring_date
    where i.dob is not null and d.birth_date is not null
      and i.dob <> d.birth_date and i.dob <> coalesce(d.birth_swapped, d.birth_date)
    group by d.case_id
),
travel_docs as (
    select cluster_id, upper(trim(doc_number)) as doc, arrival_date as used_date
    from rec_arrival_manifests
    union all
    select cluster_id, upper(trim(passport_number)), admit_date from rec_admissions
    union all
    select cluster_id, upper(trim(passport)), departure_date from rec_departure_manifests
),
reported_uses as (
    -- Travel on documents that were reported lost or stolen (the report table is small: join it
    -- first), one row per report and use.
    select t.cluster_id, r.record_id as report_id, r.report_date, t.used_date
    from rec_lost_stolen_documents r
    join travel_docs t on t.doc = upper(trim(r.doc_number))
),
report_cases as (
    select c.case_id, u.report_id, u.report_date, max(u.used_date) as last_used
    from features_cases c
    join reported_uses u
      on u.cluster_id = c.cluster_id and u.used_date <= c.scoring_date
     and u.report_date <= c.scoring_date
    group by c.case_id, u.report_id, u.report_date
),
reports as (
    select
        case_id,
        count(*) as doc_reports,
        -- Travelling on a passport after it was reported lost or stolen: document misuse.
        sum(case when last_used > report_date then 1 else 0 end) as doc_used_after_report,
        -- A report followed only by travel on another passport: the benign renewal pattern.
        sum(case when last_used <= report_date then 1 else 0 end) as doc_reported_then_replaced
    from report_cases
    group by case_id
),
passports as (
    select c.case_id, count(distinct t.doc) as passports_used
    from features_cases c
    join travel_docs t on t.cluster_id = c.cluster_id and t.used_date <= c.scoring_date
    group by c.case_id
),
visas as (
    select c.case_id, count(*) as visas_issued
    from features_cases c
    join rec_consular_visas v on v.cluster_id = c.cluster_id and v.issue_date <= c.scoring_date
    group by c.case_id
),
admissions as (
    select c.case_id, count(*) as prior_admissions
    from features_cases c
    join rec_admissions a on a.cluster_id = c.cluster_id and a.admit_date < c.admit_date
    group by c.case_id
)
select
    c.case_id, a.alias_enrollments, a.alias_records, a.alias_identities,
    r.doc_reports, r.doc_used_after_report, r.doc_reported_then_replaced,
    p.passports_used, v.visas_issued, m.prior_admissions
from features_cases c
left join aliases a on a.case_id = c.case_id
left join reports r on r.case_id = c.case_id
left join passports p on p.case_id = c.case_id
left join visas v on v.case_id = c.case_id
left join admissions m on m.case_id = c.case_id
