-- Every record that bears on a case's status, one row per (case, record): where the person went
-- (kind 'departure': a recorded exit; 'reentry': a later arrival, which implies an exit), whether
-- they hold lawful status ('lawful') and whether they were seen in the country ('activity').
-- Only records dated after the case's admission and on or before its scoring date count.
select c.case_id, 'departure' as kind, 'departure_manifests' as system, r.record_id,
       r.departure_date as event_date, 'departed by air on flight ' || r.flight as shows
from features_cases c
join rec_departure_manifests r on r.cluster_id = c.cluster_id
where r.departure_date > c.admit_date and r.departure_date <= c.scoring_date
union all
select c.case_id, 'departure', 'partner_entries', r.record_id, r.entry_date,
       'entered the neighbouring country (' || r.partner_country || ')'
from features_cases c
join rec_partner_entries r on r.cluster_id = c.cluster_id
where r.entry_date > c.admit_date and r.entry_date <= c.scoring_date
union all
select c.case_id, 'departure', 'biometric_exits', r.record_id, r.exit_date,
       'biometric exit recorded at ' || r.port
from features_cases c
join rec_biometric_exits r on r.cluster_id = c.cluster_id
where r.exit_date > c.admit_date and r.exit_date <= c.scoring_date
union all
select c.case_id, 'departure', 'land_exits', r.record_id, r.exit_date,
       'land exit recorded at ' || r.port
from features_cases c
join rec_land_exits r on r.cluster_id = c.cluster_id
where r.exit_date > c.admit_date and r.exit_date <= c.scoring_date
union all
select c.case_id, 'reentry', 'arrival_manifests', r.record_id, r.arrival_date,
       'arrived again (so had left) on carrier ' || r.carrier
from features_cases c
join rec_arrival_manifests r on r.cluster_id = c.cluster_id
where r.arrival_date > c.admit_date and r.arrival_date <= c.scoring_date
union all
-- Lawful status: an extension (I-539) or change of status (I-129) filed for this stay before the
-- admit-until date and not denied by the scoring date. Late filings confer nothing; I-765 work
-- permits filed with asylum claims are not status.
select c.case_id, 'lawful', 'benefit_applications', r.record_id, r.filed_date,
       r.form_type || ' filed before admit-until, '
       || coalesce(d.decision || ' ' || cast(d.decision_date as varchar), 'pending')
from features_cases c
join rec_benefit_applications r on r.cluster_id = c.cluster_id
left join rec_benefit_decisions d
  on trim(d.receipt) = trim(r.receipt_number) and d.decision_date <= c.scoring_date
where r.form_type in ('I-539', 'I-129')
  and r.filed_date <= c.admit_until and r.filed_date <= c.scoring_date
  and r.filed_date >= c.admit_date - interval 90 day
  and (d.decision is null or d.decision <> 'denied')
union all
select c.case_id, 'lawful', 'student_records', r.record_id, r.event_date,
       'active student, programme ends ' || cast(r.program_end_date as varchar)
from features_cases c
join rec_student_records r on r.cluster_id = c.cluster_id
where r.event_type = 'active' and r.event_date <= c.scoring_date
  and r.program_end_date > c.scoring_date
union all
-- In-country activity: a person was here on these dates (from every system that feeds the
-- event kind: ev_<kind>).
select c.case_id, 'activity', r.system, r.record_id, r.event_date,
       'employment eligibility check (' || r.result || ')'
from features_cases c
join ev_employment_check r on r.cluster_id = c.cluster_id
where r.event_date > c.admit_date and r.event_date <= c.scoring_date
union all
select c.case_id, 'activity', r.system, r.record_id, r.event_date,
       'change of address filed (' || r.state || ')'
from features_cases c
join ev_address_change r on r.cluster_id = c.cluster_id
where r.event_date > c.admit_date and r.event_date <= c.scoring_date
union all
select c.case_id, 'activity', r.system, r.record_id, r.event_date,
       r.encounter_type || ' encounter' || case when r.arrested then ', arrested' else '' end
from features_cases c
join ev_encounter r on r.cluster_id = c.cluster_id
where r.event_date > c.admit_date and r.event_date <= c.scoring_date
union all
select c.case_id, 'activity', r.system, r.record_id, r.event_date,
       r.offense_category || ' ' || r.event_type
from features_cases c
join ev_criminal_event r on r.cluster_id = c.cluster_id
where r.event_date > c.admit_date and r.event_date <= c.scoring_date
union all
select c.case_id, 'activity', r.system, r.record_id, r.event_date,
       'booked into detention'
from features_cases c
join ev_detention r on r.cluster_id = c.cluster_id
where r.event_date > c.admit_date and r.event_date <= c.scoring_date
union all
select c.case_id, 'activity', 'benefit_applications', r.record_id, r.filed_date,
       r.form_type || ' filed'
from features_cases c
join rec_benefit_applications r on r.cluster_id = c.cluster_id
where r.filed_date > c.admit_date and r.filed_date <= c.scoring_date
union all
select c.case_id, 'activity', 'asylum_filings', r.record_id, r.filed_date,
       'asylum claim filed (' || r.case_status || ')'
from features_cases c
join rec_asylum_filings r on r.cluster_id = c.cluster_id
where r.filed_date > c.admit_date and r.filed_date <= c.scoring_date
union all
-- A hearing ending in an in-absentia order shows the person did not appear: not presence.
select c.case_id, 'activity', r.system, r.record_id, r.event_date,
       'immigration court hearing (' || r.order_type || ')'
from features_cases c
join ev_court_hearing r on r.cluster_id = c.cluster_id
where r.event_date > c.admit_date and r.event_date <= c.scoring_date
  and r.order_type <> 'removal_in_absentia'
