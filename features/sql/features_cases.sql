-- One row per case with its anchors: the open backlog (scored at the snapshot date) and the
-- historical leads of the prior_leads system (scored at their investigation date, else their
-- closing date). A case's admission is the latest admissions row with the lead's I-94 number
-- dated on or before the lead; its person is that record's cluster (falling back to the lead's
-- own linked record, or, for an open case whose admission row was quarantined, to the latest
-- arrival on the lead's passport).
with leads as (
    select
        b.case_id, true as is_open, b.lead_date, p.snapshot_date as scoring_date,
        trim(b.i94_number) as i94_number, upper(trim(b.passport_number)) as passport_number,
        cast(null as varchar) as own_lead_record_id, null as lead_cluster_id,
        b.birth_date as lead_birth_date,
        cast(null as boolean) as investigated, cast(null as boolean) as concern_confirmed,
        cast(null as varchar) as selection
    from backlog b
    cross join run_params p
    union all
    select
        l.lead_id as case_id, false as is_open, l.lead_date,
        coalesce(l.investigation_date, l.closed_date) as scoring_date,
        trim(l.i94_number) as i94_number, cast(null as varchar) as passport_number,
        l.record_id as own_lead_record_id, l.cluster_id as lead_cluster_id, l.birth_date as lead_birth_date,
        l.disposition like 'investigated%' as investigated,
        case when l.disposition like 'investigated%'
             then l.disposition = 'investigated_concern' end as concern_confirmed,
        case when l.disposition like 'investigated%' then l.selection end as selection
    from rec_prior_leads l
),
admission as (
    select
        l.case_id, a.record_id, a.cluster_id, a.admit_date, a.admit_class, a.admit_until,
        a.birth_date,
        row_number() over (
            partition by l.case_id order by a.admit_date desc, a.record_id
        ) as rn
    from leads l
    join rec_admissions a on trim(a.i94_number) = l.i94_number and a.admit_date <= l.lead_date
),
arrival_fallback as (
    select
        l.case_id, a.cluster_id, a.arrival_date,
        row_number() over (partition by l.case_id order by a.arrival_date desc, a.record_id) as rn
    from leads l
    join rec_arrival_manifests a
      on upper(trim(a.doc_number)) = l.passport_number and a.arrival_date <= l.lead_date
)
select
    l.case_id, l.is_open, l.lead_date, l.scoring_date, l.i94_number, l.own_lead_record_id,
    l.investigated, l.concern_confirmed, l.selection,
    a.record_id as admission_record_id,
    coalesce(a.admit_date, f.arrival_date) as admit_date,
    a.admit_class, a.admit_until,
    coalesce(a.birth_date, l.lead_birth_date) as birth_date,
    coalesce(a.cluster_id, l.lead_cluster_id, f.cluster_id) as cluster_id
from leads l
left join admission a on a.case_id = l.case_id and a.rn = 1
left join arrival_fallback f on f.case_id = l.case_id and f.rn = 1 and a.record_id is null
